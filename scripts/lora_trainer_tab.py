"""LoRA Trainer in Forge: the "LoRA Trainer" tab, its setting, and `ForgeHost`, the Host contract
(lora_trainer/host.py) made of Forge's own APIs. The only module that imports Forge; no logic here.

Forge puts every extension's root on sys.path before it loads the extension's scripts
(modules/scripts.py, load_scripts), so `import lora_trainer` finds our package.
"""

from __future__ import annotations

import gc
import os
from contextlib import closing
from pathlib import Path

from modules import call_queue, script_callbacks, scripts, sd_models, shared, shared_items
from modules.paths_internal import data_path, script_path

from lora_trainer.host import CHECKPOINT_SUFFIXES, FORGE_CONFIG_SUBDIR, python_module_command
from lora_trainer.review.spec import RenderError, RenderJob, RenderOptions, RenderSettings
from lora_trainer.review.xyz_axis import AXIS_LABEL, apply_lora_epoch, lora_epoch_choices, missing_names
from lora_trainer.runs.publish import lora_card, project_subfolder, publish_lora, same_file, write_preview
from lora_trainer.ui import build_ui

WORKSPACE_OPTION = "lora_trainer_workspace"


class ForgeHost:
    name = "Forge"

    def workspace(self) -> Path:
        """--lora-trainer-dir, else the setting, else <webui data folder>/lora_trainer_workspace."""
        chosen = shared.cmd_opts.lora_trainer_dir or shared.opts.data.get(WORKSPACE_OPTION)
        return Path(chosen or os.path.join(data_path, "lora_trainer_workspace")).expanduser()

    def checkpoints(self) -> list[Path]:
        shared_items.refresh_checkpoints()  # what Forge's own refresh button does
        files = {Path(info.filename) for info in sd_models.checkpoints_list.values()}
        return sorted((f for f in files if f.suffix.lower() in CHECKPOINT_SUFFIXES), key=lambda p: p.name.lower())

    def sdxl_config_dir(self) -> Path | None:
        folder = Path(script_path) / FORGE_CONFIG_SUBDIR
        return folder if folder.is_dir() else None

    def hub_cache(self) -> Path | None:
        """$HF_HUB_CACHE when set, else Forge's models/diffusers: Forge points HF_HOME/HF_HUB_CACHE there
        at start-up, but huggingface-hub may have read its constants before, so it is passed explicitly."""
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"])
        from modules_forge.shared import diffusers_dir

        return Path(diffusers_dir)

    def rembg_models(self) -> Path | None:
        """$U2NET_HOME when set, else <Forge models folder>/u2net (the WebUI's rembg extension's folder),
        not a hidden ~/.u2net outside Forge."""
        if os.environ.get("U2NET_HOME"):
            return Path(os.environ["U2NET_HOME"])
        from modules.paths_internal import models_path

        return Path(models_path) / "u2net"

    def free_memory(self) -> None:
        from backend import memory_management

        with call_queue.queue_lock:  # waits for a generation in progress; Forge reloads lazily
            memory_management.unload_all_models()
            gc.collect()
            memory_management.soft_empty_cache(force=True)

    def publish_lora(self, lora_file: Path, project: str) -> str:
        published = publish_lora(lora_file, shared.cmd_opts.lora_dir, project_subfolder(project),
                                 card=lora_card(lora_file))
        networks = _forge_lora_extension()
        if networks is not None:
            # Refresh just this name: a full refresh empties the list first, and a generation running
            # meanwhile would find its LoRAs missing.
            networks.update_available_networks_by_names([published.stem])
            entry = networks.available_networks.get(published.stem)
            if entry is None or not os.path.samefile(entry.filename, published):
                raise RuntimeError(f"Forge does not list {published} as {published.stem!r} after a refresh")
        return published.stem

    def trainer_command(self) -> list[str]:
        return python_module_command()  # Forge's own Python (its venv)

    def render_memory(self) -> tuple[int | None, str]:
        from backend import memory_management

        device = memory_management.get_torch_device()
        return int(memory_management.get_free_memory(device)), str(device)

    def publish_preview(self, lora_file: Path, project: str, image: Path) -> Path:
        """`<stem>.preview.png` beside the published LoRA: the picture of its txt2img card."""
        published = publish_lora(lora_file, shared.cmd_opts.lora_dir, project_subfolder(project),
                                 card=lora_card(lora_file))
        return write_preview(published, image)

    def render_options(self) -> RenderOptions:
        """Forge's samplers and schedule types, and what its txt2img starts with for SDXL (the "xl"
        UI preset's options; the steps of its Sampler script's slider)."""
        from modules import sd_samplers, sd_schedulers

        o = shared.opts
        sampler_script = next((s for s in scripts.scripts_txt2img.scripts if s.title() == "Sampler"), None)
        steps = getattr(getattr(sampler_script, "steps", None), "value", 20)
        defaults = RenderSettings(steps=int(steps), cfg_scale=float(getattr(o, "xl_t2i_cfg", 5)),
                                  sampler=getattr(o, "xl_t2i_sampler", "Euler a"),
                                  scheduler=getattr(o, "xl_t2i_scheduler", "Automatic"),
                                  width=int(getattr(o, "xl_t2i_width", 896)), height=int(getattr(o, "xl_t2i_height", 1152)))
        return RenderOptions(tuple(s.name for s in sd_samplers.visible_samplers()),
                             tuple(s.label for s in sd_schedulers.schedulers), defaults, webui_size=True)

    def adetailer_models(self) -> list[str]:
        return _adetailer_models()

    def path_roots(self) -> list[Path] | None:
        """With --listen or --share (other computers reach the page): the workspace, Forge's models
        folder and its LoRA and checkpoint folders."""
        opts = shared.cmd_opts
        if not (getattr(opts, "listen", False) or getattr(opts, "share", False)):
            return None
        from modules.paths_internal import models_path

        folders = [self.workspace(), Path(models_path), Path(opts.lora_dir)]
        folders += [Path(opts.ckpt_dir)] if getattr(opts, "ckpt_dir", None) else []
        return folders

    def bind_txt2img_paste(self, button, parameters) -> bool:
        """Forge's own paste-parameters mechanism (modules/infotext_utils.py): at the end of building
        the UI it wires every registered button to parse the infotext into txt2img's fields and
        switch to the txt2img tab."""
        from modules import infotext_utils

        infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
            paste_button=button, tabname="txt2img", source_text_component=parameters))
        return True

    def render(self, job: RenderJob):
        """One image through Forge's own txt2img processing (as its API does), the LoRA in the prompt.
        Forge renders without a LoRA it cannot find or load and still succeeds: both are checked."""
        from modules.processing import StableDiffusionProcessingTxt2Img, process_images

        networks = _forge_lora_extension() if job.lora else None
        if job.lora:
            _check_listed(networks, job.lora.name, job.lora.path)
        s = job.settings
        checkpoint = _checkpoint_title(s.checkpoint) if s.checkpoint else None
        with call_queue.queue_lock, closing(StableDiffusionProcessingTxt2Img(
                sd_model=shared.sd_model, prompt=job.webui_prompt, negative_prompt=s.negative_prompt,
                seed=job.seed, steps=s.steps, cfg_scale=s.cfg_scale, width=s.width, height=s.height,
                sampler_name=s.sampler, scheduler=s.scheduler, do_not_save_samples=True, do_not_save_grid=True,
                override_settings={"sd_model_checkpoint": checkpoint} if checkpoint else {})) as p:
            if s.adetailer_model:
                _with_adetailer(p, s.adetailer_model)
            shared.state.begin(job="lora_trainer_review")
            try:
                processed = process_images(p)
            finally:
                shared.state.end()
        if job.lora and not any(getattr(n, "mentioned_name", n.name) == job.lora.name
                                for n in networks.loaded_networks):
            raise RenderError(f"Forge did not load the LoRA {job.lora.name!r} ({job.lora.path}); see its console")
        if not processed.images:
            raise RenderError(f"Forge returned no image for {job.webui_prompt!r} (seed {job.seed})")
        return processed.images[0]


def _forge_lora_extension():
    """Forge's built-in Lora extension (extensions-builtin/sd_forge_lora) owns the top-level module
    `networks`; None when it is disabled."""
    try:
        import networks
    except ImportError:
        return None
    return networks if hasattr(networks, "update_available_networks_by_names") else None


def _adetailer_script():
    """The ADetailer extension's script among txt2img's always-on scripts, or None."""
    return next((script for script in scripts.scripts_txt2img.alwayson_scripts
                 if script.title() == "ADetailer"), None)


def _adetailer_models() -> list[str]:
    """The models ADetailer lists (its script module's `model_mapping`); [] without ADetailer."""
    adetailer = _adetailer_script()
    if adetailer is None:
        return []
    module = next((d.module for d in scripts.scripts_data if d.script_class is type(adetailer)), None)
    return list(getattr(module, "model_mapping", {}))


def _with_adetailer(p, model: str) -> None:
    """Run txt2img's always-on scripts on `p` as its tab would (each with its UI's values: ADetailer's
    face pass happens in its postprocess), ADetailer switched on with `model`, as the WebUI's API does
    for `alwayson_scripts`."""
    adetailer = _adetailer_script()
    if adetailer is None:
        raise RenderError("ADetailer is not installed in this Forge: render without it")
    models = _adetailer_models()
    if model not in models:
        raise RenderError(f"ADetailer has no model {model!r}: choose one of {', '.join(models)}")
    runner = scripts.scripts_txt2img
    args = [getattr(component, "value", None) for component in runner.inputs]
    args[0] = 0  # no selectable script (X/Y/Z plot and the like)
    slot = args[adetailer.args_from:adetailer.args_to]
    # ADetailer's arguments: enabled, skip img2img, then one dict per detection tab (others off).
    args[adetailer.args_from:adetailer.args_to] = [True, False, {"ad_model": model}] + [None] * max(0, len(slot) - 3)
    # As the API does, and first: setting both scripts and args runs the scripts' setup at once, and
    # the seed's and sampler's UI-only setup would put the UI's seed and steps over the job's.
    p.is_api = True
    p.scripts, p.script_args = runner, args


def _checkpoint_title(checkpoint: str) -> str:
    """Forge's title for a base model given as its file or its title; RenderError when Forge does not
    list it (Forge would quietly render with the model it has loaded instead)."""
    shared_items.refresh_checkpoints()
    for info in sd_models.checkpoints_list.values():
        if checkpoint in (info.title, info.name, info.model_name) or \
                (Path(checkpoint).is_file() and same_file(Path(info.filename), Path(checkpoint))):
            return info.title
    raise RenderError(f"Forge does not list the base model {checkpoint} among its checkpoints "
                      "(models/Stable-diffusion, --ckpt-dir): put it there, or choose one Forge lists")


def _check_listed(networks, name: str, path: Path) -> None:
    if networks is None:
        raise RenderError("Forge's built-in Lora extension is disabled: enable it to render LoRA cells")
    networks.update_available_networks_by_names([name])
    entry = networks.available_networks.get(name)
    if entry is None or not same_file(Path(entry.filename), Path(path)):
        raise RenderError(f"Forge does not list the LoRA {name!r} as {path} (it would render without it); "
                          "it is published when saved: check models/Lora/lora_trainer")


HOST = ForgeHost()


def on_ui_settings():
    shared.opts.add_option(WORKSPACE_OPTION, shared.OptionInfo(
        "", "Workspace folder for training projects (empty: lora_trainer_workspace in the WebUI folder; "
        "the --lora-trainer-dir flag overrides this)", section=("lora_trainer", "LoRA Trainer"),
        category_id="training",
    ).needs_reload_ui())


def add_lora_epoch_axis():
    """A "LoRA epoch" axis in Forge's own X/Y/Z plot (scripts/xyz_grid.py has no LoRA axis)."""
    xyz = next((data.module for data in scripts.scripts_data if Path(data.path).name == "xyz_grid.py"), None)
    if xyz is None or any(option.label == AXIS_LABEL for option in xyz.axis_options):
        return

    def confirm(_p, values):
        networks = _forge_lora_extension()
        if networks is None:
            raise RuntimeError("LoRA epoch axis: Forge's built-in Lora extension is disabled")
        networks.update_available_networks_by_names(list(values))
        missing = missing_names(values, networks.available_networks)
        if missing:  # Forge would render those cells without the LoRA and say nothing
            raise RuntimeError(f"LoRA epoch axis: Forge does not list {', '.join(missing)}")

    def apply(p, value, values):
        p.prompt = apply_lora_epoch(p.prompt, value, values)

    xyz.axis_options.append(xyz.AxisOption(AXIS_LABEL, str, apply, format_value=xyz.format_value, confirm=confirm,
                                           choices=lambda: lora_epoch_choices(shared.cmd_opts.lora_dir)))


script_callbacks.on_before_ui(add_lora_epoch_axis)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_ui_tabs(lambda: [(build_ui(HOST), "LoRA Trainer", "lora_trainer")])


def add_http_routes(_demo, app):
    """The /lora-trainer/ routes (lora_trainer/runs/api.py) on Forge's app, protected as its own API:
    --api-auth's logins on every route; without them open, but start and stop only when Forge listens
    on this computer alone (no --listen, --share or --ngrok, a loopback --server-name)."""
    from lora_trainer.runs.api import add_routes, is_loopback, parse_credentials
    from lora_trainer.ui.app import runner_for

    opts = shared.cmd_opts
    server_name = opts.server_name or os.environ.get("GRADIO_SERVER_NAME")
    local = not (opts.listen or opts.share or getattr(opts, "ngrok", None)) and \
        (not server_name or is_loopback(server_name))
    add_routes(app, lambda: runner_for(HOST), HOST, parse_credentials(opts.api_auth), allow_open_writes=local)


script_callbacks.on_app_started(add_http_routes)
