"""Face boxes from OpenCV's Haar cascades (shipped inside opencv-python, `cv2.data.haarcascades`: no
download), and the shot type a face box implies.

The cascades find frontal and profile faces of real photos; they miss faces turned far away or very
small ones. A shot without a detected face counts as "no face" and is reported as such.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .framing import Box

# A callable taking an RGB image and returning face boxes; tests and the UI may supply their own.
FaceDetector = Callable[[Image.Image], list[Box]]

# The face's height as a fraction of the image height decides the shot (portrait photography's rule of
# thumb: a head is about 1/8 of a standing body, about 1/4 of a half body).
CLOSE_UP_MIN = 0.25
HALF_BODY_MIN = 0.12
SHOTS = ("close-up", "half body", "full body", "no face")
DETECT_SIDE = 640  # detection runs on a copy whose longer side is this (fast, and enough for the rule)


class HaarFaceDetector:
    """Frontal + profile Haar cascades. Create once and reuse (loading takes ~50 ms)."""

    def __init__(self, min_face_fraction: float = 0.04):
        import cv2

        self._cv2 = cv2
        folder = Path(cv2.data.haarcascades)
        self._cascades = []
        for name in ("haarcascade_frontalface_default.xml", "haarcascade_profileface.xml"):
            cascade = cv2.CascadeClassifier(str(folder / name))
            if cascade.empty():
                raise RuntimeError(f"OpenCV could not load its bundled cascade {folder / name}")
            self._cascades.append(cascade)
        self.min_face_fraction = min_face_fraction

    def __call__(self, im: Image.Image) -> list[Box]:
        cv2 = self._cv2
        scale = min(1.0, DETECT_SIDE / max(im.size))
        small = im.convert("L")
        if scale < 1.0:
            small = small.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                 Image.Resampling.BILINEAR)
        grey = cv2.equalizeHist(np.asarray(small))
        min_side = max(20, int(self.min_face_fraction * min(grey.shape)))
        boxes: list[Box] = []
        for cascade in self._cascades:
            found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
            for x, y, w, h in (found if len(found) else []):
                box = tuple(int(round(v / scale)) for v in (x, y, x + w, y + h))
                if not any(_overlap(box, b) > 0.3 for b in boxes):
                    boxes.append(box)
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def classify_shot(image_size: tuple[int, int], faces: list[Box]) -> str:
    """"close-up", "half body" (half to three-quarter), "full body", or "no face", from the largest face.

    The one rule for the whole package: `audit` applies it to the images as they are, `prepare` to the
    training image it writes (`framed_shot`), so both count the same shots on the same set."""
    if not faces:
        return "no face"
    face = max(faces, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    fraction = (face[3] - face[1]) / image_size[1]
    if fraction >= CLOSE_UP_MIN:
        return "close-up"
    if fraction >= HALF_BODY_MIN:
        return "half body"
    return "full body"


def framed_shot(faces: list[Box], image_size: tuple[int, int], *, size: int, box: Box | None = None,
                mode: str = "pad", upscale: bool = False) -> str:
    """The shot as the training image `prepare` writes shows it: the faces (found on the whole image)
    cropped to `box`, the crop fitted into size x size (enlarged only with `upscale`) and, in "pad"
    mode, centred on a size x size canvas; then `classify_shot` on that canvas. A landscape photo or a
    small one becomes a smaller figure on the square canvas, and is counted as such, as `audit` of the
    written folder counts it."""
    left, top = (box[0], box[1]) if box is not None else (0, 0)
    width, height = (box[2] - box[0], box[3] - box[1]) if box is not None else image_size
    scale = min(size / width, size / height)
    if not upscale:
        scale = min(scale, 1.0)
    canvas = (size, size) if mode == "pad" else (max(1, round(width * scale)), max(1, round(height * scale)))
    framed = []
    for f in faces:
        x0, y0 = max(f[0] - left, 0), max(f[1] - top, 0)
        x1, y1 = min(f[2] - left, width), min(f[3] - top, height)
        if x1 > x0 and y1 > y0:
            framed.append(tuple(round(v * scale) for v in (x0, y0, x1, y1)))
    return classify_shot(canvas, framed)


def shot_mix(shots: list[str]) -> dict[str, int]:
    """How many of each shot (every key of SHOTS, in that order)."""
    return {shot: shots.count(shot) for shot in SHOTS}
