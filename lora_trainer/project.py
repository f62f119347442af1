"""One training project's folders, in the layout kohya-ss/sd-scripts and the guide use.

```
<root>/
  sources/               imported originals, byte-for-byte copies with safe names
  img/<repeats>_<name>/  training images (PNG) with their .txt captions
  masks/                 background-removal masks, one per training image (same name; outside img/
                         so the trainer never takes a mask for a training image)
  log/                   TensorBoard runs; trainer.log and trainer.pid.json of a run the UI started
  model/                 LoRA files
  cache/latents/         cached latents (the trainer's; kept across runs)
  <name>.json            the training settings the UI saves and starts from
```
The only place that builds these folders. The names of a run's files inside `model/` and `log/`
belong to `runs/layout.py`; which files are images, to `images.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lora_trainer.images import list_images

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # whole names only: fullmatch (a "$" would pass "abc\n")


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    repeats: int = 1

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if not _NAME.fullmatch(self.name) or len(self.name) > 100:
            raise ValueError(f"project name {self.name!r}: use letters, digits, '.', '_' or '-' "
                             "(starting with a letter or digit)")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a whole number >= 1, got {self.repeats!r}")

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def img(self) -> Path:
        return self.root / "img"

    @property
    def train_images(self) -> Path:
        """`img/<repeats>_<name>/`: the folder the trainer reads."""
        return self.img / f"{self.repeats}_{self.name}"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def tag_groups_file(self) -> Path:
        """The project's own word lists for the guide's caption order (captions/order.py TagGroups)."""
        return self.root / "tag_groups.json"

    @property
    def review(self) -> Path:
        """The Review's grids: `review/<output_name>/<time stamp>/grid.png` and its cells."""
        return self.root / "review"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def latent_cache(self) -> Path:
        return self.cache / "latents"

    @property
    def config_file(self) -> Path:
        """The training settings the UI saves, loads and starts a run from."""
        return self.root / f"{self.name}.json"

    @property
    def trainer_log(self) -> Path:
        """Console output of the training processes started from the UI (appended, one block a run)."""
        return self.log / "trainer.log"

    @property
    def trainer_record(self) -> Path:
        """The training process the UI started and that still runs (see `runs/trainer_record.py`)."""
        return self.log / "trainer.pid.json"

    def training_folders(self) -> dict[Path, int]:
        """Each folder under img/ with the number of images in it (the trainer reads them all)."""
        if not self.img.is_dir():
            return {}
        return {folder: len(list_images(folder)) for folder in sorted(self.img.iterdir()) if folder.is_dir()}

    def uncaptioned(self, caption_extension: str = ".txt") -> dict[Path, list[Path]]:
        """Per training folder, its images without a caption file (the trainer gives those the
        folder's class name as caption)."""
        extension = caption_extension if caption_extension.startswith(".") else "." + caption_extension
        found = {}
        for folder in self.training_folders():
            missing = [image for image in list_images(folder) if not image.with_suffix(extension).is_file()]
            if missing:
                found[folder] = missing
        return found

    def create(self) -> Project:
        for path in (self.sources, self.train_images, self.log, self.model, self.cache):
            path.mkdir(parents=True, exist_ok=True)
        return self


def project_root_of(train_data_dir: str | Path) -> Project:
    """The project whose `img/` folder is `train_data_dir` (kohya's layout: img/, model/, log/ and
    cache/ side by side), for the trainer, which is given folders rather than a project."""
    root = Path(train_data_dir).resolve().parent
    return Project(root, root.name if _NAME.fullmatch(root.name) else "project")


def list_projects(workspace: Path) -> list[str]:
    """Names of the workspace's sub-folders that hold a project (an `img/` folder), sorted."""
    workspace = Path(workspace)
    if not workspace.is_dir():
        return []
    return sorted((p.name for p in workspace.iterdir() if (p / "img").is_dir() and _NAME.fullmatch(p.name)),
                  key=str.lower)


def open_project(workspace: Path, name: str, repeats: int | None = None) -> Project:
    """The project `<workspace>/<name>`; `repeats=None` takes it from an existing `img/<repeats>_<name>/`
    folder (1 when there is none). Raises ValueError for a bad name or repeats."""
    project = Project(Path(workspace) / name, name, 1 if repeats is None else repeats)
    if repeats is None:
        found = existing_repeats(project)
        if found:
            project = Project(project.root, name, found)
    return project


def existing_repeats(project: Project) -> int | None:
    """The repeats of an existing `img/<repeats>_<name>/` folder (the smallest if several), or None."""
    if not project.img.is_dir():
        return None
    found = [int(p.name.split("_", 1)[0]) for p in project.img.iterdir()
             if p.is_dir() and re.fullmatch(rf"\d+_{re.escape(project.name)}", p.name)]
    found = [r for r in found if r >= 1]
    return min(found) if found else None
