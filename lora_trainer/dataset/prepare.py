"""From a folder / list / zip of photos to a project's training folder, in one call.

For each input: read it (never modify it), spot same-content duplicates, keep a byte-for-byte copy in
the project's `sources/` under a safe name, decode to 8-bit RGB, optionally replace the background,
crop (manual box, subject box from the mask, or face box), fit, apply edits, pad (or keep the aspect for
buckets), and write `img/<repeats>_<name>/<name>.png` with its caption. Every input gets a report line.
Optional extra face close-ups come from the half / full body shots afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from ..captions.encoding import CaptionFileError, check_encoding_name, decode_text
from ..fsutil import atomic_path, write_json_atomic, write_text_atomic
from ..project import Project
from .background import BackgroundRemover, check_model, random_fill_color, save_png
from .closeups import DEFAULT_MARGIN, closeup_box, plan_closeups
from .edits import Edits, apply_edits
from .faces import FaceDetector, HaarFaceDetector, framed_shot, shot_mix
from .framing import Box, clamp_box, fit, pad, subject_box
from .loading import DEFAULT_MAX_PIXELS, NEUTRAL_GREY, ImageProblem, decode
from .sources import NameAllocator, SourceItem, content_hash, gather, pick_originals

REPORT_NAME = "prepare-report.json"
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class PrepareOptions:
    size: int = 1024                    # the training resolution: square side, or the maximum for buckets
    mode: str = "pad"                   # "pad": fit + pad to exactly size x size; "bucket": fit only
    fill: tuple[int, int, int] = NEUTRAL_GREY        # padding colour (the background colour when replaced)
    alpha_fill: tuple[int, int, int] = NEUTRAL_GREY  # what transparent pixels become
    upscale: bool = False               # enlarge images (and close-up crops) smaller than `size`; otherwise
                                        # they are padded and reported (close-ups: not made, reported)
    crop: str = "none"                  # "none", "subject" (from the background mask), "face"
    face_margin: float = DEFAULT_MARGIN
    edits: Edits = field(default_factory=Edits)
    background: bool = False            # replace the background (rembg) with a random colour
    background_model: str = "u2net"
    background_seed: int = 0
    allow_download: bool = False
    closeups: str = "off"               # "off", "auto" (up to 1/3 close-ups), "all"
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_duplicates: bool = False
    caption_extension: str = ".txt"
    compress_level: int = 3             # PNG zlib level: 1 fastest .. 9 smallest; 3 is ~4x faster than 6
                                        # for ~8% larger files (encoding is most of the time here)
    workers: int = 0                    # processes; 0 = one per CPU core
    caption_encoding: str = ""          # captions' encoding when not UTF-8 / UTF-16 with a BOM, e.g. "cp1252"

    def __post_init__(self):
        if not 64 <= self.size <= 8192:
            raise ValueError(f"size must be between 64 and 8192, got {self.size}")
        if self.mode not in ("pad", "bucket"):
            raise ValueError(f"mode must be 'pad' or 'bucket', got {self.mode!r}")
        if self.crop not in ("none", "subject", "face"):
            raise ValueError(f"crop must be 'none', 'subject' or 'face', got {self.crop!r}")
        if self.crop == "subject" and not self.background:
            raise ValueError("crop 'subject' needs the background mask: turn on background removal")
        if self.closeups not in ("off", "auto", "all"):
            raise ValueError(f"closeups must be 'off', 'auto' or 'all', got {self.closeups!r}")
        for name in ("fill", "alpha_fill"):
            colour = getattr(self, name)
            if len(colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour):
                raise ValueError(f"{name} must be three integers 0-255, got {colour!r}")
        if not 0 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be 0-9, got {self.compress_level}")
        if self.max_pixels < 1 or self.workers < 0 or self.face_margin < 0:
            raise ValueError("max_pixels must be positive, workers and face_margin not negative")
        if not self.caption_extension.startswith("."):
            raise ValueError(f"caption_extension must start with '.', got {self.caption_extension!r}")
        if self.caption_encoding:
            check_encoding_name(self.caption_encoding)


@dataclass
class Entry:
    """One report line: an input (or an extra close-up) and what became of it."""

    source: str
    status: str                  # "ok", "close-up", "duplicate", "skipped", "close-up skipped"
    name: str = ""
    reason: str = ""             # why it was skipped / whose duplicate it is
    notes: list[str] = field(default_factory=list)
    output: str = ""
    mask: str = ""
    caption: str = ""
    size: list[int] = field(default_factory=list)  # upright size of the original
    shot: str = ""               # as the training image shows it (faces.framed_shot), as audit counts it
    too_small: list[int] = field(default_factory=list)  # [w, h] framed, when both are below the size

    def line(self) -> str:
        if self.status in ("skipped", "duplicate", "close-up skipped"):
            return f"{self.status.upper():9} {self.source}: {self.reason}"
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.status.upper():9} {self.source} -> {self.output}{notes}"


@dataclass
class PrepareReport:
    project: str
    train_images: str
    options: dict
    entries: list[Entry]

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    @property
    def shot_mix(self) -> dict[str, int]:
        """The shots of the prepared images (not the added close-ups), as trained and as `audit` of
        the training folder counts them; empty when faces were not looked for."""
        shots = [e.shot for e in self.entries if e.status == "ok" and e.shot]
        return shot_mix(shots) if shots else {}

    @property
    def too_small(self) -> list[Entry]:
        return [e for e in self.entries if e.too_small and e.status in ("ok", "close-up")]

    def to_dict(self) -> dict:
        counts = {s: self.count(s) for s in ("ok", "close-up", "duplicate", "skipped", "close-up skipped")}
        counts["too small"] = len(self.too_small)
        return {"project": self.project, "train_images": self.train_images, "counts": counts,
                "shot_mix": self.shot_mix, "options": self.options, "entries": [asdict(e) for e in self.entries]}

    def to_text(self) -> str:
        lines = [e.line() for e in self.entries]
        if self.shot_mix:
            lines.append("Shots as trained (audit counts the same): "
                         + ", ".join(f"{k} {v}" for k, v in self.shot_mix.items()))
        if self.count("close-up skipped"):
            lines.append(f"{self.count('close-up skipped')} close-up(s) not made: their face crops are too small "
                         "(listed above)")
        if self.too_small:
            size = self.options.get("size")
            done = ("enlarged to the training size" if self.options.get("upscale") else
                    "padded, not enlarged (--upscale-small enlarges them)" if self.options.get("mode") == "pad"
                    else "kept at their size, not enlarged (--upscale-small enlarges them)")
            lines.append(f"{len(self.too_small)} image(s) smaller than the {size} px training size: {done}: "
                         + ", ".join(f"{Path(e.source).name} {e.too_small[0]}x{e.too_small[1]}" for e in self.too_small))
        lines.append(f"{self.count('ok')} image(s) prepared, {self.count('close-up')} close-up(s) added, "
                     f"{self.count('duplicate')} duplicate(s) and {self.count('skipped')} file(s) skipped; "
                     f"training folder: {self.train_images}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Job:
    item: SourceItem
    name: str
    copy_to: Path | None        # where the verbatim source copy goes (None: already there)
    box: Box | None = None
    color: tuple[int, int, int] | None = None
    closeup: bool = False
    caption: bytes | None = None       # the caption file's bytes, copied to sources/ as they are
    caption_text: str | None = None    # its text (decoded), written to img/ as UTF-8


class _Worker:
    """Runs one job; picklable for worker processes (heavy helpers are then created per process)."""

    def __init__(self, project: Project, options: PrepareOptions, detector=None, remover=None):
        self.project, self.options = project, options
        self.detector, self.remover = detector, remover

    def __getstate__(self):
        return {"project": self.project, "options": self.options, "detector": None, "remover": None}

    def _faces(self, im: Image.Image) -> list[Box]:
        if self.detector is None:
            self.detector = HaarFaceDetector()
        return self.detector(im)

    def __call__(self, job: _Job) -> tuple[Entry, tuple | None]:
        o = self.options
        entry = Entry(source=job.item.label, status="close-up" if job.closeup else "ok", name=job.name)
        try:
            data = job.item.read_bytes()
            full = o.crop != "none" or job.box is not None or o.closeups != "off"
            decoded = decode(data, alpha_fill=o.alpha_fill, max_pixels=o.max_pixels,
                             draft_size=None if full else (o.size, o.size))
        except ImageProblem as e:
            entry.status, entry.reason = "skipped", e.reason
            return entry, None
        except OSError as e:
            entry.status, entry.reason = "skipped", f"unreadable: {e}"
            return entry, None
        if job.copy_to is not None:
            with atomic_path(job.copy_to) as tmp:
                tmp.write_bytes(data)
        entry.notes, entry.size = decoded.notes, list(decoded.original_size)
        try:
            return self._frame(job, entry, decoded.image)
        except (ValueError, OSError, RuntimeError) as e:  # a bad crop box, a full disk, the segmenter
            # the outputs are written atomically: nothing half-written is left; the report names the file
            entry.status = "close-up skipped" if job.closeup else "skipped"
            entry.reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            entry.output = entry.mask = ""
            return entry, None

    def _frame(self, job: _Job, entry: Entry, im: Image.Image) -> tuple[Entry, tuple | None]:
        o, p = self.options, self.project
        mask, fill = None, o.fill

        if self.remover is not None:
            im, mask = self.remover.replace(im, job.color)
            fill = job.color
            entry.notes.append(f"background replaced with {job.color}")
        want_faces = not job.closeup and (o.crop == "face" or o.closeups != "off")
        faces = self._faces(im) if want_faces else []
        full_size = im.size
        box = job.box
        if box is None and o.crop == "subject":
            box = subject_box(mask)
            if box is None:
                entry.notes.append("empty mask: not cropped")
        elif box is None and o.crop == "face":
            if faces:
                box = closeup_box(faces[0], im.size, o.face_margin)
            else:
                entry.notes.append("no face found: not cropped")

        if box is not None:
            box = clamp_box(box, im.size)
        entry.shot = "close-up" if job.closeup else framed_shot(
            faces, full_size, size=o.size, box=box, mode=o.mode, upscale=o.upscale) if want_faces else ""
        if box is not None:
            im = im.crop(box)
            mask = mask.crop(box) if mask is not None else None
        fitted = fit(im, (o.size, o.size), o.upscale)
        if max(im.size) < o.size:
            entry.too_small = list(im.size)
            what = f"{'the crop is ' if box is not None else ''}{im.width}x{im.height}"
            if o.upscale:
                entry.notes.append(f"small: {what}, below the {o.size} px training size: enlarged to "
                                   f"{fitted.width}x{fitted.height}")
            else:
                done = f"padded to {o.size}x{o.size}" if o.mode == "pad" else "kept at that size"
                entry.notes.append(f"too small: {what}, below the {o.size} px training size: {done}, not enlarged "
                                   "(--upscale-small enlarges it)")
        if not o.edits.is_identity:
            fitted = apply_edits(fitted, o.edits)
        out = pad(fitted, (o.size, o.size), fill) if o.mode == "pad" else fitted
        target = p.train_images / f"{job.name}.png"
        save_png(out, target, o.compress_level)
        entry.output = str(target)
        if mask is not None:
            mask = mask.resize(fitted.size, Image.Resampling.BILINEAR) if mask.size != fitted.size else mask
            if o.mode == "pad":
                canvas = Image.new("L", out.size, 0)
                canvas.paste(mask, ((out.width - mask.width) // 2, (out.height - mask.height) // 2))
                mask = canvas
            save_png(mask, p.masks / f"{job.name}.png", o.compress_level)
            entry.mask = str(p.masks / f"{job.name}.png")
        if not job.closeup:
            entry.caption = self._caption(job)
        return entry, (faces[0] if faces else None, full_size)

    def _caption(self, job: _Job) -> str:
        """Copy the caption beside the source into sources/ and img/; never overwrite an img/ caption
        (it may have been edited since)."""
        ext = self.options.caption_extension
        target = self.project.train_images / f"{job.name}{ext}"
        if job.caption is None:
            return str(target) if target.exists() else ""
        kept = self.project.sources / f"{job.name}{ext}"
        if job.copy_to is not None or not kept.exists():
            with atomic_path(kept) as tmp:
                tmp.write_bytes(job.caption)
        if not target.exists():
            write_text_atomic(target, job.caption_text)
        return str(target)


def _suffix(item: SourceItem) -> str:
    name = item.path.name if item.path is not None else PurePosixPath(item.member).name
    suffix = os.path.splitext(name)[1].lower()
    return suffix if _SAFE_SUFFIX.match(suffix) else ".bin"


def prepare(inputs: list[str | Path], project: Project, options: PrepareOptions = PrepareOptions(), *,
            boxes: dict[str, Box] | None = None, detector: FaceDetector | None = None,
            remover: BackgroundRemover | None = None,
            progress: Callable[[int, int, str], None] | None = None,
            stop: threading.Event | None = None, write_report: bool = True) -> PrepareReport:
    """Import `inputs` (folders, files, zips; none = the project's own sources/) and write the training
    folder. `boxes` maps an output name (or a source file's stem) to a manual crop box. A detector or a
    remover passed in is used as is (and the work then runs in this process).

    `stop` (set from another thread) ends the run between files: what is done stays done, every file
    not prepared gets a "skipped" line ("stopped before ..."), no close-ups are added, the report is
    written. `write_report=False` leaves the project's prepare-report.json as it is (re-preparing one
    image keeps the import's report).

    A missing background model fails here, before anything is read or written (ModelMissingError)."""
    if options.background and remover is None:
        check_model(options.background_model, allow_download=options.allow_download)
    check_name(project.name, "project name")
    project.create()
    boxes = dict(boxes or {})
    from_sources = not inputs
    items = gather(inputs or [project.sources], options.caption_extension)
    known: dict[str, str] = {}  # content hash -> name already in sources/
    taken = []
    if not from_sources:
        for path in sorted(project.sources.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix != options.caption_extension:
                known[content_hash(path.read_bytes())] = path.stem
                taken.append(path.stem)
    names = NameAllocator(taken)
    entries: list[Entry] = []
    jobs: list[_Job] = []
    readable: list[tuple[SourceItem, str]] = []
    for item in items:
        if item.skip_reason:
            entries.append(Entry(source=item.label, status="skipped", reason=item.skip_reason))
            continue
        try:
            digest = content_hash(item.read_bytes())
        except OSError as e:
            entries.append(Entry(source=item.label, status="skipped", reason=f"unreadable: {e}"))
            continue
        readable.append((item, digest))
    # among same-content files the original is kept, whatever the order: IMG_3.jpg, not "IMG_3 (copy).jpg"
    originals = pick_originals(readable)
    for item, digest in readable:
        if originals[digest] is not item and not options.keep_duplicates:
            entries.append(Entry(source=item.label, status="duplicate",
                                 reason=f"a duplicate of {originals[digest].label} (same content), which is kept"))
            continue
        try:
            caption = item.read_caption()
            caption_text = None if caption is None else decode_text(
                caption, item.caption_label, options.caption_encoding or None, hint=_CAPTION_HINT)
        except (CaptionFileError, OSError) as e:
            entries.append(Entry(source=item.label, status="skipped", reason=f"caption: {e}"))
            continue
        if from_sources:
            name, copy_to = item.stem, None
        elif digest in known:
            name, copy_to = known.pop(digest), None
        else:
            name = names.allocate(item.stem, digest)
            copy_to = project.sources / f"{name}{_suffix(item)}"
        box = boxes.get(name, boxes.get(item.stem))
        jobs.append(_Job(item=item, name=name, copy_to=copy_to, box=tuple(box) if box else None,
                         caption=caption, caption_text=caption_text))

    if options.background and remover is None:
        remover = BackgroundRemover.create(options.background_model, allow_download=options.allow_download)
    if remover is not None:
        rng = random.Random(options.background_seed)
        jobs = [dataclasses.replace(j, color=random_fill_color(rng)) for j in jobs]
    worker = _Worker(project, options, detector, remover)
    results = _run(worker, jobs, options, progress, stop)
    entries.extend(entry for entry, _ in results)
    stopped = stop is not None and stop.is_set()
    entries.extend(Entry(source=j.item.label, status="skipped", name=j.name, reason=STOPPED_REASON)
                   for j in jobs[len(results):])

    if options.closeups != "off" and not stopped:
        candidates = [(e.name, e.shot, extra[0], extra[1]) for e, extra in results if extra is not None]
        chosen, too_small = plan_closeups(candidates, options.closeups, options.face_margin,
                                          size=options.size, upscale=options.upscale)
        by_name = {j.name: j for j in jobs}
        entries.extend(Entry(source=by_name[n].item.label, status="close-up skipped", name=n, reason=why)
                       for n, why in sorted(too_small.items()))
        extra_jobs = [_Job(by_name[n].item, names.allocate(f"{n}_closeup", content_hash(n.encode())), None, box, by_name[n].color, True)
                      for n, box in sorted(chosen.items())]
        done = _run(worker, extra_jobs, options, progress, stop)
        entries.extend(entry for entry, _ in done)
        entries.extend(Entry(source=j.item.label, status="close-up skipped", name=j.name, reason=STOPPED_REASON)
                       for j in extra_jobs[len(done):])

    report = PrepareReport(project=str(project.root), train_images=str(project.train_images),
                           options=_options_dict(options), entries=entries)
    if write_report:
        write_json_atomic(project.root / REPORT_NAME, report.to_dict())
    return report


STOPPED_REASON = "stopped before it was prepared"

_CAPTION_HINT = ("the image was skipped: save the caption as UTF-8, remove it to import the image "
                 "without it, or name its encoding with --caption-encoding (e.g. cp1252, latin-1, shift_jis)")


def check_name(name: str, what: str) -> str:
    """`name` unless it holds a control character (a newline, a tab, ...), which would end up in
    folder and file names."""
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    if bad:
        raise ValueError(f"{what} {name!r} holds the control character {bad[0]!r}: "
                         "use letters, digits, '.', '_' or '-'")
    return name


def _options_dict(options: PrepareOptions) -> dict:
    return json.loads(json.dumps(asdict(options)))


def _run(worker: _Worker, jobs: list[_Job], options: PrepareOptions, progress,
         stop: threading.Event | None = None) -> list[tuple[Entry, tuple | None]]:
    """The jobs' results in order; with `stop` set, those done until then (checked between files)."""
    workers = options.workers or os.cpu_count() or 1
    in_process = workers == 1 or len(jobs) < 2 or worker.detector is not None or worker.remover is not None
    results = []
    if in_process:
        for job in jobs:
            if stop is not None and stop.is_set():
                break
            result = worker(job)
            results.append(result)
            if progress:
                progress(len(results), len(jobs), result[0].source)
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = [pool.submit(worker, job) for job in jobs]
        for future in futures:
            if stop is not None and stop.is_set():
                for f in futures:
                    f.cancel()  # the ones not started; those running finish and are reported
            if future.cancelled():
                break  # the pool starts jobs in order: the cancelled ones are the rest
            result = future.result()
            results.append(result)
            if progress:
                progress(len(results), len(jobs), result[0].source)
    return results
