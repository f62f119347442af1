"""The `/lora-trainer/` HTTP routes on a plain FastAPI app over a standalone workspace: projects listed,
a project's status, HTTP Basic when credentials are given (as Forge's --api-auth), start and stop
refused without credentials on a server other computers reach, bad and unknown project names, start
from the saved settings as the Train tab would (a stand-in runner records what it is asked) and the
real runner's refusals."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lora_trainer.config import TrainConfig
from lora_trainer.config.presets import PRESETS, preset_names
from lora_trainer.host import StandaloneHost
from lora_trainer.project import Project
from lora_trainer.runs.api import FORGE_AUTH_HINT, add_routes, is_loopback, parse_credentials
from lora_trainer.runs.follow import RunStatus, SavedLora
from lora_trainer.runs.runner import RunnerError, TrainRunner, config_for_project

LOCAL = "http://127.0.0.1"


class StandInRunner:
    """What the routes call on a TrainRunner, recorded; no process is started."""

    def __init__(self, refuse: str = ""):
        self.refuse = refuse
        self.started: list[tuple[Project, TrainConfig, bool, bool]] = []
        self.stopped: list[Project] = []

    def current_output_name(self, project):
        return None

    opening_output_name = TrainRunner.opening_output_name  # the real rule, over this stand-in's state

    def start(self, project, config, *, resume=False, resume_changed=False):
        if self.refuse:
            raise RunnerError(self.refuse)
        self.started.append((project, config, resume, resume_changed))
        return RunStatus(state="starting", project=project.name, output_name=config.output_name,
                         message="freeing GPU memory")

    def stop(self, project=None):
        self.stopped.append(project)
        return RunStatus(state="stopping", project=project.name, message="stop requested")

    def status(self, project=None):
        return RunStatus(project=project.name)

    def project_loras(self, project, recheck=False):
        lora = SavedLora(path=project.model / "hero-000001.safetensors", name="hero-000001", kind="epoch",
                         epoch=1, step=8, output_name="hero")
        return [lora], ["x.safetensors: could not make it available"]


@pytest.fixture
def host(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "base.safetensors").write_bytes(b"not a model")  # start is checked by a stand-in runner
    return StandaloneHost(tmp_path / "workspace", model_dirs=[models])


@pytest.fixture
def runner(host):
    return TrainRunner(host)


def make_project(host, name: str, images: int = 2, settings: dict | None = None) -> Project:
    project = Project(host.workspace() / name, name).create()
    for i in range(images):
        (project.train_images / f"{i}.png").write_bytes(b"")
        (project.train_images / f"{i}.txt").write_text("hero", encoding="utf-8")
    if settings is not None:
        base = TrainConfig.from_dict(PRESETS[preset_names()[0]]).to_dict()
        config_for_project(project, {**base, **settings}, settings.get("pretrained_model_name_or_path", "")
                           or str(host.checkpoints()[0])).save_json(project.config_file)
    return project


def client(host, runner, credentials=None, allow_open_writes=True, base_url=LOCAL, **kwargs) -> TestClient:
    app = FastAPI()
    add_routes(app, lambda: runner, host, credentials, allow_open_writes=allow_open_writes, **kwargs)
    return TestClient(app, base_url=base_url)


def test_projects_are_listed_with_their_images_and_whether_they_have_settings(host, runner):
    make_project(host, "hero", images=3, settings={"output_name": "hero"})
    make_project(host, "Villain", images=0)
    (host.workspace() / "not_a_project").mkdir()
    answer = client(host, runner).get("/lora-trainer/projects")
    assert answer.status_code == 200
    assert answer.json() == [{"name": "hero", "images": 3, "has_settings": True},
                             {"name": "Villain", "images": 0, "has_settings": False}]


def test_an_idle_projects_status_and_its_loras(host, runner):
    make_project(host, "hero")
    c = client(host, runner)
    status = c.get("/lora-trainer/projects/hero/status")
    assert status.status_code == 200
    body = status.json()
    assert (body["state"], body["active"], body["saved"], body["eta_s"]) == ("idle", False, [], None)
    assert {"message", "epoch", "epochs", "step", "total_steps", "loss", "error", "project"} <= set(body)
    loras = c.get("/lora-trainer/projects/hero/loras")
    assert loras.status_code == 200 and loras.json() == {"loras": [], "problems": []}


def test_the_loras_route_gives_each_file_with_its_prompt_name(host):
    make_project(host, "hero")
    answer = client(host, StandInRunner()).get("/lora-trainer/projects/hero/loras").json()
    assert answer["loras"] == [{"name": "hero-000001", "prompt": "<lora:hero-000001:1>", "kind": "epoch",
                                "path": str(host.workspace() / "hero" / "model" / "hero-000001.safetensors"),
                                "epoch": 1, "step": 8, "output_name": "hero"}]
    assert answer["problems"] == ["x.safetensors: could not make it available"]


def test_a_bad_project_name_is_400_and_an_unknown_one_404(host, runner):
    c = client(host, runner)
    bad = c.get("/lora-trainer/projects/-bad/status")
    assert bad.status_code == 400 and "project name '-bad'" in bad.json()["detail"]
    assert c.post("/lora-trainer/projects/.hidden/start").status_code == 400
    unknown = c.get("/lora-trainer/projects/nobody/status")
    assert unknown.status_code == 404 and "no project 'nobody'" in unknown.json()["detail"]
    assert c.get("/lora-trainer/projects/nobody/loras").status_code == 404
    assert c.post("/lora-trainer/projects/nobody/stop").status_code == 404


ROUTES = [("get", "/lora-trainer/projects"), ("get", "/lora-trainer/projects/hero/status"),
          ("get", "/lora-trainer/projects/hero/loras"), ("post", "/lora-trainer/projects/hero/start"),
          ("post", "/lora-trainer/projects/hero/stop")]


def test_with_credentials_every_route_needs_one_of_them(host):
    make_project(host, "hero", settings={"output_name": "hero"})
    stand_in = StandInRunner()
    c = client(host, stand_in, credentials={"tester": "secret", "other": "pässword"}, allow_open_writes=False,
               base_url="http://192.168.1.5")
    for method, path in ROUTES:
        for auth in (None, ("tester", "wrong"), ("nobody", "secret"), ("tester", "")):
            answer = getattr(c, method)(path, auth=auth)
            assert answer.status_code == 401, (method, path, auth)
            assert answer.headers["WWW-Authenticate"] == "Basic"
        assert getattr(c, method)(path, auth=("tester", "secret")).status_code == 200, (method, path)
    assert c.get("/lora-trainer/projects", auth=("other", "pässword")).status_code == 200
    assert len(stand_in.started) == 1 and len(stand_in.stopped) == 1  # the writes of the right login only


def test_without_credentials_a_network_facing_server_refuses_start_and_stop(host):
    make_project(host, "hero", settings={"output_name": "hero"})
    stand_in = StandInRunner()
    c = client(host, stand_in, allow_open_writes=False)
    assert c.get("/lora-trainer/projects").status_code == 200  # reading stays open, as Forge's API is
    assert c.get("/lora-trainer/projects/hero/status").status_code == 200
    for path in ("/lora-trainer/projects/hero/start", "/lora-trainer/projects/hero/stop"):
        answer = c.post(path)
        assert answer.status_code == 403
        assert answer.json()["detail"].endswith(FORGE_AUTH_HINT)
    assert not stand_in.started and not stand_in.stopped
    standalone = client(host, stand_in, allow_open_writes=False, auth_hint="start it with --auth")
    assert standalone.post("/lora-trainer/projects/hero/stop").json()["detail"].endswith("start it with --auth")


def test_open_writes_on_localhost_take_only_requests_to_localhost_from_no_other_web_site(host):
    make_project(host, "hero", settings={"output_name": "hero"})
    stand_in = StandInRunner()
    c = client(host, stand_in)
    assert c.post("/lora-trainer/projects/hero/stop").status_code == 200
    assert client(host, stand_in, base_url="http://localhost:7860").post(
        "/lora-trainer/projects/hero/stop").status_code == 200
    rebound = client(host, stand_in, base_url="http://evil.example:7860").post("/lora-trainer/projects/hero/stop")
    assert rebound.status_code == 403 and "'evil.example'" in rebound.json()["detail"]  # DNS rebinding
    cross_site = c.post("/lora-trainer/projects/hero/start", headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403 and "https://evil.example" in cross_site.json()["detail"]
    assert c.post("/lora-trainer/projects/hero/stop", headers={"Origin": LOCAL}).status_code == 200
    assert len(stand_in.stopped) == 3 and not stand_in.started


def test_start_takes_the_saved_settings_as_the_train_tabs_start_would(host):
    project = make_project(host, "hero", settings={"output_name": "hero", "max_train_epochs": 3})
    (project.model / "hero.safetensors").write_bytes(b"")  # an earlier run used the saved name
    stand_in = StandInRunner()
    c = client(host, stand_in)
    answer = c.post("/lora-trainer/projects/hero/start")
    assert answer.status_code == 200 and answer.json()["state"] == "starting"
    (started, config, resume, resume_changed), = stand_in.started
    assert started.root == project.root and (resume, resume_changed) == (False, False)
    assert config.output_name == "hero_v2" and config.max_train_epochs == 3  # the tab's next free name
    assert config.pretrained_model_name_or_path == str(host.checkpoints()[0])
    assert config.output_dir == str(project.model.resolve())
    assert c.post("/lora-trainer/projects/hero/start", json={"resume": True}).status_code == 200
    assert stand_in.started[-1][2:] == (True, False)


def test_start_with_no_model_saved_takes_the_hosts_first_one(host):
    project = make_project(host, "hero", settings={"output_name": "hero"})
    saved = TrainConfig.from_json(project.config_file)
    TrainConfig.from_dict({**saved.to_dict(), "pretrained_model_name_or_path": ""}).save_json(project.config_file)
    stand_in = StandInRunner()
    assert client(host, stand_in).post("/lora-trainer/projects/hero/start").status_code == 200
    assert stand_in.started[0][1].pretrained_model_name_or_path == str(host.checkpoints()[0])


def test_start_refusals_carry_the_runners_message(host, runner):
    make_project(host, "hero")  # no saved settings
    c = client(host, runner)
    missing = c.post("/lora-trainer/projects/hero/start")
    assert missing.status_code == 400 and "hero.json" in missing.json()["detail"], missing.json()
    busy = "a training run is already in progress (other: other); stop it or wait until it ends"
    make_project(host, "ready", settings={"output_name": "ready"})
    refused = client(host, StandInRunner(refuse=busy)).post("/lora-trainer/projects/ready/start")
    assert refused.status_code == 409 and refused.json()["detail"] == busy
    nothing = c.post("/lora-trainer/projects/ready/stop")
    assert nothing.status_code == 409 and nothing.json()["detail"] == "no training is running"


def test_start_with_a_saved_model_that_is_gone_is_400_from_the_real_runner(host, runner):
    make_project(host, "hero", settings={"output_name": "hero",
                                         "pretrained_model_name_or_path": str(host.workspace() / "gone.safetensors")})
    answer = client(host, runner).post("/lora-trainer/projects/hero/start")
    assert answer.status_code == 400 and "gone.safetensors" in answer.json()["detail"]


def test_forges_api_auth_value_becomes_credentials():
    assert parse_credentials(None) is None and parse_credentials("") is None
    assert parse_credentials("tester:secret,u2:p:2") == {"tester": "secret", "u2": "p:2"}
    with pytest.raises(ValueError):
        parse_credentials("nocolon")
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback(None)
    assert not is_loopback("192.168.1.5")


def test_a_malformed_host_or_origin_is_refused_not_an_error(host):
    make_project(host, "hero", settings={"output_name": "hero"})
    c = client(host, StandInRunner())
    assert c.post("/lora-trainer/projects/hero/stop", headers={"Host": "[bad"}).status_code == 403
    assert c.post("/lora-trainer/projects/hero/stop", headers={"Origin": "http://[bad"}).status_code == 403
