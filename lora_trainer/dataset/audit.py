"""A quality report a person reads before training: each finding names the image and why.

Measures (on a copy whose longer side is 640 px, so the numbers do not depend on the photo's size):
- sharpness (0-100): how steep the picture's crispest edges are for their own contrast: at each edge
  (a local maximum of the gradient where the grey level varies by 24 or more within 15 px) the gradient
  divided by that local range; the 90th percentile, x100. A step edge scores ~100, an edge spread over
  w px about 200/w. It does not grow with the amount of detail: a plain (flat) picture with a few sharp
  edges is sharp; one with no contrasted edge at all is not judged (None). Below `blur_threshold` (35:
  edges ~6 px wide at 640 px) it is out of focus or moving. Motion blur also leaves edges in one
  direction only (Sobel x vs y energy).
- detail: variance of the Laplacian (fine texture and edges together), for information only.
- saturation: mean HSV saturation (0-1); colour cast: how far the mean Lab a/b sits from neutral grey.
- exposure: mean brightness and the share of pixels crushed to black or blown to white.
- near-duplicates: 64-bit perceptual hash (DCT of a 32x32 grey copy); a Hamming distance <= 6 means
  the same picture, possibly resized, recompressed or slightly edited.
- shot mix: face size from OpenCV's bundled Haar cascades -> close-up / half body / full body / no face,
  against the guide's 1/3 to 1/2 close-ups. Count against the guide's 64 (at least) to 256.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..images import IMPORT_EXTENSIONS
from ..images import list_images as _list_images
from .background import MASK_REASON, is_mask_name
from .closeups import closeups_needed
from .faces import FaceDetector, HaarFaceDetector, classify_shot, shot_mix
from .loading import ImageProblem, decode

ANALYSIS_SIDE = 640


@dataclass(frozen=True)
class AuditThresholds:
    min_count: int = 64
    max_count: int = 256
    min_side: int = 1024
    blur_threshold: float = 35.0
    motion_ratio: float = 3.0
    min_saturation: float = 0.08
    max_saturation: float = 0.65
    max_cast: float = 12.0
    dark_mean: float = 50.0
    bright_mean: float = 205.0
    clipped_share: float = 0.25
    duplicate_distance: int = 6
    closeup_min: float = 1 / 3
    closeup_max: float = 1 / 2


@dataclass
class ImageAudit:
    name: str
    width: int
    height: int
    sharpness: float | None   # 0-100, None: no contrasted edge to judge (a flat picture)
    detail: float
    motion_ratio: float
    saturation: float
    cast: float
    cast_direction: str
    brightness: float
    dark_share: float
    bright_share: float
    shot: str
    faces: int
    phash: str
    findings: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    folder: str
    thresholds: AuditThresholds
    images: list[ImageAudit]
    unreadable: list[dict]
    near_duplicates: list[dict]
    shot_mix: dict[str, int]
    findings: list[str]  # about the set as a whole
    skipped: list[dict] = field(default_factory=list)  # files not audited, and why (masks)

    def to_dict(self) -> dict:
        return {"folder": self.folder, "count": len(self.images), "thresholds": asdict(self.thresholds),
                "findings": self.findings, "shot_mix": self.shot_mix, "near_duplicates": self.near_duplicates,
                "unreadable": self.unreadable, "skipped": self.skipped, "images": [asdict(i) for i in self.images]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        t = self.thresholds
        lines = [f"Audit of {self.folder}: {len(self.images)} image(s)", ""]
        lines += ["The set:"] + [f"  - {f}" for f in self.findings or ["no problems found"]]
        mix = ", ".join(f"{k} {v}" for k, v in self.shot_mix.items())
        lines += ["", f"Shot mix: {mix}"]
        flagged = [i for i in self.images if i.findings]
        lines += ["", f"Images with findings ({len(flagged)}):"]
        for image in flagged:
            lines.append(f"  {image.name}:")
            lines += [f"    - {f}" for f in image.findings]
        if not flagged:
            lines.append("  none")
        for bad in self.unreadable:
            lines.append(f"  {bad['name']}: unreadable: {bad['reason']}")
        if self.skipped:
            lines += ["", f"Not audited ({len(self.skipped)}):"]
            lines += [f"  {s['name']}: {s['reason']}" for s in self.skipped]
        lines += ["", "How to read it:",
                  f"  sharpness (0-100) = how steep the crispest edges are for their own contrast, at "
                  f"{ANALYSIS_SIDE} px: a sharp photo scores 50-100, an edge spread over w px about 200/w; below "
                  f"{t.blur_threshold:g} (edges over ~{200 / t.blur_threshold:.0f} px) the image is out of focus or "
                  "moving. A plain picture is not blurry: the amount of detail does not count, and one with no "
                  "contrasted edge is not judged (n/a). detail = variance of the Laplacian (texture), for "
                  "information.",
                  f"  saturation = mean HSV saturation; below {t.min_saturation:g} is nearly grey, above "
                  f"{t.max_saturation:g} is oversaturated. cast = distance of the mean Lab a/b from neutral; "
                  f"above {t.max_cast:g} suggests a colour cast (or a strongly coloured scene).",
                  f"  exposure: mean brightness below {t.dark_mean:g} / above {t.bright_mean:g} (0-255), or over "
                  f"{t.clipped_share:.0%} of pixels crushed black / blown white.",
                  f"  near-duplicates: perceptual-hash distance <= {t.duplicate_distance} of 64 bits.",
                  "  shots come from the largest detected face's height: >= 1/4 of the image close-up, "
                  ">= 1/8 half body, smaller full body; OpenCV's cascades miss turned-away faces."]
        return "\n".join(lines) + "\n"


def list_images(folder: Path) -> list[Path]:
    """Every image the audit reads: what `import` takes in, not only what the trainer reads; never the
    masks the background step writes beside its images (`masks_in` lists those)."""
    return [p for p in _list_images(folder, extensions=IMPORT_EXTENSIONS) if not _is_mask(p)]


def masks_in(folder: Path) -> list[Path]:
    """The background step's masks (`<stem>_mask.png` beside `<stem>.png`) among a folder's images."""
    return [p for p in _list_images(folder, extensions=IMPORT_EXTENSIONS) if _is_mask(p)]


def _is_mask(path: Path) -> bool:
    return is_mask_name(path.name, lambda n: path.with_name(n).is_file())


def measure(im: Image.Image) -> dict:
    """The per-image numbers, on an RGB image (any size; it is reduced to ANALYSIS_SIDE)."""
    work = im.convert("RGB")
    if max(work.size) != ANALYSIS_SIDE:
        scale = ANALYSIS_SIDE / max(work.size)
        work = work.resize((max(1, round(work.width * scale)), max(1, round(work.height * scale))),
                           Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.BICUBIC)
    rgb = np.asarray(work)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    detail = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    gx = float(np.mean(np.abs(cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3))))
    gy = float(np.mean(np.abs(cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3))))
    motion = max(gx, gy) / max(min(gx, gy), 1e-6)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation = float(hsv[..., 1].mean() / 255.0)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    a, b = float(lab[..., 1].mean() - 128), float(lab[..., 2].mean() - 128)
    return {"sharpness": edge_sharpness(grey), "detail": detail, "motion_ratio": motion, "saturation": saturation,
            "cast": float(np.hypot(a, b)), "cast_direction": _cast_direction(a, b),
            "brightness": float(grey.mean()), "dark_share": float((grey <= 8).mean()),
            "bright_share": float((grey >= 247).mean()), "phash": phash(grey), "analysis": work}


EDGE_WINDOW = 15      # px at ANALYSIS_SIDE: the neighbourhood whose grey range is an edge's contrast
EDGE_MIN_RANGE = 24  # grey levels: weaker variations are shading or noise, not edges to judge
EDGE_MIN_COUNT = 20  # fewer edge points than this: nothing to judge


def edge_sharpness(grey: np.ndarray) -> float | None:
    """0-100: the 90th percentile, over edge points, of the gradient (central difference) divided by
    the grey range around the point; None when the picture has (almost) no contrasted edge."""
    g = grey.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 4
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 4
    mag = np.hypot(gx, gy)
    window = np.ones((EDGE_WINDOW, EDGE_WINDOW), np.uint8)
    local_range = cv2.dilate(g, window) - cv2.erode(g, window)
    peak = mag >= cv2.dilate(mag, np.ones((3, 3), np.uint8))
    edges = (local_range >= EDGE_MIN_RANGE) & peak & (mag >= 0.05 * local_range)
    if int(edges.sum()) < EDGE_MIN_COUNT:
        return None
    ratio = mag[edges] / local_range[edges]
    return float(min(100.0, 100.0 * np.percentile(ratio, 90)))


def _cast_direction(a: float, b: float) -> str:
    parts = []
    if abs(a) >= 3:
        parts.append("magenta" if a > 0 else "green")
    if abs(b) >= 3:
        parts.append("yellow" if b > 0 else "blue")
    return "-".join(parts) or "neutral"


def phash(grey: np.ndarray) -> str:
    """64-bit DCT perceptual hash as 16 hex digits."""
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if x else '0' for x in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def audit_images(paths: list[Path], *, thresholds: AuditThresholds = AuditThresholds(),
                 detector: FaceDetector | None = None, folder: str = "", cache: dict | None = None) -> AuditReport:
    """`cache` (a dict the caller keeps between audits): each image's own measures and findings by its
    path, size and modification time, so a new audit of a folder where a few images changed measures
    only those (near-duplicates and the set's findings are always worked out again)."""
    t = thresholds
    detector = detector or HaarFaceDetector()
    images, unreadable = [], []
    for path in paths:
        key = None
        if cache is not None:
            try:
                stat = Path(path).stat()
                key = (stat.st_size, stat.st_mtime_ns, t)
            except OSError:
                key = None
            hit = cache.get(str(path))
            if key is not None and hit is not None and hit[0] == key:
                images.append(dataclasses.replace(hit[1], findings=list(hit[1].findings)))
                continue
        try:
            decoded = decode(path, draft_size=(ANALYSIS_SIDE, ANALYSIS_SIDE))
        except (ImageProblem, OSError) as e:
            unreadable.append({"name": Path(path).name, "reason": getattr(e, "reason", str(e))})
            continue
        m = measure(decoded.image)
        faces = detector(m.pop("analysis"))
        width, height = decoded.original_size
        image = ImageAudit(name=Path(path).name, width=width, height=height,
                           shot=classify_shot(_analysis_size(width, height), faces), faces=len(faces), **m)
        image.findings = _image_findings(image, t)
        if key is not None:
            cache[str(path)] = (key, dataclasses.replace(image, findings=list(image.findings)))
        images.append(image)

    duplicates = []
    for i, a in enumerate(images):
        for b in images[i + 1:]:
            d = hamming(a.phash, b.phash)
            if d <= t.duplicate_distance:
                duplicates.append({"images": [a.name, b.name], "distance": d})
                a.findings.append(f"near-duplicate of {b.name} (hash distance {d})")
                b.findings.append(f"near-duplicate of {a.name} (hash distance {d})")

    mix = shot_mix([i.shot for i in images])
    return AuditReport(folder=folder, thresholds=t, images=images, unreadable=unreadable,
                       near_duplicates=duplicates, shot_mix=mix, findings=_set_findings(images, mix, t))


def audit_folder(folder: Path, **kwargs) -> AuditReport:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    report = audit_images(list_images(folder), folder=str(folder), **kwargs)
    report.skipped = [{"name": str(p.relative_to(folder)), "reason": MASK_REASON} for p in masks_in(folder)]
    return report


def _analysis_size(width: int, height: int) -> tuple[int, int]:
    scale = ANALYSIS_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _image_findings(i: ImageAudit, t: AuditThresholds) -> list[str]:
    out = []
    if min(i.width, i.height) < t.min_side:
        out.append(f"low resolution: {i.width}x{i.height} (short side below {t.min_side})")
    if i.sharpness is not None and i.sharpness < t.blur_threshold:
        kind = "motion blur" if i.motion_ratio >= t.motion_ratio else "blurry"
        out.append(f"{kind}: sharpness {i.sharpness:.0f} of 100 is below {t.blur_threshold:g}: its crispest "
                   f"edges are ~{200 / max(i.sharpness, 1):.0f} px wide at {ANALYSIS_SIDE} px (sharp: 2-3 px)")
    if i.saturation < t.min_saturation:
        out.append(f"desaturated: saturation {i.saturation:.2f} is below {t.min_saturation:g} (nearly grey)")
    elif i.saturation > t.max_saturation:
        out.append(f"oversaturated: saturation {i.saturation:.2f} is above {t.max_saturation:g}")
    if i.cast > t.max_cast:
        out.append(f"colour cast toward {i.cast_direction}: {i.cast:.0f} from neutral (limit {t.max_cast:g})")
    if i.brightness < t.dark_mean or i.dark_share > t.clipped_share:
        out.append(f"underexposed: mean brightness {i.brightness:.0f}, {i.dark_share:.0%} of pixels black")
    if i.brightness > t.bright_mean or i.bright_share > t.clipped_share:
        out.append(f"overexposed: mean brightness {i.brightness:.0f}, {i.bright_share:.0%} of pixels white")
    return out


def _set_findings(images: list[ImageAudit], mix: dict[str, int], t: AuditThresholds) -> list[str]:
    n = len(images)
    out = []
    if n < t.min_count:
        out.append(f"{n} image(s): the guide asks for at least {t.min_count}")
    elif n > t.max_count:
        out.append(f"{n} images: more than the guide's {t.max_count}; keep the best")
    if n:
        share = mix["close-up"] / n
        lo, hi = t.closeup_min, t.closeup_max
        if share < lo:
            needed = closeups_needed([i.shot for i in images], lo)
            out.append(f"close-ups are {mix['close-up']} of {n} ({share:.0%}); the guide wants {lo:.0%}-{hi:.0%}: "
                       f"add {needed} face close-up(s) (prepare --closeups auto crops that many from the half "
                       "and full body shots, counting shots as this audit does)")
        elif share > hi:
            out.append(f"close-ups are {mix['close-up']} of {n} ({share:.0%}), above the guide's {hi:.0%}: "
                       "add half and full body shots")
        if mix["no face"]:
            out.append(f"{mix['no face']} image(s) with no detected face (turned away, small, or no person)")
    flagged = sum(1 for i in images if i.findings)
    if flagged:
        out.append(f"{flagged} image(s) have findings, listed below")
    return out
