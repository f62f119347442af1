"""HTTP routes under `/lora-trainer/` for scripted use: list projects, follow, start and stop a run,
list a project's LoRA files. FastAPI only: Forge's adapter (scripts/lora_trainer_tab.py, on its app
when it starts) and the standalone app (`python -m lora_trainer ui`) both call `add_routes`.

```
GET  /lora-trainer/projects                  [{name, images, has_settings}]
GET  /lora-trainer/projects/{name}/status    the project's RunStatus (what its Train tab shows)
POST /lora-trainer/projects/{name}/start     {"resume": false, "resume_changed": false} (body optional)
POST /lora-trainer/projects/{name}/stop
GET  /lora-trainer/projects/{name}/loras     [{name, prompt, path, kind, epoch, step, output_name}]
```
Start takes the project's saved settings as the Train tab's Start would after opening the project
(`start_config`) and goes through the same runner (`runner_provider`: one per workspace), so the tab
and the routes see one training. Refusals: 400 (a bad project name, missing or wrong settings), 404
(no such project), 409 (the runner's: a run is going, the output name has files, nothing to resume).

Protected as Forge's own API (modules/api/api.py): with `credentials` every route needs HTTP Basic
with one of them (401 and `WWW-Authenticate: Basic` otherwise); without, the routes are open, but
start and stop only on a server that listens on this computer alone (`allow_open_writes`), and only
for a request addressed to a loopback name and sent by no other web site (a page in the user's browser
could otherwise post to 127.0.0.1).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.fsutil import OutputError
from lora_trainer.host import Host
from lora_trainer.project import Project, list_projects, open_project
from lora_trainer.runs.follow import RunStatus, SavedLora
from lora_trainer.runs.runner import (
    RunnerError,
    TrainRunner,
    config_for_project,
    load_project_settings,
)

__all__ = ["FORGE_AUTH_HINT", "PREFIX", "add_routes", "is_loopback", "parse_credentials", "start_config",
           "status_json"]

PREFIX = "/lora-trainer"
FORGE_AUTH_HINT = "start Forge with --api-auth to allow it"
# A config written without an output name (`python -m lora_trainer config ...`) has kohya's default.
_BAD_INPUT = (ConfigError, OutputError, ValueError)


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a name or address, a Host header's host part) is this computer only:
    127.0.0.0/8, ::1 or localhost. "" and 0.0.0.0 are every address: not loopback."""
    name = (host or "").strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_credentials(text: str | None) -> dict[str, str] | None:
    """Forge's `--api-auth "user:password,user2:password2"` -> {user: password}; None when not given.
    Split at each login's first ':' (Forge itself refuses a password with one)."""
    if not text:
        return None
    credentials = {}
    for login in text.split(","):
        user, colon, password = login.partition(":")
        if not colon:
            raise ValueError(f"--api-auth: {login!r} is not USER:PASSWORD")
        credentials[user] = password
    return credentials or None


# --- what the routes answer --------------------------------------------------------------------------

def _lora_json(lora: SavedLora) -> dict[str, Any]:
    return {"name": lora.name, "prompt": lora.prompt, "path": str(lora.path), "kind": lora.kind,
            "epoch": lora.epoch, "step": lora.step, "output_name": lora.output_name}


def status_json(status: RunStatus) -> dict[str, Any]:
    """A RunStatus as JSON (the loss curve left out: it grows with the run; TensorBoard has it)."""
    return {"state": status.state, "active": status.active, "message": status.message,
            "project": status.project, "output_name": status.output_name,
            "epoch": status.epoch, "epochs": status.epochs, "step": status.step, "total_steps": status.total_steps,
            "loss": status.loss, "average_loss": status.average_loss, "learning_rates": dict(status.learning_rates),
            "elapsed_s": status.elapsed_s, "eta_s": status.eta_s, "error": status.error,
            "warnings": list(status.warnings), "publish_problems": list(status.publish_problems),
            "elsewhere": status.elsewhere, "saved": [_lora_json(lora) for lora in status.saved],
            "log_file": str(status.log_file) if status.log_file else None,
            "run_dir": str(status.run_dir) if status.run_dir else None, "log_tail": status.log_tail}


def _project_json(workspace: Path, name: str) -> dict[str, Any] | None:
    try:
        project = open_project(workspace, name)
    except ValueError:
        return None
    return {"name": project.name, "images": sum(project.training_folders().values()),
            "has_settings": project.config_file.is_file()}


def start_config(runner: TrainRunner, host: Host, project: Project) -> TrainConfig:
    """The config the Train tab's Start launches for `project` right after the project was opened: its
    saved settings, with the output name the tab opens with (the run going on or the stopped run Resume
    continues; else the saved name, the project's for kohya's default 'lora', or its next free
    `_v2`...) and, when they name no base model, the host's first one. ConfigError when the project has
    no (valid) settings or no model."""
    settings = load_project_settings(project)
    model = (settings.get("pretrained_model_name_or_path") or "").strip()
    if not model:
        models = host.checkpoints()
        model = str(models[0]) if models else ""
    output_name = runner.opening_output_name(project, settings.get("output_name"))
    return config_for_project(project, {**settings, "output_name": output_name}, model)


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a malformed Host header ("[x")
        return None


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return None


# --- the routes ----------------------------------------------------------------------------------------

def add_routes(app: FastAPI, runner_provider: Callable[[], TrainRunner], host: Host,
               credentials: dict[str, str] | None, *, allow_open_writes: bool = False,
               auth_hint: str = FORGE_AUTH_HINT) -> None:
    """Register the routes on `app`. `credentials`: {user: password} every route then asks for (HTTP
    Basic), or None for open routes; `allow_open_writes`: without credentials, whether start and stop
    are taken (only when the server listens on this computer alone); `auth_hint`: how to give the
    server credentials, said when a write is refused."""
    logins = [(user.encode(), password.encode()) for user, password in (credentials or {}).items()]

    def check_login(request: Request) -> None:
        """HTTP Basic as Forge's API checks it, the user and password compared as UTF-8 bytes (FastAPI's
        HTTPBasic takes ASCII only)."""
        if not credentials:
            return
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
        except ValueError:
            given = b""
        user, colon, password = given.partition(b":")
        matched = False
        for known_user, known_password in logins:  # each one compared, in constant time
            matched |= secrets.compare_digest(user, known_user) & secrets.compare_digest(password, known_password)
        if not (colon and matched):
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    def check_write(request: Request) -> None:
        if credentials:
            return
        if not allow_open_writes:
            raise HTTPException(403, "starting and stopping a training over HTTP needs credentials on a server "
                                f"other computers reach: {auth_hint}")
        addressed = _hostname("//" + request.headers.get("host", ""))
        if not is_loopback(addressed):
            raise HTTPException(403, f"without credentials, start and stop are taken only when addressed to "
                                f"this computer (localhost or 127.0.0.1), not {addressed!r}: {auth_hint}")
        origin = request.headers.get("origin")
        if origin is not None and _netloc(origin) != request.headers.get("host", "").lower():
            raise HTTPException(403, f"a request from the web page {origin} is refused: {auth_hint}")

    def workspace() -> Path:
        return host.workspace()

    def project_of(name: str) -> Project:
        try:
            project = open_project(workspace(), name)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if not project.img.is_dir():
            raise HTTPException(404, f"no project {name!r} in {workspace()}")
        return project

    router = APIRouter(prefix=PREFIX, tags=["LoRA Trainer"], dependencies=[Depends(check_login)])

    @router.get("/projects")
    def projects() -> list[dict[str, Any]]:
        found = [_project_json(workspace(), name) for name in list_projects(workspace())]
        return [entry for entry in found if entry]

    @router.get("/projects/{name}/status")
    def status(name: str) -> dict[str, Any]:
        return status_json(runner_provider().status(project_of(name)))

    @router.post("/projects/{name}/start", dependencies=[Depends(check_write)])
    def start(name: str, resume: bool = Body(False, embed=True),
              resume_changed: bool = Body(False, embed=True)) -> dict[str, Any]:
        project = project_of(name)
        runner = runner_provider()
        try:
            config = start_config(runner, host, project)
            return status_json(runner.start(project, config, resume=resume, resume_changed=resume_changed))
        except RunnerError as e:
            raise HTTPException(409, str(e)) from None
        except _BAD_INPUT as e:
            raise HTTPException(400, str(e)) from None

    @router.post("/projects/{name}/stop", dependencies=[Depends(check_write)])
    def stop(name: str) -> dict[str, Any]:
        project = project_of(name)
        try:
            return status_json(runner_provider().stop(project))
        except RunnerError as e:
            raise HTTPException(409, str(e)) from None

    @router.get("/projects/{name}/loras")
    def loras(name: str) -> dict[str, Any]:
        saved, problems = runner_provider().project_loras(project_of(name))
        return {"loras": [_lora_json(lora) for lora in saved], "problems": problems}

    app.include_router(router)
