"""The Dataset panel: the guide's "Collect the images" and "Prepare the data" in the tab, over a project.

Import a folder (typed), uploaded photos or a zip into the project with `dataset.prepare` in the
background (originals copied to sources/ untouched; PNG, RGB, duplicates, framing to the training size,
close-ups), with progress and Stop, and its per-file report as a table. The training images as a gallery,
each captioned with its audit badges (`dataset.audit`), and the audit's findings about the set against
the guide; selected images can be excluded (moved to <project>/excluded/, never deleted) and restored.
Backgrounds (rembg, the guide's random colour or one colour) on all images or the selection, in the
background, each result beside the image before it and its mask, with "Redo this one" (another model or
fill, from the photo before), "Keep the original", and a mask editor (paint white / black on the photo,
its background tinted) that makes the image again through the corrected mask. Face close-ups cut from
the originals of half and full body shots, shown with their shots for review. A crop editor: one image's
original with its box, set by two clicks, typed, or started from the face or the subject, and "Apply the
crop" preparing it again from the original with that box. Batch edits with a preview of
one image (nothing written) and Apply. Every change goes through the dataset library (prepare, audit,
background, edits, curate), as the commands do.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw

from lora_trainer.dataset import curate
from lora_trainer.dataset.audit import AuditReport, audit_folder
from lora_trainer.dataset.audit import list_images as audit_list_images
from lora_trainer.dataset.background import ModelMissingError, check_model
from lora_trainer.dataset.edits import Edits, apply_edits
from lora_trainer.dataset.faces import HaarFaceDetector
from lora_trainer.dataset.loading import ImageProblem, decode
from lora_trainer.dataset.masks import has_strokes, overlay
from lora_trainer.dataset.prepare import PrepareOptions, PrepareReport, prepare
from lora_trainer.host import Host, confine_path
from lora_trainer.project import Project, list_projects
from lora_trainer.ui import render
from lora_trainer.ui.pages import PageStates, chosen_project
from lora_trainer.ui.train_panel import keep_out_of_forge_ui_config

POLL_INTERVAL_S = 1.0
# The longest side of the image in the mask editor. Its canvas is drawn every frame (by the browser's
# CPU where it has no GPU); the strokes are scaled to the mask when applied, and a brush on 512 px is finer
# than the latent the masked loss uses (1/8 of the image).
EDITOR_SIDE = 512
REPORT_HEADERS = ["file", "status", "reason"]
DEFAULT_FILL = "#808080"
BACKGROUND_MODELS = ["u2net", "u2netp", "u2net_human_seg", "isnet-general-use", "birefnet-portrait", "silueta"]
SHOT_BADGES = {"close-up": "close-up", "half body": "half", "full body": "full", "no face": "no face"}
# the start of an audit finding -> its short badge
FINDING_BADGES = (("low resolution", "low res"), ("motion blur", "blurry"), ("blurry", "blurry"),
                  ("colour cast", "cast"), ("underexposed", "dark"), ("overexposed", "bright"),
                  ("desaturated", "grey"), ("oversaturated", "oversaturated"))
_DUPLICATE = re.compile(r"near-duplicate of (.+?) \(hash distance")
CROP_PREVIEW_SIDE = 768  # the crop editor shows the original downscaled to this (clicks are scaled back)
# A gallery's highlighted item after a click: none. gradio 4.40's page keeps its own index when the server
# sends None, so an index no item has (-1; the select it fires is ignored) clears the highlight.
NO_HIGHLIGHT = -1
_DUPLICATE_OF = re.compile(r"a duplicate of (.+?) \(same content\)")
_ZIP_LABEL = re.compile(r"([^/\\]+\.zip:.+)$", re.IGNORECASE)


# --- pure helpers (tested in-process) --------------------------------------------------------------

def hex_colour(text: str | None) -> tuple[int, int, int]:
    """'#808080' (the colour picker's value) or '128,128,128' -> (128, 128, 128); ValueError otherwise."""
    text = (text or "").strip()
    try:
        if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
            return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
        match = re.fullmatch(r"rgba?\(([^)]*)\)", text)  # some browsers' pickers answer rgb()/rgba()
        parts = [round(float(v)) for v in (match.group(1) if match else text).split(",")[:3]]
        if len(parts) == 3 and all(0 <= v <= 255 for v in parts):
            return tuple(parts)
    except ValueError:
        pass
    raise ValueError(f"fill colour {text!r}: use #RRGGBB or R,G,B (0-255 each)")


def prepare_options(size: Any, mode: str, fill: str, closeups: str, upscale: bool, workers: int = 0) -> PrepareOptions:
    """The panel's import settings as prepare's options; ValueError names what is wrong."""
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise ValueError(f"size {size!r}: a whole number of pixels, e.g. 1024") from None
    return PrepareOptions(size=size, mode="bucket" if mode == "bucket" else "pad", fill=hex_colour(fill),
                          closeups=closeups or "off", upscale=bool(upscale), workers=workers)


def picker_root(host: Host) -> Path:
    """Where the folder picker starts: the workspace on a server others reach (paths stay inside), else
    the user's home folder."""
    roots = host.path_roots()
    return Path(roots[0]) if roots else Path.home()


def topmost(paths: list[Path]) -> list[Path]:
    """`paths` without those inside another of them (a ticked folder brings its subfolders along)."""
    chosen = sorted(dict.fromkeys(Path(p) for p in paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in chosen:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return [p for p in chosen if p in kept]


def import_inputs(paths_text: str | None, uploads: list | None, roots: list[Path] | None = None,
                  picked: list | None = None) -> list[Path]:
    """The typed paths (one a line), the picked ones and the uploaded files; FileNotFoundError names a
    typed path that does not exist; ValueError when there is nothing to import; PathOutsideError for a
    typed or picked path outside `roots` (a server others reach: `Host.path_roots`)."""
    inputs = []
    for path in topmost([Path(p) for p in picked or []]):
        inputs.append(confine_path(str(path), roots))
    for line in (paths_text or "").splitlines():
        line = line.strip().strip('"').strip("'")
        if not line:
            continue
        path = confine_path(line, roots)
        if not path.exists():
            raise FileNotFoundError(f"{line}: no such folder or file")
        inputs.append(path)
    for upload in uploads or []:
        name = upload if isinstance(upload, (str, Path)) else getattr(upload, "name", None) or getattr(upload, "path", None)
        if name:
            inputs.append(Path(name))
    if not inputs:
        raise ValueError("type a folder (or a zip) to import, pick one, or upload photos or a zip")
    return inputs


def display_name(label: str) -> str:
    """A report's source as the user knows it: the file's name, or `archive.zip:member`."""
    match = _ZIP_LABEL.search(label)
    return match.group(1) if match else Path(label).name


def report_rows(report: PrepareReport) -> list[list[str]]:
    """One row per input (and added close-up): file, status, reason (or what was done to it)."""
    rows = []
    for e in report.entries:
        why = e.reason or "; ".join(e.notes)
        # an uploaded original sits in gradio's temporary folder: name it as the user knows it
        why = _DUPLICATE_OF.sub(lambda m: f"a duplicate of {display_name(m.group(1))} (same content)", why)
        if e.status in ("ok", "close-up") and e.output:
            why = f"-> {Path(e.output).name}" + (f" ({why})" if why else "")
        rows.append([display_name(e.source), e.status, why])
    return rows


def image_badges(report: AuditReport) -> dict[str, list[str]]:
    """Each audited image's short badges: its findings ("low res", "blurry", "cast", "dark", "bright",
    "dup of X", ...) and its shot ("close-up", "half", "full", "no face"); unreadable ones too."""
    badges: dict[str, list[str]] = {}
    for image in report.images:
        words = []
        for finding in image.findings:
            duplicate = _DUPLICATE.match(finding)
            if duplicate:
                words.append(f"dup of {duplicate.group(1)}")
                continue
            words += [badge for start, badge in FINDING_BADGES if finding.startswith(start)][:1]
        words.append(SHOT_BADGES.get(image.shot, image.shot))
        badges[image.name] = list(dict.fromkeys(words))
    for bad in report.unreadable:
        badges[bad["name"]] = ["unreadable"]
    return badges


def gallery_items(folder: Path, report: AuditReport) -> list[tuple[str, str]]:
    """(image, "name: badges") for each image the audit lists in the folder, in its order."""
    badges = image_badges(report)
    return [(str(path), f"{path.name}: {', '.join(badges.get(path.name, []))}".rstrip(": "))
            for path in audit_list_images(folder)]


def audit_summary(report: AuditReport) -> str:
    """The audit of the set (HTML): the count against the guide's 64-256, the shot mix against its 1/3-1/2
    close-ups, and the report's own findings about the set."""
    t = report.thresholds
    n = len(report.images)
    mix = ", ".join(f"{k} {v}" for k, v in report.shot_mix.items())
    closeups = report.shot_mix.get("close-up", 0)
    share = f" ({closeups / n:.0%} close-ups)" if n else ""
    lines = [f"<b>{n} image(s)</b> (the guide: {t.min_count}-{t.max_count}); shots: {escape(mix)}{share} "
             f"(the guide: {t.closeup_min:.0%}-{t.closeup_max:.0%} close-ups)"]
    findings = report.findings or ["no problems found"]
    lines.append("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in findings) + "</ul>")
    if report.unreadable:
        lines.append("<p>Unreadable: " + escape(", ".join(f"{u['name']} ({u['reason']})" for u in report.unreadable))
                     + "</p>")
    return f'<div class="lora-trainer-dataset-summary">{"".join(lines)}</div>'


def edits_of(sharpen, brightness, contrast, saturation, autolevel) -> Edits:
    return Edits(sharpen=float(sharpen or 0), brightness=float(1.0 if brightness is None else brightness),
                 contrast=float(1.0 if contrast is None else contrast),
                 saturation=float(1.0 if saturation is None else saturation), autolevel=bool(autolevel))


def crop_preview(im: Image.Image, box, corner=None) -> tuple[Image.Image, float]:
    """A copy of `im` no larger than CROP_PREVIEW_SIDE with `box` (and a pending `corner`) drawn on it,
    and the factor from its pixels back to `im`'s."""
    scale = max(1.0, max(im.size) / CROP_PREVIEW_SIDE)
    shown = im.resize((max(1, round(im.width / scale)), max(1, round(im.height / scale)))) if scale > 1 else im.copy()
    draw = ImageDraw.Draw(shown)
    if box is not None:
        draw.rectangle([v / scale for v in box], outline=(255, 0, 0), width=3)
    if corner is not None:
        x, y = corner[0] / scale, corner[1] / scale
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=(255, 0, 0), width=2)
    return shown, scale


def box_of(left, top, right, bottom) -> tuple[int, int, int, int] | None:
    """The four fields as a box, or None when one is empty."""
    values = (left, top, right, bottom)
    return None if any(v is None or v == "" for v in values) else tuple(int(round(float(v))) for v in values)


def closeup_items(project: Project) -> list[tuple[str, str]]:
    """(close-up, "its name <- its shot") for each close-up made from a shot in the training folder."""
    return [(str(path), f"{path.name} <- {shot.name if shot else 'its shot is gone'}")
            for path, shot in curate.closeup_images(project)]


def editor_strokes(value) -> Image.Image | None:
    """The strokes painted in an ImageEditor (its layers, merged), or None."""
    layers = [layer for layer in (value or {}).get("layers") or [] if layer is not None] if isinstance(value, dict) else []
    if not layers:
        return None
    merged = Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
    for layer in layers:
        layer = layer.convert("RGBA")
        merged.alpha_composite(layer if layer.size == merged.size else layer.resize(merged.size))
    return merged


def _toggled(selection, names: list[str], event):
    """The selection with the clicked gallery item's name added or removed."""
    index = event.index if isinstance(event.index, int) else None
    if index is None or not 0 <= index < len(names):
        return gr.update()
    return gr.update(value=toggle(selection, names[index]))


def toggle(selection: list[str] | None, name: str) -> list[str]:
    selection = list(selection or [])
    return [n for n in selection if n != name] if name in selection else [*selection, name]


# --- the background job (import or backgrounds) ----------------------------------------------------

@dataclass
class _Job:
    kind: str          # "import", "background", "closeups" or "edits"
    project: str
    done: int = 0
    total: int = 0
    current: str = ""
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    summary: str = ""
    error: str = ""
    rows: list[list[str]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the images the job changed or made
    keep_selection: list[str] = field(default_factory=list)  # the selection to show again after it

    def status(self) -> str:
        what = {"import": "importing into", "background": "replacing backgrounds in",
                "closeups": "making close-ups in", "edits": "editing images in"}[self.kind]
        if self.error:
            return f"{what} {self.project} ended: {self.error}"
        if self.finished:
            return self.summary
        left = (time.monotonic() - self.started) / self.done * (self.total - self.done) if self.done else None
        eta = f", about {left:.0f} s left" if left is not None else ""
        stopping = " (stopping after this file)" if self.stop.is_set() else ""
        current = f" ({display_name(self.current)})" if self.current else ""
        return f"{what} {self.project}: {self.done}/{self.total or '?'}{current}{eta}{stopping}"


@dataclass
class _Page:
    project: str = ""
    shown_job: int = 0
    crop_name: str = ""
    corner: tuple[int, int] | None = None  # the crop editor's first click, in pixels of the original


class DatasetPanel:
    def __init__(self, host: Host):
        self.host = host
        self._job: _Job | None = None
        self._jobs = 0
        self._lock = threading.Lock()
        self._pages: PageStates[_Page] = PageStates(_Page)
        self._audits: OrderedDict[str, tuple[tuple, AuditReport]] = OrderedDict()
        self._measured: dict[str, dict] = {}  # folder -> audit_images' per-image cache
        self.face_detector = None  # the crop editor's (created on first use; tests supply their own)

    # --- layout ---------------------------------------------------------------------------------
    def build(self) -> DatasetPanel:
        with gr.Row():
            self.project = gr.Dropdown([], label="Project", allow_custom_value=True, scale=3,
                                       info="choose one, or type a new name to import into",
                                       elem_id="lora_trainer_dataset_project")
            self.refresh_button = gr.Button("Refresh", elem_id="lora_trainer_dataset_refresh", scale=0, min_width=100)
        self._import_box()
        self.job_status = gr.HTML(elem_id="lora_trainer_dataset_job_status")
        self.message = gr.HTML(elem_id="lora_trainer_dataset_message")
        self._images_box()
        self._background_box()
        self._crop_box()
        self._closeups_box()
        self._edits_box()
        keep_out_of_forge_ui_config(self.project, self.paths, self.selection, self.excluded, self.compare_name,
                                    self.edit_name, self.crop_name, self.mask_target, self.picker)
        self.timer = gr.Timer(POLL_INTERVAL_S)
        self._wire()
        return self

    def _import_box(self) -> None:
        with gr.Accordion("Import photos", open=True, elem_id="lora_trainer_dataset_import_box"):
            with gr.Row():
                self.paths = gr.Textbox(label="Folder or zip on this machine", lines=1, scale=2,
                                        placeholder="/path/to/photos (one a line)",
                                        info="the originals are never changed: copies go to the project's sources/",
                                        elem_id="lora_trainer_dataset_paths")
                self.uploads = gr.File(file_count="multiple", label="or upload photos / a zip", scale=2,
                                       type="filepath", elem_id="lora_trainer_dataset_uploads")
            root = picker_root(self.host)
            with gr.Accordion(f"or pick folders / files in {root}", open=False,
                              elem_id="lora_trainer_dataset_picker_box"):
                # lists one folder at a time, as it is opened; a ticked folder brings its subfolders along
                self.picker = gr.FileExplorer(root_dir=root, file_count="multiple", ignore_glob="*/.*",
                                              label="tick a folder (or photos, or a zip) to import", height=320,
                                              elem_id="lora_trainer_dataset_picker")
            with gr.Row():
                self.size = gr.Number(1024, label="Size (px)", precision=0, minimum=64, maximum=8192,
                                      elem_id="lora_trainer_dataset_size")
                self.mode = gr.Radio([("pad to a square", "pad"), ("fit (buckets)", "bucket")], value="pad",
                                     label="Framing", elem_id="lora_trainer_dataset_mode")
                self.fill = gr.ColorPicker(DEFAULT_FILL, label="Padding colour", elem_id="lora_trainer_dataset_fill")
                self.closeups = gr.Radio(["off", "auto", "all"], value="off", label="Face close-ups",
                                         info="auto: until 1/3 are close-ups", elem_id="lora_trainer_dataset_closeups")
                self.upscale = gr.Checkbox(False, label="Enlarge small photos", elem_id="lora_trainer_dataset_upscale")
            with gr.Row():
                self.import_button = gr.Button("Import", variant="primary", elem_id="lora_trainer_dataset_import")
                self.stop_button = gr.Button("Stop", variant="stop", elem_id="lora_trainer_dataset_stop")
            self.report = gr.Dataframe(headers=REPORT_HEADERS, datatype=["str", "str", "str"], interactive=False,
                                       wrap=True, label="Report (one line a file)", elem_id="lora_trainer_dataset_report")

    def _images_box(self) -> None:
        with gr.Accordion("Training images", open=True, elem_id="lora_trainer_dataset_images_box"):
            self.summary = gr.HTML(elem_id="lora_trainer_dataset_summary")
            self.gallery = gr.Gallery(label="Training images (click to select)", columns=6, height=520,
                                      allow_preview=False, elem_id="lora_trainer_dataset_gallery")
            self.selection = gr.CheckboxGroup([], label="Selected images (none: all)",
                                              elem_id="lora_trainer_dataset_selection")
            with gr.Row():
                self.select_all_button = gr.Button("Select all", elem_id="lora_trainer_dataset_select_all")
                self.clear_button = gr.Button("Clear the selection", elem_id="lora_trainer_dataset_clear")
                self.exclude_button = gr.Button("Exclude selected", elem_id="lora_trainer_dataset_exclude")
            with gr.Row():
                self.excluded = gr.Dropdown([], multiselect=True, label="Excluded images (in <project>/excluded/)",
                                            scale=3, elem_id="lora_trainer_dataset_excluded")
                self.restore_button = gr.Button("Restore", elem_id="lora_trainer_dataset_restore", scale=1)

    def _background_box(self) -> None:
        with gr.Accordion("Background (rembg, random colour)", open=False,
                          elem_id="lora_trainer_dataset_background_box"):
            with gr.Row():
                self.bg_model = gr.Dropdown(BACKGROUND_MODELS, value="u2net", allow_custom_value=True, scale=3,
                                            label="Model", info=self._rembg_info(),
                                            elem_id="lora_trainer_dataset_bg_model")
                self.bg_seed = gr.Number(0, label="Seed (colours)", precision=0, elem_id="lora_trainer_dataset_bg_seed")
                self.bg_fill_mode = gr.Radio([("a random colour each (the guide)", "random"), ("this colour", "fixed")],
                                             value="random", label="Fill", elem_id="lora_trainer_dataset_bg_fill_mode")
                self.bg_fill = gr.ColorPicker("#7f4040", label="Fill colour", elem_id="lora_trainer_dataset_bg_fill")
                self.bg_button = gr.Button("Replace backgrounds (selection; none: all)",
                                           elem_id="lora_trainer_dataset_bg_start")
                self.bg_stop_button = gr.Button("Stop", variant="stop", min_width=80, scale=0,
                                                elem_id="lora_trainer_dataset_bg_stop")
            with gr.Row():
                self.compare_name = gr.Dropdown([], label="Compare", scale=3,
                                                elem_id="lora_trainer_dataset_compare_name")
                self.redo_button = gr.Button("Redo this one (model and fill above)", scale=1,
                                             elem_id="lora_trainer_dataset_bg_redo")
                self.keep_button = gr.Button("Keep the original", elem_id="lora_trainer_dataset_keep_original", scale=1)
            with gr.Row():
                self.compare_before = gr.Image(type="filepath", interactive=False, label="Before", height=320,
                                               elem_id="lora_trainer_dataset_compare_before")
                self.compare_after = gr.Image(type="filepath", interactive=False, label="Now", height=320,
                                              elem_id="lora_trainer_dataset_compare_after")
                self.compare_mask = gr.Image(type="filepath", interactive=False, label="Mask", height=320,
                                             elem_id="lora_trainer_dataset_compare_mask")
            with gr.Row():
                self.mask_button = gr.Button("Correct the mask", elem_id="lora_trainer_dataset_mask_edit")
                self.refill_button = gr.Button("Fill with the colour above (same mask)",
                                               elem_id="lora_trainer_dataset_refill")
            # The image whose mask is being painted ("": none). The editor exists only while it is set:
            # gradio's ImageEditor redraws its WebGL canvas every frame, hidden or not (1.8 cores of a
            # browser without a GPU, on every open WebUI page).
            self.mask_target = gr.Textbox("", visible=False, elem_id="lora_trainer_dataset_mask_target")
            gr.render([self.project, self.mask_target], triggers=[self.mask_target.change])(self._mask_editor)

    def _mask_editor(self, project_name, target):
        """The editor, its Apply and Close, for the image named in mask_target (nothing when none)."""
        if not target:
            return
        value, message = self.edit_mask(project_name, target)
        if value is None:  # gone since it was opened: the reason where the editor would be
            gr.HTML(message)
            return
        with gr.Row():
            apply = gr.Button("Apply the painted mask", variant="primary", elem_id="lora_trainer_dataset_mask_apply")
            close = gr.Button("Close the editor", elem_id="lora_trainer_dataset_mask_close")
        editor = gr.ImageEditor(
            value=value, type="pil", image_mode="RGBA", sources=(), transforms=(), layers=False, format="png",
            height=560, interactive=True, elem_id="lora_trainer_dataset_mask_editor",
            brush=gr.Brush(colors=["#ffffff", "#000000"], default_color="#ffffff", color_mode="fixed"),
            eraser=gr.Eraser(), label=f"{target}, its background tinted: paint white where the subject is, black "
                                      "where the background is (the eraser takes a stroke back)")
        apply.click(self.apply_mask, [self.project, self.mask_target, editor], [self.message, *self.view_outputs(), editor])
        close.click(self.close_mask_editor, None, [self.mask_target])

    def _rembg_info(self) -> str:
        folder = self.host.rembg_models()
        where = folder if folder is not None else "U2NET_HOME, else ~/.u2net"
        return f"a rembg name (its file in {where}) or a .onnx path"

    def _crop_box(self) -> None:
        with gr.Accordion("Crop", open=False, elem_id="lora_trainer_dataset_crop_box"):
            with gr.Row():
                self.crop_name = gr.Dropdown([], label="Image", scale=3, elem_id="lora_trainer_dataset_crop_name",
                                             info="its original from sources/: click two opposite corners")
                self.face_button = gr.Button("Face box", elem_id="lora_trainer_dataset_crop_face", scale=1)
                self.subject_button = gr.Button("Subject box", elem_id="lora_trainer_dataset_crop_subject", scale=1)
                self.crop_button = gr.Button("Apply the crop", variant="primary", scale=1,
                                             elem_id="lora_trainer_dataset_crop_apply")
            with gr.Row():
                self.crop_fields = [gr.Number(label=f"{side} (px of the original)", precision=0, minimum=0,
                                              elem_id=f"lora_trainer_dataset_crop_{side}")
                                    for side in ("left", "top", "right", "bottom")]
            self.crop_image = gr.Image(type="pil", interactive=False, label="Original (the box in red)", height=480,
                                       elem_id="lora_trainer_dataset_crop_image")

    def _closeups_box(self) -> None:
        with gr.Accordion("Face close-ups", open=False, elem_id="lora_trainer_dataset_closeups_box"):
            with gr.Row():
                self.closeups_button = gr.Button("Make close-ups (selection; none: every half and full body shot)",
                                                 elem_id="lora_trainer_dataset_closeups_make")
                self.closeups_stop_button = gr.Button("Stop", variant="stop", min_width=80, scale=0,
                                                      elem_id="lora_trainer_dataset_closeups_stop")
            self.closeups_gallery = gr.Gallery(
                label="Close-ups made from shots, for review (click to select; Exclude selected above drops them)",
                columns=6, height=300, allow_preview=False, elem_id="lora_trainer_dataset_closeups_gallery")

    def _edits_box(self) -> None:
        with gr.Accordion("Batch edits", open=False, elem_id="lora_trainer_dataset_edits_box"):
            with gr.Row():
                self.sharpen = gr.Slider(0, 300, value=0, step=5, label="Sharpen (%)", elem_id="lora_trainer_dataset_sharpen")
                self.brightness = gr.Slider(0.2, 2.0, value=1.0, step=0.05, label="Brightness",
                                            elem_id="lora_trainer_dataset_brightness")
                self.contrast = gr.Slider(0.2, 2.0, value=1.0, step=0.05, label="Contrast",
                                          elem_id="lora_trainer_dataset_contrast")
                self.saturation = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Saturation",
                                            elem_id="lora_trainer_dataset_saturation")
                self.autolevel = gr.Checkbox(False, label="Auto-level", elem_id="lora_trainer_dataset_autolevel")
            with gr.Row():
                self.edit_name = gr.Dropdown([], label="Preview on", scale=3, elem_id="lora_trainer_dataset_edit_name")
                self.preview_button = gr.Button("Preview", elem_id="lora_trainer_dataset_preview", scale=1)
                self.apply_button = gr.Button("Apply to the selection (none: all)", variant="primary", scale=1,
                                              elem_id="lora_trainer_dataset_apply")
                self.edits_stop_button = gr.Button("Stop", variant="stop", min_width=80, scale=0,
                                                   elem_id="lora_trainer_dataset_edits_stop")
            with gr.Row():
                self.edit_before = gr.Image(type="filepath", interactive=False, label="Before", height=360,
                                            elem_id="lora_trainer_dataset_edit_before")
                self.edit_after = gr.Image(type="pil", interactive=False, label="After (not saved)", height=360,
                                           elem_id="lora_trainer_dataset_edit_after")

    def view_outputs(self) -> list:
        return [self.project, self.summary, self.gallery, self.selection, self.excluded, self.compare_name,
                self.compare_before, self.compare_after, self.compare_mask, self.edit_name, self.crop_name,
                self.closeups_gallery]

    def _wire(self) -> None:
        views = self.view_outputs()
        self.project.input(self.open_project, [self.project], views)
        self.refresh_button.click(self.refresh, [self.project], views)
        self.import_button.click(self.start_import, [self.project, self.paths, self.uploads, self.size, self.mode,
                                                     self.fill, self.closeups, self.upscale, self.picker],
                                 [self.message, self.report])
        for stop in (self.stop_button, self.bg_stop_button, self.closeups_stop_button, self.edits_stop_button):
            stop.click(self.stop, None, [self.message])  # one job at a time: each box's Stop ends it
        # No inputs: gradio 4.40's page warns for every timer call that sends some (see TrainPanel).
        self.timer.tick(self.poll, None, [self.job_status, self.report, *views], show_progress="hidden")
        # The gallery's highlight is dropped after each click (NO_HIGHLIGHT): the selection is the
        # checkboxes, and a second click on the same image then fires again and unselects it.
        self.gallery.select(self.select_image, [self.project, self.selection], [self.selection, self.gallery])
        self.select_all_button.click(self.select_all, [self.project], [self.selection])
        self.clear_button.click(lambda: gr.update(value=[]), None, [self.selection])
        self.exclude_button.click(self.exclude, [self.project, self.selection], [self.message, *views])
        self.restore_button.click(self.restore, [self.project, self.excluded], [self.message, *views])
        background = [self.bg_model, self.bg_seed, self.bg_fill_mode, self.bg_fill]
        self.bg_button.click(self.start_background, [self.project, self.selection, *background], [self.message])
        self.redo_button.click(self.redo_background, [self.project, self.compare_name, *background], [self.message])
        self.mask_button.click(self.open_mask_editor, [self.project, self.compare_name], [self.mask_target, self.message])
        self.refill_button.click(self.refill, [self.project, self.compare_name, self.bg_fill], [self.message, *views])
        # what changes the image or its mask under the editor closes it
        for changed in (self.project.input, self.compare_name.input, self.redo_button.click, self.bg_button.click,
                        self.keep_button.click):
            changed(self.close_mask_editor, None, [self.mask_target], show_progress="hidden")
        self.closeups_button.click(self.start_closeups, [self.project, self.selection], [self.message])
        self.closeups_gallery.select(self.select_closeup, [self.project, self.selection],
                                     [self.selection, self.closeups_gallery])
        self.compare_name.input(self.show_compare, [self.project, self.compare_name],
                                [self.compare_before, self.compare_after, self.compare_mask])
        self.keep_button.click(self.keep_original, [self.project, self.compare_name], [self.message, *views])
        edits = [self.sharpen, self.brightness, self.contrast, self.saturation, self.autolevel]
        self.preview_button.click(self.preview, [self.project, self.edit_name, *edits],
                                  [self.edit_before, self.edit_after, self.message])
        self.edit_name.input(self.preview, [self.project, self.edit_name, *edits],
                             [self.edit_before, self.edit_after, self.message])
        self.apply_button.click(self.apply, [self.project, self.selection, *edits], [self.message])
        crop_shown = [self.crop_image, *self.crop_fields, self.message]
        self.crop_name.input(self.show_crop, [self.project, self.crop_name], crop_shown)
        self.crop_image.select(self.crop_click, [self.project, self.crop_name, *self.crop_fields], crop_shown)
        self.face_button.click(self.face_crop, [self.project, self.crop_name], crop_shown)
        self.subject_button.click(self.subject_crop, [self.project, self.crop_name], crop_shown)
        self.crop_button.click(self.apply_crop, [self.project, self.crop_name, *self.crop_fields],
                               [self.message, *views, self.crop_image])

    def wire_page_load(self, blocks: gr.Blocks) -> None:
        blocks.load(self.refresh, [self.project], self.view_outputs(), show_progress="hidden")

    # --- callbacks: the project --------------------------------------------------------------------
    def refresh(self, project: str | None, request: gr.Request = None):
        projects = list_projects(self.host.workspace())
        if project not in projects and not self._is_new(project):
            project = projects[0] if projects else None
        return self._view(projects, project, request=request)

    def open_project(self, project: str | None, request: gr.Request = None):
        return self._view(list_projects(self.host.workspace()), project, request=request)

    def _is_new(self, name: str | None) -> bool:
        """A typed name of a project that does not exist yet (import creates it)."""
        try:
            return bool(name) and not self._open(name).root.exists()
        except ValueError:
            return False

    def _view(self, projects: list[str], name: str | None, selection: list[str] | None = None,
              compare: str | None = None, request: gr.Request | None = None):
        """The project's training images with their audit, the selection, the excluded images and the
        background comparison; the page remembers the project (its poll has no inputs)."""
        page = self._page(request)
        page.project = name or ""
        empty = (gr.update(choices=[], value=[]), gr.update(choices=[], value=[]), gr.update(choices=[], value=None),
                 None, None, None, gr.update(choices=[], value=None), gr.update(choices=[], value=None), [])
        try:
            project = self._open(name)
        except ValueError as e:
            note = render.message(str(e), error=True) if name else ""
            return gr.update(choices=projects, value=name or None), note, [], *empty
        folder = project.train_images
        if not folder.is_dir():
            return (gr.update(choices=projects, value=project.name),
                    render.message(f"no training images yet in {folder}: import photos"), [], *empty)
        report = self._audit(folder)
        items = gallery_items(folder, report)
        names = [Path(path).name for path, _ in items]
        kept = [n for n in (selection or []) if n in names]
        excluded = [p.name for p in curate.excluded_images(project)]
        compared = [n for n in names if curate.before_background(project, n) is not None
                    or curate.background_mask(project, n) is not None]
        compare = compare if compare in compared else (compared[0] if compared else None)
        return (gr.update(choices=projects, value=project.name), audit_summary(report), items,
                gr.update(choices=names, value=kept), gr.update(choices=excluded, value=[]),
                gr.update(choices=compared, value=compare), *self._compare_values(project, compare),
                gr.update(choices=names, value=names[0] if names else None),
                gr.update(choices=names, value=page.crop_name if page.crop_name in names else None),
                closeup_items(project))

    def _audit(self, folder: Path) -> AuditReport:
        """The folder's audit, again only when its images changed (names, sizes, times), measuring only
        the changed images again."""
        paths = audit_list_images(folder)
        signature = tuple((p.name, s.st_size, s.st_mtime_ns) for p in paths for s in [p.stat()])
        key = str(folder)
        with self._lock:
            cached = self._audits.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        with self._lock:
            measured = self._measured.setdefault(key, {})
        report = audit_folder(folder, cache=measured)  # measures only the images that changed
        keep = {str(p) for p in paths}
        with self._lock:
            for stale in [k for k in measured if k not in keep]:
                measured.pop(stale, None)
            self._audits[key] = (signature, report)
            while len(self._audits) > 32:
                self._measured.pop(self._audits.popitem(last=False)[0], None)
        return report

    # --- callbacks: import and backgrounds (one job at a time) ------------------------------------
    def start_import(self, project_name, paths, uploads, size, mode, fill, closeups, upscale, picked=None,
                     workers: int = 0):
        try:
            project = self._open(project_name)
            inputs = import_inputs(paths, uploads, self.host.path_roots(), picked)
            options = prepare_options(size, mode, fill, closeups, upscale, workers)
            job = self._new_job("import", project.name)
        except (ValueError, FileNotFoundError) as e:
            return render.message(str(e), error=True), gr.update()
        threading.Thread(target=self._import, args=(job, project, inputs, options), daemon=True,
                         name="lora-trainer-import").start()
        return render.message(f"importing {len(inputs)} input(s) into {project.name}"), []

    def _import(self, job: _Job, project: Project, inputs: list[Path], options: PrepareOptions) -> None:
        def progress(done: int, total: int, source: str) -> None:
            job.done, job.total, job.current = done, total, source

        try:
            report = prepare(inputs, project, options, progress=progress, stop=job.stop)
            job.rows = report_rows(report)
            c = report.count
            job.summary = (f"{'stopped: ' if job.stop.is_set() else ''}{c('ok')} image(s) prepared, "
                           f"{c('close-up')} close-up(s) added, {c('duplicate')} duplicate(s) and {c('skipped')} "
                           f"file(s) skipped; training folder: {report.train_images}")
        except Exception as e:  # a bad zip, a full disk, ...: the job ends with its reason
            job.error = str(e) or type(e).__name__
        job.finished = True

    def start_background(self, project_name, selection, model, seed, fill_mode="random", fill=None):
        try:
            project = self._open(project_name)
            names = list(selection or []) or self._names(project)
            if not names:
                raise ValueError(f"no training images in {project.train_images}")
            for name in names:
                curate.training_image(project, name)
            model = (model or "u2net").strip()
            check_model(model, home=self.host.rembg_models())  # a missing model is said now, naming its file
            colour = hex_colour(fill) if fill_mode == "fixed" else None
            seed = int(seed or 0)
            job = self._new_job("background", project.name)
        except (ValueError, ModelMissingError) as e:
            return render.message(str(e), error=True)
        threading.Thread(target=self._background, args=(job, project, names, model, seed, colour), daemon=True,
                         name="lora-trainer-background").start()
        fill_text = f"the colour {colour}" if colour else "a random colour each"
        return render.message(f"replacing the background of {len(names)} image(s) with {model}, {fill_text}")

    def redo_background(self, project_name, name, model, seed, fill_mode="random", fill=None):
        """The compared image again from the photo before its background, with the model and fill chosen."""
        if not name:
            return render.message("choose the image to redo (Compare)", error=True)
        return self.start_background(project_name, [name], model, seed, fill_mode, fill)

    def _background(self, job: _Job, project: Project, names: list[str], model: str, seed: int,
                    colour: tuple[int, int, int] | None = None) -> None:
        def progress(done: int, total: int, path: str) -> None:
            job.done, job.total, job.current = done, total, path

        job.total = len(names)
        try:
            records = curate.replace_backgrounds(project, names, model=model, seed=seed, fill=colour,
                                                 home=self.host.rembg_models(), progress=progress, stop=job.stop)
            job.names = [Path(r["output"]).name for r in records]
            job.rows = [[Path(r["output"]).name, "background", f"colour {tuple(r['color'])}; mask {Path(r['mask']).name}"]
                        for r in records]
            job.summary = (f"{'stopped: ' if job.stop.is_set() else ''}background replaced on {len(records)} of "
                           f"{len(names)} image(s); the images before it are kept in "
                           f"{curate.before_background_folder(project)}")
        except Exception as e:  # the segmenter failing names the image; nothing of the batch is written
            job.error = str(e) or type(e).__name__
        job.finished = True

    # --- callbacks: the mask editor -----------------------------------------------------------------
    def edit_mask(self, project_name, name) -> tuple[dict | None, str]:
        """The editor's value: the photo from before the background, its background tinted by the mask, to
        paint on (None when there is none), and the message."""
        try:
            project = self._open(project_name)
            if not name:
                raise ValueError("choose the image whose mask to correct (Compare)")
            image = curate.training_image(project, name)
            mask_path = curate.background_mask(project, image.name)
            if mask_path is None:
                raise ValueError(f"{image.name}: no background mask in {project.masks}: replace its background first")
            with Image.open(mask_path) as m:
                mask = m.convert("L")
            photo = curate.photo_before(project, image)
        except ImageProblem as e:
            return None, render.message(f"{name}: {e.reason}", error=True)
        except (ValueError, OSError) as e:
            return None, render.message(str(e), error=True)
        shown = overlay(photo, mask) if photo.size == mask.size else photo
        shown.thumbnail((EDITOR_SIDE, EDITOR_SIDE))
        return ({"background": shown, "layers": [], "composite": None},
                render.message(f"{image.name}: paint white on what belongs to the subject, black on the background; "
                               "then Apply the painted mask"))

    def open_mask_editor(self, project_name, name):
        """mask_target set to the image (which builds the editor), or left as it is with the reason."""
        value, message = self.edit_mask(project_name, name)
        return (gr.update() if value is None else name), message

    @staticmethod
    def close_mask_editor() -> str:
        return ""

    def apply_mask(self, project_name, name, editor, request: gr.Request = None):
        """The image made again through its mask corrected by the painted strokes; the editor then shows
        the corrected mask, to go on painting."""
        strokes = editor_strokes(editor)
        if not has_strokes(strokes):
            return (render.message("nothing painted: paint on the image first", error=True),
                    *[gr.update()] * len(self.view_outputs()), gr.update())
        outputs = self._recomposite(project_name, name, request, strokes=strokes)
        corrected = self.edit_mask(project_name, name)[0]
        return *outputs, gr.update() if corrected is None else corrected

    def refill(self, project_name, name, fill, request: gr.Request = None):
        try:
            colour = hex_colour(fill)
        except ValueError as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return self._recomposite(project_name, name, request, colour=colour)

    def _recomposite(self, project_name, name, request, **change):
        try:
            project = self._open(project_name)
            if not name:
                raise ValueError("choose the image (Compare)")
            written = curate.recomposite(project, name, **change)
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        what = "its corrected mask" if change.get("strokes") is not None else f"the colour {change.get('colour')}"
        return (render.message(f"{written.name} made again from the photo before its background, with {what}"),
                *self._view(list_projects(self.host.workspace()), project.name, compare=written.name, request=request))

    # --- callbacks: face close-ups ------------------------------------------------------------------
    def start_closeups(self, project_name, selection):
        try:
            project = self._open(project_name)
            names = list(selection or []) or self._shots(project)
            if not names:
                raise ValueError(f"no half or full body shot with a face in {project.train_images}: select the "
                                 "images to make close-ups from")
            for name in names:
                curate.training_image(project, name)
            job = self._new_job("closeups", project.name)
        except ValueError as e:
            return render.message(str(e), error=True)
        threading.Thread(target=self._closeups, args=(job, project, names), daemon=True,
                         name="lora-trainer-closeups").start()
        return render.message(f"making face close-ups from {len(names)} image(s)")

    def _shots(self, project: Project) -> list[str]:
        """The training images the audit calls half or full body shots."""
        if not project.train_images.is_dir():
            return []
        report = self._audit(project.train_images)
        return [i.name for i in report.images if i.shot in ("half body", "full body")
                and curate.closeup_shot(i.name) is None]

    def _closeups(self, job: _Job, project: Project, names: list[str]) -> None:
        def progress(done: int, total: int, source: str) -> None:
            job.done, job.total, job.current = done, total, source

        job.total = len(names)
        try:
            if self.face_detector is None:
                self.face_detector = HaarFaceDetector()
            results = curate.make_closeups(project, names, detector=self.face_detector, progress=progress,
                                           stop=job.stop)
            made = [r for r in results if r.closeup]
            job.names = [r.closeup for r in made]
            job.rows = [[r.shot, "close-up" if r.closeup else "not made",
                         f"-> {r.closeup}" + (f" ({r.reason})" if r.reason else "") if r.closeup else r.reason]
                        for r in results]
            job.summary = (f"{'stopped: ' if job.stop.is_set() else ''}{len(made)} close-up(s) made from "
                           f"{len(names)} image(s), shown under Face close-ups and selected: review them "
                           "(Exclude selected drops one), then tag them with the others")
        except Exception as e:  # an unreadable original names itself; what is done stays
            job.error = str(e) or type(e).__name__
        job.finished = True

    def select_closeup(self, project_name, selection, event: gr.SelectData):
        try:
            names = [path.name for path, _ in curate.closeup_images(self._open(project_name))]
        except (ValueError, OSError):
            return gr.update(), gr.update(selected_index=NO_HIGHLIGHT)
        return _toggled(selection, names, event), gr.update(selected_index=NO_HIGHLIGHT)

    def _new_job(self, kind: str, project: str) -> _Job:
        with self._lock:
            if self._job is not None and not self._job.finished:
                raise ValueError(f"{self._job.status()}: wait for it (or Stop it)")
            self._jobs += 1
            self._job = _Job(kind, project)
            return self._job

    def stop(self):
        job = self._job
        if job is None or job.finished:
            return render.message("nothing to stop")
        job.stop.set()
        return render.message("stopping after the file in hand; what is done stays")

    def poll(self, request: gr.Request = None):
        """The job's progress; its report and the page's images again once when it ends."""
        job = self._job
        keep = [gr.update()] * len(self.view_outputs())
        if job is None:
            return "", gr.update(), *keep
        status = render.job_line(job.status(), job.done, job.total, not job.finished, error=bool(job.error))
        page = self._page(request)
        if not job.finished or page.shown_job == self._jobs:
            return status, gr.update(), *keep
        page.shown_job = self._jobs
        compare = job.names[0] if job.names and job.kind == "background" else None
        selection = job.names if job.kind == "closeups" else job.keep_selection
        name = page.project or job.project
        return (status, job.rows, *self._view(list_projects(self.host.workspace()), name, selection=selection,
                                              compare=compare, request=request))

    # --- callbacks: selection, exclude, restore ------------------------------------------------------
    def select_image(self, project_name, selection, event: gr.SelectData):
        try:
            names = self._names(self._open(project_name))
        except (ValueError, OSError):
            return gr.update(), gr.update(selected_index=NO_HIGHLIGHT)
        return _toggled(selection, names, event), gr.update(selected_index=NO_HIGHLIGHT)

    def select_all(self, project_name):
        try:
            return gr.update(value=self._names(self._open(project_name)))
        except (ValueError, OSError):
            return gr.update()

    def exclude(self, project_name, selection, request: gr.Request = None):
        try:
            project = self._open(project_name)
            if not selection:
                raise ValueError("select the images to exclude first (click them in the gallery)")
            moved = curate.exclude_images(project, list(selection))
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(f"excluded {len(moved)} image(s): moved to {curate.excluded_folder(project)} "
                               "(Restore puts them back)"),
                *self._view(list_projects(self.host.workspace()), project.name, request=request))

    def restore(self, project_name, names, request: gr.Request = None):
        try:
            project = self._open(project_name)
            if not names:
                raise ValueError("choose the excluded images to restore")
            back = curate.restore_images(project, list(names))
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(f"restored {len(back)} image(s) into {project.train_images}"),
                *self._view(list_projects(self.host.workspace()), project.name, request=request))

    # --- callbacks: background comparison ------------------------------------------------------------
    def show_compare(self, project_name, name):
        try:
            return self._compare_values(self._open(project_name), name)
        except ValueError:
            return None, None, None

    def keep_original(self, project_name, name, request: gr.Request = None):
        try:
            project = self._open(project_name)
            if not name:
                raise ValueError("choose the image whose original to keep")
            curate.keep_original(project, name)
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(f"{name}: the image without the replaced background is back in the training folder"),
                *self._view(list_projects(self.host.workspace()), project.name, request=request))

    def _compare_values(self, project: Project, name: str | None) -> tuple:
        if not name:
            return None, None, None
        before = curate.before_background(project, name) or curate.source_of(project, name)
        mask = curate.background_mask(project, name)
        now = project.train_images / Path(name).name
        return (str(before) if before else None, str(now) if now.is_file() else None, str(mask) if mask else None)

    # --- callbacks: the crop editor -----------------------------------------------------------------
    def show_crop(self, project_name, name, request: gr.Request = None):
        """The original with the whole image as its box (the fields filled); the pending corner dropped."""
        page = self._page(request)
        page.crop_name, page.corner = name or "", None
        return self._crop_shown(project_name, name, None, "click two opposite corners of the crop on the image")

    def crop_click(self, project_name, name, left, top, right, bottom, event: gr.SelectData,
                   request: gr.Request = None):
        """The first click sets one corner (kept in the page), the second the opposite one."""
        page = self._page(request)
        try:
            im = curate.original(self._open(project_name), self._crop_name(name))
        except (ValueError, OSError) as e:
            return None, *[gr.update()] * 4, render.message(str(e), error=True)
        scale = crop_preview(im, None)[1]
        x, y = (min(max(0, round(v * scale)), side) for v, side in zip(event.index, im.size))
        if page.corner is None or page.crop_name != name:
            page.crop_name, page.corner = name, (x, y)
            shown = crop_preview(im, box_of(left, top, right, bottom), page.corner)[0]
            return shown, *[gr.update()] * 4, render.message(f"one corner at {x}, {y}: click the opposite corner")
        (x0, y0), page.corner = page.corner, None
        box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
        return crop_preview(im, box)[0], *box, render.message(f"box {box}: Apply the crop to prepare {name} with it")

    def face_crop(self, project_name, name, request: gr.Request = None):
        return self._start_box(project_name, name, "face", request)

    def subject_crop(self, project_name, name, request: gr.Request = None):
        return self._start_box(project_name, name, "subject", request)

    def _start_box(self, project_name, name, kind: str, request):
        self._page(request).corner = None
        try:
            project, name = self._open(project_name), self._crop_name(name)
            if kind == "face":
                if self.face_detector is None:
                    self.face_detector = HaarFaceDetector()
                box = curate.face_box(project, name, self.face_detector)
                why = f"{name}: no face found in its original: drag a box by two clicks"
            else:
                box = curate.mask_box(project, name)
                why = (f"{name}: no subject mask: replace the background first (Background, above), or drag "
                       "a box by two clicks") if curate.background_mask(project, name) is None else \
                    f"{name}: its mask is empty: drag a box by two clicks"
        except (ValueError, OSError) as e:
            return gr.update(), *[gr.update()] * 4, render.message(str(e), error=True)
        if box is None:
            return gr.update(), *[gr.update()] * 4, render.message(why, error=True)
        return self._crop_shown(project, name, box, f"{kind} box {box}: adjust it, then Apply the crop")

    def apply_crop(self, project_name, name, left, top, right, bottom, request: gr.Request = None):
        try:
            project, name = self._open(project_name), self._crop_name(name)
            box = box_of(left, top, right, bottom)
            if box is None:
                raise ValueError(f"{name}: fill the four box fields (or click two corners on the image)")
            written = curate.recrop(project, name, box)
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs()), gr.update()
        page = self._page(request)
        page.crop_name = written.name
        view = self._view(list_projects(self.host.workspace()), project.name, request=request)
        return (render.message(f"{written.name} prepared again from its original, cropped to {box}"), *view,
                self._crop_shown(project, written.name, box, "")[0])

    def _crop_shown(self, project, name, box, note: str) -> tuple:
        """The crop editor's image (the box drawn; none: the whole original) and fields, and `note`."""
        try:
            project = project if isinstance(project, Project) else self._open(project)
            im = curate.original(project, self._crop_name(name))
        except (ValueError, OSError) as e:
            return None, *[gr.update()] * 4, render.message(str(e), error=True)
        box = box or (0, 0, *im.size)
        return crop_preview(im, box)[0], *box, render.message(note) if note else gr.update()

    @staticmethod
    def _crop_name(name) -> str:
        if not name:
            raise ValueError("choose the image to crop")
        return name

    # --- callbacks: batch edits ----------------------------------------------------------------------
    def preview(self, project_name, name, sharpen, brightness, contrast, saturation, autolevel):
        """The image and the edited copy (in memory: nothing is written)."""
        try:
            project = self._open(project_name)
            if not name:
                raise ValueError("choose an image to preview")
            path = curate.training_image(project, name)
            edits = edits_of(sharpen, brightness, contrast, saturation, autolevel)
            after = apply_edits(decode(path).image, edits)
        except ImageProblem as e:
            return gr.update(), None, render.message(f"{name}: {e.reason}", error=True)
        except (ValueError, OSError) as e:
            return gr.update(), None, render.message(str(e), error=True)
        note = "no edit chosen: the image is unchanged" if edits.is_identity else "preview: nothing written"
        return str(path), after, render.message(note)

    def apply(self, project_name, selection, sharpen, brightness, contrast, saturation, autolevel):
        """The edits on the selection (none: all images), in the background with progress and Stop."""
        try:
            project = self._open(project_name)
            edits = edits_of(sharpen, brightness, contrast, saturation, autolevel)
            if edits.is_identity:
                raise ValueError("no edit chosen: move a slider or tick auto-level first")
            names = list(selection or []) or self._names(project)
            if not names:
                raise ValueError(f"no training images in {project.train_images}")
            for name in names:
                curate.training_image(project, name)
            job = self._new_job("edits", project.name)
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True)
        job.keep_selection = list(selection or [])
        threading.Thread(target=self._edits, args=(job, project, names, edits), daemon=True,
                         name="lora-trainer-edits").start()
        return render.message(f"editing {len(names)} image(s)")

    def _edits(self, job: _Job, project: Project, names: list[str], edits: Edits) -> None:
        def progress(done: int, total: int, path: str) -> None:
            job.done, job.total, job.current = done, total, path

        job.total = len(names)
        try:
            written = curate.edit_images(project, names, edits, progress=progress, stop=job.stop)
            job.names = [p.name for p in written]
            job.rows = [[p.name, "edited", ""] for p in written]
            job.summary = (f"{'stopped: ' if job.stop.is_set() else ''}edited {len(written)} of {len(names)} "
                           f"image(s) in {project.train_images} (the imported originals stay in sources/)")
        except ImageProblem as e:  # names the image; those before it are edited, it and the rest are not
            job.error = e.reason
        except Exception as e:
            job.error = str(e) or type(e).__name__
        job.finished = True

    # --- helpers -------------------------------------------------------------------------------------
    def _names(self, project: Project) -> list[str]:
        folder = project.train_images
        return [p.name for p in audit_list_images(folder)] if folder.is_dir() else []

    def _open(self, name: str | None) -> Project:
        return chosen_project(self.host, name)

    def _page(self, request: gr.Request | None) -> _Page:
        return self._pages.get(request)


def build_dataset_panel(host: Host) -> DatasetPanel:
    return DatasetPanel(host).build()
