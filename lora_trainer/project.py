"""One training project's folders, in the layout kohya-ss/sd-scripts and the guide use.

```
<root>/
  sources/               imported originals, byte-for-byte copies with safe names
  img/<repeats>_<name>/  training images (PNG) with their .txt captions
  masks/                 background-removal masks, one per training image (same name; outside img/
                         so the trainer never takes a mask for a training image)
  log/                   TensorBoard runs
  model/                 LoRA files
  cache/                 cached latents / text embeddings
```
The only place that builds these paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    repeats: int = 1

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if not _NAME.match(self.name) or len(self.name) > 100:
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
    def cache(self) -> Path:
        return self.root / "cache"

    def create(self) -> Project:
        for path in (self.sources, self.train_images, self.log, self.model, self.cache):
            path.mkdir(parents=True, exist_ok=True)
        return self
