"""Test-only Forge extension: tests/forge/test_forge.py links it beside ours for the duration of the
test. Its routes call the LoRA Trainer's `ForgeHost` inside the running Forge, so the test checks the
glue with Forge's real modules (workspace, checkpoint list, config folder, trainer command, the hub cache
and rembg's models folder, publish + LoRA list refresh, freeing memory under the queue lock)."""

import base64
import io
import json
from pathlib import Path

from modules import script_callbacks, script_loading


def _host():
    for path, module in script_loading.loaded_scripts.items():
        if Path(path).name == "lora_trainer_tab.py":
            return module.HOST
    raise RuntimeError("the LoRA Trainer's scripts/lora_trainer_tab.py is not loaded")


def _routes(_demo, app):
    @app.get("/lora_trainer_probe/host")
    def host_info():
        from modules.paths_internal import models_path
        from modules_forge.shared import diffusers_dir

        host = _host()
        return {"name": host.name, "workspace": str(host.workspace()),
                "checkpoints": [str(p) for p in host.checkpoints()],
                "sdxl_config_dir": str(host.sdxl_config_dir()), "trainer_command": host.trainer_command(),
                "adetailer_models": host.adetailer_models(),
                "hub_cache": str(host.hub_cache()), "rembg_models": str(host.rembg_models()),
                "diffusers_dir": str(diffusers_dir), "models_path": str(models_path)}

    @app.post("/lora_trainer_probe/publish")
    def publish(body: dict):
        return {"name": _host().publish_lora(Path(body["path"]), body["project"])}

    @app.post("/lora_trainer_probe/render")
    def render(body: dict):
        from lora_trainer.review.spec import LoraRef, RenderError, RenderJob, RenderSettings

        lora = body.get("lora")
        job = RenderJob(body["prompt"], body["seed"], RenderSettings(**body["settings"]),
                        LoraRef(Path(lora["path"]), lora["name"], lora["weight"]) if lora else None)
        try:
            image = _host().render(job)
        except RenderError as e:
            return {"error": str(e)}
        out = io.BytesIO()
        image.save(out, format="PNG")
        return {"image": base64.b64encode(out.getvalue()).decode()}

    @app.post("/lora_trainer_probe/xyz")
    def xyz_axis(body: dict):
        """Our axis in Forge's X/Y/Z plot: its choices, its check and what it does to a prompt."""
        from types import SimpleNamespace

        from modules import scripts

        module = next(d.module for d in scripts.scripts_data if Path(d.path).name == "xyz_grid.py")
        axis = next((o for o in module.axis_options if o.label == "LoRA epoch"), None)
        if axis is None:
            return {"labels": [o.label for o in module.axis_options]}
        try:
            axis.confirm(None, body["values"])
            refused = ""
        except RuntimeError as e:
            refused = str(e)
        p = SimpleNamespace(prompt=body["prompt"])
        axis.apply(p, body["values"][0], body["values"])
        return {"choices": axis.choices(), "refused": refused, "prompt": p.prompt}

    @app.get("/lora_trainer_probe/render_memory")
    def render_memory():
        free, device = _host().render_memory()
        return {"free": free, "device": device}

    @app.post("/lora_trainer_probe/preview")
    def preview(body: dict):
        return {"written": str(_host().publish_preview(Path(body["path"]), body["project"], Path(body["image"])))}

    @app.post("/lora_trainer_probe/review_grid")
    def review_grid(body: dict):
        """The Review panel's own path in Forge: ReviewPanel.start_render with our ForgeHost (publish,
        columns, the grid job in its thread, ForgeHost.render per cell), until the grid is saved."""
        import time

        from lora_trainer.review.scores import scores_json_text
        from lora_trainer.ui.app import runner_for
        from lora_trainer.ui.review_panel import ReviewPanel

        host = _host()
        panel = ReviewPanel(host, runner_for(host))
        s = body["settings"]
        message = panel.start_render(body["project"], body["run"], body["epochs"], True, body["prompt"], "",
                                     "1234", "", s["steps"], s["cfg_scale"], s["sampler"], s["width"], s["height"],
                                     s.get("checkpoint", ""), score=bool(body.get("score")),
                                     tagger=body.get("tagger") or "tiny-demo")
        job = panel._job
        if job is None:
            return {"message": message}
        deadline = time.monotonic() + 900
        while not job.finished and time.monotonic() < deadline:
            time.sleep(0.2)
        cells = {}
        for (seed, row, column), cell in job.cells.items():
            if isinstance(cell, str):
                cells[f"{seed}_{row}_{column}"] = {"error": cell}
            else:
                out = io.BytesIO()
                cell.save(out, format="PNG")
                cells[f"{seed}_{row}_{column}"] = {"image": base64.b64encode(out.getvalue()).decode()}
        return {"message": message, "status": job.status(), "columns": [c.label for c in job.spec.columns],
                "names": [c.lora.name if c.lora else None for c in job.spec.columns], "cells": cells,
                "grid": str(job.saved.grid) if job.saved else None,
                "cell_seconds": job.result.cell_seconds if job.result else [],
                "total_seconds": job.result.total_seconds if job.result else 0.0,
                "cell_files": {f"{k[0]}_{k[1]}_{k[2]}": str(v) for k, v in job.saved.cells.items()} if job.saved else {},
                "scores": json.loads(scores_json_text(job.scores)) if job.scores else None,
                "score_error": job.score_error, "score_seconds": job.score_seconds,
                "score_wait_seconds": job.score_wait_seconds}

    @app.post("/lora_trainer_probe/free_memory")
    def free_memory():
        from backend import memory_management

        before = len(memory_management.current_loaded_models)
        _host().free_memory()
        return {"loaded_before": before, "loaded_after": len(memory_management.current_loaded_models)}


script_callbacks.on_app_started(_routes)
