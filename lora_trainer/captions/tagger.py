"""The WD14 tagger: an onnxruntime session over `model.onnx` and the labels of `selected_tags.csv`.

Batched: images go through the model `batch_size` at a time (models whose batch dimension is fixed,
usually at 1, get that many). The CUDA provider is used when the installed onnxruntime offers it
(the onnxruntime-gpu package), the CPU otherwise; `Tagger.provider` says which one actually runs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .models import ModelFiles
from .preprocess import prepare_image
from .tagtext import tag_key, tag_to_text

RATING, GENERAL, CHARACTER = 9, 0, 4
DEFAULT_SIZE = 448  # for models whose input side is not fixed in the graph
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class TagSettings:
    """Which predictions become caption tags."""
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False  # the most likely rating tag ("general", "sensitive", ...) first
    exclude: tuple[str, ...] = ()  # tags never written (compared like `tag_key`)
    underscores_to_spaces: bool = True  # except kaomoji

    def __post_init__(self):
        for name in ("general_threshold", "character_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if isinstance(self.exclude, str):
            raise ValueError("exclude must be a sequence of tags, not one string")
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]
    categories: tuple[int, ...]

    @classmethod
    def from_csv(cls, path: str | Path) -> Labels:
        """Read `selected_tags.csv` (columns tag_id,name,category,count; `name` and `category` used)."""
        path = Path(path)
        try:
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise ValueError(f"cannot read tag list {path}: {e}") from e
        if not rows or not {"name", "category"} <= set(rows[0]):
            raise ValueError(f"{path} is not a WD14 tag list: it needs 'name' and 'category' columns")
        try:
            return cls(tuple(r["name"] for r in rows), tuple(int(r["category"]) for r in rows))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: a 'category' value is not a number ({e})") from e


@dataclass
class Prediction:
    """One image's tags, each with its score, best first."""
    rating: list[tuple[str, float]] = field(default_factory=list)
    character: list[tuple[str, float]] = field(default_factory=list)
    general: list[tuple[str, float]] = field(default_factory=list)

    def tags(self) -> list[str]:
        """Caption order: rating (when kept), characters, then general tags, each by score."""
        return [t for t, _ in self.rating + self.character + self.general]


def available_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def choose_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers for 'auto' (CUDA when offered, else CPU), 'cuda' or 'cpu'."""
    offered = available_providers()
    if device == "cpu":
        return [CPU]
    if device not in ("auto", "cuda"):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
    if CUDA in offered:
        return [CUDA, CPU]
    if device == "cuda":
        raise RuntimeError(
            "onnxruntime offers no CUDA provider (it offers " + ", ".join(offered) + "). Install "
            "onnxruntime-gpu in place of onnxruntime (having both installed breaks the GPU one), or use the CPU.")
    return [CPU]


class Tagger:
    def __init__(self, model: ModelFiles, *, device: str = "auto", batch_size: int = 8):
        import onnxruntime

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.labels = Labels.from_csv(model.tags_path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused providers
        # Threads that spin-wait after a call would take the CPU from decoding the next images.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(model.model_path), sess_options=options, providers=choose_providers(device))
        except Exception as e:
            if isinstance(e, RuntimeError) and "CUDA provider" in str(e):
                raise
            raise ValueError(f"cannot load tagger model {model.model_path}: {e}") from e
        self.provider = self.session.get_providers()[0]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"{model.model_path}: input {inp.name} has shape {shape}, expected NHWC "
                             "(batch, height, width, 3) like the WD14 taggers")
        self.size = shape[1] if isinstance(shape[1], int) else DEFAULT_SIZE
        fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.fixed_batch = fixed
        self.batch_size = fixed or batch_size
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.labels.names):
            raise ValueError(f"{model.model_path} predicts {outputs[-1]} tags but {model.tags_path} lists "
                             f"{len(self.labels.names)}: the two files are not from the same tagger")

    def describe(self) -> str:
        where = "GPU (CUDA)" if self.provider == CUDA else "CPU"
        return f"WD14 tagger {self.model.name} on {where} via {self.provider}, input {self.size}px"

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Scores (N, tags) for prepared NHWC images; runs the model in chunks it accepts."""
        out = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            if self.fixed_batch and len(chunk) < self.fixed_batch:  # pad the last chunk to the fixed size
                pad = np.repeat(chunk[-1:], self.fixed_batch - len(chunk), axis=0)
                out.append(self.session.run(None, {self.input_name: np.concatenate([chunk, pad])})[0][:len(chunk)])
            else:
                out.append(self.session.run(None, {self.input_name: chunk})[0])
        return np.concatenate(out).astype(np.float32, copy=False)

    def predict(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, len(self.labels.names)), np.float32)
        return self.predict_arrays(np.stack([prepare_image(im, self.size) for im in images]))

    def select(self, scores: np.ndarray, settings: TagSettings = TagSettings()) -> Prediction:
        """Turn one image's scores into tags (see `TagSettings`)."""
        return select_tags(self.labels, scores, settings)

    def tag(self, images: Iterable[Image.Image], settings: TagSettings = TagSettings()) -> list[Prediction]:
        images = list(images)
        return [self.select(row, settings) for row in self.predict(images)]


def select_tags(labels: Labels, scores: np.ndarray, settings: TagSettings = TagSettings()) -> Prediction:
    excluded = {tag_key(t) for t in settings.exclude}

    def pick(category: int, threshold: float) -> list[tuple[str, float]]:
        found = []
        for name, cat, score in zip(labels.names, labels.categories, scores):
            if cat == category and score > threshold:
                text = tag_to_text(name, settings.underscores_to_spaces)
                if tag_key(text) not in excluded:
                    found.append((text, float(score)))
        return sorted(found, key=lambda item: -item[1])

    prediction = Prediction(character=pick(CHARACTER, settings.character_threshold),
                            general=pick(GENERAL, settings.general_threshold))
    if settings.include_rating:
        ratings = pick(RATING, 0.0)
        prediction.rating = ratings[:1]
    return prediction
