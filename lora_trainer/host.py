"""What the package needs from the program it runs in, and the standalone implementation.

Forge implements `Host` in `scripts/lora_trainer_tab.py` with its own APIs (its models folder, its
LoRA list, its VRAM management); `StandaloneHost` is the same contract without a WebUI, for
`python -m lora_trainer ui` and for tests. Nothing outside `ui/` and `scripts/` knows which it has.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # no PIL, torch or diffusers at import
    from PIL.Image import Image

    from lora_trainer.review.spec import RenderJob, RenderOptions

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# Where Forge keeps the diffusers SDXL config folder, relative to its root (single files load offline with it).
FORGE_CONFIG_SUBDIR = Path("backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0")
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the folder that holds `lora_trainer/`


@runtime_checkable
class Host(Protocol):
    name: str  # shown in the UI: "Forge" or "standalone"

    def workspace(self) -> Path:
        """The folder that holds the training projects (one sub-folder each)."""

    def checkpoints(self) -> list[Path]:
        """Model files the user already has, for the base-model list (may be empty)."""

    def sdxl_config_dir(self) -> Path | None:
        """A local diffusers SDXL config folder, so single-file checkpoints load offline."""

    def hub_cache(self) -> Path | None:
        """The Hugging Face hub cache folder taggers are read from and downloaded to, passed explicitly
        (huggingface-hub may have read its HF_HOME before the host set it); None: huggingface-hub's own
        default (HF_HUB_CACHE / HF_HOME)."""

    def rembg_models(self) -> Path | None:
        """The folder rembg's models (u2net.onnx, ...) live in, so the host's models folder holds them
        rather than a hidden folder in home; None: rembg's default (U2NET_HOME, else ~/.u2net)."""

    def free_memory(self) -> None:
        """Release the host's own models from GPU memory before a training process starts."""

    def publish_lora(self, lora_file: Path, project: str) -> str:
        """Make a saved LoRA of `project` (its name) usable by the host; returns the name a prompt
        uses: `<lora:NAME:1>`."""

    def trainer_command(self) -> list[str]:
        """The command that starts `python -m lora_trainer` in a new process with the host's Python."""

    def render(self, job: RenderJob) -> Image:
        """One txt2img image for a review grid cell (the job's prompt, seed, settings and LoRA);
        raises `review.spec.RenderError` saying why when it cannot (e.g. the LoRA is not available)."""

    def render_memory(self) -> tuple[int | None, str]:
        """(bytes free on the device a render would use, that device's name), for the Review's live
        mode; None when it cannot be known."""

    def publish_preview(self, lora_file: Path, project: str, image: Path) -> Path:
        """Make `image` the preview of a saved LoRA of `project` (the picture on its WebUI card);
        returns the preview file written."""

    def render_options(self) -> RenderOptions:
        """The samplers and schedule types `render` takes, and the txt2img settings it starts with."""

    def path_roots(self) -> list[Path] | None:
        """On a server other computers reach: the folders a path typed in the tab must stay inside
        (the workspace and the model folders); None on a local one (any path)."""

    def adetailer_models(self) -> list[str]:
        """ADetailer's detection models where the host has that extension (a render's
        `settings.adetailer_model` takes one); [] without it."""

    def bind_txt2img_paste(self, button: Any, parameters: Any) -> bool:
        """Make `button` (a gradio Button) send the generation parameters in `parameters` (a gradio
        Textbox, the WebUI's infotext) to the host's txt2img form, as the WebUI's own "send to"
        buttons do; False when the host has no txt2img."""


class PathOutsideError(ValueError):
    """A typed path outside the folders a network-facing server allows (the message names them)."""


def confine_path(text: str, roots: list[Path] | None) -> Path:
    """The path a user typed; with `roots` (a server others reach) only one inside them, links
    resolved, checked before anything looks at it (so the answer says nothing about other files)."""
    path = Path(text.strip().strip('"').strip("'")).expanduser()
    if roots is None:
        return path
    resolved = Path(os.path.realpath(path))
    for root in roots:
        if resolved == Path(os.path.realpath(root)) or resolved.is_relative_to(os.path.realpath(root)):
            return path
    raise PathOutsideError(f"{text.strip()}: outside the folders this server lets a page reach "
                           f"({', '.join(str(r) for r in roots)}); put the file there, or upload it")


def looks_like_path(text: str) -> bool:
    """A typed value that names a file or folder (not a hub id like "SmilingWolf/wd-vit-tagger-v3" or a
    WebUI checkpoint title)."""
    text = text.strip()
    return bool(text) and (text.startswith(("/", "~", ".", "\\")) or (len(text) > 2 and text[1] == ":")
                           or text.count("/") + text.count("\\") > 1)


def python_module_command(python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "lora_trainer"]


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a trainer process: our package importable even when the host's working
    folder is elsewhere (Forge runs from its own root, our package lives in extensions/)."""
    env = dict(os.environ)
    paths = [str(PACKAGE_PARENT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def find_checkpoints(*folders: Path) -> list[Path]:
    """Checkpoint files under the folders (recursively), sorted by name; missing folders are skipped."""
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += [p for p in folder.rglob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: (p.name.lower(), str(p)))


@dataclass
class StandaloneHost:
    """No WebUI around us: the workspace and model folders come from the command line."""

    workspace_dir: Path
    model_dirs: list[Path] = field(default_factory=list)
    config_dir: Path | None = None
    name: str = "standalone"
    confined: bool = False  # served to other computers (`ui --host 0.0.0.0`): typed paths stay inside
    _renderer: Any = field(default=None, init=False, repr=False, compare=False)
    _load_error: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def workspace(self) -> Path:
        return Path(self.workspace_dir)

    def checkpoints(self) -> list[Path]:
        return find_checkpoints(*[Path(d) for d in self.model_dirs])

    def sdxl_config_dir(self) -> Path | None:
        return Path(self.config_dir) if self.config_dir else None

    def hub_cache(self) -> Path | None:
        return None  # huggingface-hub's own cache (HF_HUB_CACHE / HF_HOME)

    def rembg_models(self) -> Path | None:
        return None  # rembg's own folder (U2NET_HOME, else ~/.u2net)

    def free_memory(self) -> None:
        """Nothing of ours is on the GPU in the UI process: training runs in its own process."""

    def publish_lora(self, lora_file: Path, project: str) -> str:
        return Path(lora_file).stem

    def trainer_command(self) -> list[str]:
        return python_module_command()

    def render_memory(self) -> tuple[int | None, str]:
        """The GPU the diffusers renderer would take (the first CUDA device), else this machine's RAM."""
        from lora_trainer.review.live import free_render_memory

        return free_render_memory()

    def publish_preview(self, lora_file: Path, project: str, image: Path) -> Path:
        from lora_trainer.runs.publish import write_preview

        return write_preview(Path(lora_file), Path(image))  # beside the run's file: no LoRA folder here

    def render_options(self) -> RenderOptions:
        """The diffusers renderer's samplers; no WebUI settings, so the run's training size."""
        from lora_trainer.review.diffusers_render import SAMPLERS, SCHEDULERS
        from lora_trainer.review.spec import RenderOptions

        return RenderOptions(tuple(SAMPLERS), SCHEDULERS)

    def adetailer_models(self) -> list[str]:
        return []  # ADetailer is a WebUI extension

    def path_roots(self) -> list[Path] | None:
        if not self.confined:
            return None
        return [Path(self.workspace_dir), *map(Path, self.model_dirs), *([Path(self.config_dir)] if self.config_dir else [])]

    def bind_txt2img_paste(self, button: Any, parameters: Any) -> bool:
        return False  # no txt2img here: the Review panel's own form takes a cell's settings

    def render(self, job: RenderJob) -> Image:
        """With diffusers in this process: the renderer is built for the job's checkpoint at the first
        job and kept for the next ones of the same checkpoint."""
        from lora_trainer.review.spec import RenderError

        checkpoint = job.settings.checkpoint
        if not checkpoint:
            raise RenderError("choose a base model: the standalone renderer has no current checkpoint")
        if self._renderer is None or self._renderer.model != str(checkpoint):
            from lora_trainer.imports import HEAVY_IMPORTS
            with HEAVY_IMPORTS:  # the first import and load of diffusers/transformers, one thread at a time
                from lora_trainer.review.diffusers_render import DiffusersRenderer

            if self._load_error and self._load_error[0] == str(checkpoint):
                raise RenderError(self._load_error[1])  # a model that failed to load fails at once again
            self._renderer = None  # the old model goes before the new one loads
            config_dir = self.sdxl_config_dir()
            try:
                with HEAVY_IMPORTS:
                    self._renderer = DiffusersRenderer(str(checkpoint), str(config_dir) if config_dir else None)
            except RenderError as e:
                self._load_error = (str(checkpoint), str(e))
                raise
            self._load_error = None
        return self._renderer.render(job)
