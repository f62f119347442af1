"""The Captions panel: the guide's "Create the tags" in the tab, over a project's training folder.

Auto-tag with a WD14 tagger (captions/autotag.py) in the background with a progress line; put the
trigger word first and the tags in the guide's order; a tag frequency table (a click selects the
images that have the tag); remove / replace / add / dedupe on all images or the selection, with an
undo of the last batch action (captions/edit.py keeps the journal); and one image at a time: the image
large beside its caption, previous / next, and its token count against the run's limit. Every write
goes through the captions library, as the `tag` and `tags` commands do.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from lora_trainer.captions import tagops
from lora_trainer.captions.autotag import EXISTING, tag_folder
from lora_trainer.captions.edit import edit_captions, last_edit, set_caption, undo
from lora_trainer.captions.files import read_caption
from lora_trainer.captions.models import DEFAULT_MODEL, DEMO_MODEL, KNOWN_MODELS
from lora_trainer.captions.order import TagGroups, order_tags
from lora_trainer.captions.tagtext import join_caption, split_caption, tag_key
from lora_trainer.captions.tokens import TokenizerMissing, caption_tokens
from lora_trainer.host import Host, confine_path, looks_like_path
from lora_trainer.images import list_images
from lora_trainer.project import Project, list_projects
from lora_trainer.runs.runner import load_project_settings
from lora_trainer.ui import render
from lora_trainer.ui.pages import PageStates, chosen_project
from lora_trainer.ui.train_panel import keep_out_of_forge_ui_config

MODEL_CHOICES = [*KNOWN_MODELS.values(), DEMO_MODEL]
POLL_INTERVAL_S = 1.0
FREQUENCY_HEADERS = ["tag", "count", "group"]
DEFAULT_TOKEN_LIMIT = 75


# --- pure helpers (tested in-process) --------------------------------------------------------------

def folder_choices(project: Project) -> list[tuple[str, str]]:
    """The project's training folders (img/<repeats>_<name>/), labelled with their image counts."""
    return [(f"{folder.name} ({count} images)", str(folder)) for folder, count in project.training_folders().items()]


def hub_cache_folder(host: Host) -> Path:
    """The Hugging Face hub cache a tagger's files are looked for in: the host's (Forge's models/diffusers),
    else huggingface-hub's default (HF_HUB_CACHE / HF_HOME)."""
    folder = host.hub_cache()
    if folder is not None:
        return Path(folder)
    from huggingface_hub import constants  # only here: the host did not say

    return Path(constants.HF_HUB_CACHE)


def captions_of(folder: Path) -> list[tuple[Path, list[str]]]:
    return [(image, read_caption(image)) for image in list_images(folder)]


GUIDE_GROUPS = TagGroups()


def frequency_rows(captions: list[tuple[Path, list[str]]], groups: TagGroups = GUIDE_GROUPS) -> list[list[Any]]:
    return [[tag, count, groups.group_of(tag)] for tag, count in tagops.tag_frequency(tags for _, tags in captions)]


def images_with_tag(captions: list[tuple[Path, list[str]]], tag: str) -> list[str]:
    key = tag_key(tag)
    return [image.name for image, tags in captions if any(tag_key(t) == key for t in tags)]


def folder_summary(captions: list[tuple[Path, list[str]]]) -> str:
    missing = [image.name for image, tags in captions if not tags]
    text = f"{len(captions)} images, {len(captions) - len(missing)} captioned"
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        text += f"; without a caption: {shown}"
    return text


def project_groups(project: Project) -> TagGroups:
    """The project's tag groups (its tag_groups.json), else the guide's."""
    return TagGroups.load(project.tag_groups_file) if project.tag_groups_file.is_file() else GUIDE_GROUPS


def groups_text(groups: TagGroups) -> str:
    return json.dumps({k: list(v) for k, v in asdict(groups).items()}, indent=1, ensure_ascii=False)


def parse_groups(text: str) -> TagGroups:
    """Tag groups typed as JSON (the keys shown; any left out keep the guide's); ValueError says what is wrong."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"tag groups: not JSON ({e})") from None
    return TagGroups.from_dict(data)


def batch_edit(action: str, *, tags: str = "", old: str = "", new: str = "", front: bool = False,
               near: bool = False, trigger: str = "", groups: TagGroups = GUIDE_GROUPS) -> tuple[str, Any]:
    """(label, tags -> tags) for a batch action of the panel; ValueError says what is missing."""
    words = split_caption(tags)
    if action == "remove":
        if not words:
            raise ValueError("type the tags to remove (commas between; * matches anything)")
        return f"remove {', '.join(words)}", functools.partial(tagops.remove_tags, patterns=words)
    if action == "replace":
        if not old.strip():
            raise ValueError("type the tag to replace")
        return f"replace {old} -> {new}", functools.partial(tagops.replace_tag, old=old, new=new)
    if action == "add":
        if not words:
            raise ValueError("type the tags to add")
        return f"add {', '.join(words)}", functools.partial(tagops.add_tags, new=words, front=front)
    if action == "dedupe":
        return ("dedupe near" if near else "dedupe"), functools.partial(tagops.dedupe, near=near)
    if action in ("trigger", "order"):
        if not trigger.strip():
            raise ValueError("type the trigger word first")
        if action == "trigger":
            return f"trigger {trigger}", functools.partial(tagops.put_first, trigger=trigger)
        return "order", functools.partial(order_tags, groups=groups, trigger=trigger)
    raise ValueError(f"unknown action {action!r}")


def token_text(count: int | None, limit: int, problem: str = "") -> str:
    if count is None:
        return f'<span class="lora-trainer-tokens">{escape(problem)}</span>'
    over = count > limit
    kind = "lora-trainer-error" if over else "lora-trainer-tokens"
    note = f": over the limit, the trainer drops what is beyond {limit}" if over else ""
    return f'<span class="{kind}">{count} / {limit} tokens{escape(note)}</span>'


# --- the tagging job -------------------------------------------------------------------------------

@dataclass
class _TagJob:
    folder: Path
    stop: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    provider: str = ""
    summary: str = ""
    error: str = ""

    def status(self) -> str:
        if self.error:
            return f"tagging {self.folder.name} ended: {self.error}"
        if self.finished:
            return self.summary
        left = (time.monotonic() - self.started) / self.done * (self.total - self.done) if self.done else None
        eta = f", about {left:.0f} s left" if left is not None else " (loading the model)"
        stopping = " (stopping after this batch)" if self.stop.is_set() else ""
        return f"tagging {self.folder.name}: {self.done}/{self.total or '?'} images{eta}" + \
            (f" on {self.provider}" if self.provider else "") + stopping


@dataclass
class _Page:
    project: str = ""
    folder: str = ""
    shown_job: int = 0


class CaptionsPanel:
    def __init__(self, host: Host):
        self.host = host
        self._job: _TagJob | None = None
        self._jobs = 0
        self._lock = threading.Lock()
        self._pages: PageStates[_Page] = PageStates(_Page)

    # --- layout ---------------------------------------------------------------------------------
    def build(self) -> CaptionsPanel:
        with gr.Row():
            self.project = gr.Dropdown([], label="Project", elem_id="lora_trainer_captions_project", scale=2)
            self.folder = gr.Dropdown([], label="Training folder", elem_id="lora_trainer_captions_folder", scale=2)
            self.refresh_button = gr.Button("Refresh", elem_id="lora_trainer_captions_refresh", scale=0, min_width=100)
        self.summary = gr.HTML(elem_id="lora_trainer_captions_summary")
        with gr.Accordion("Auto-tag (WD14)", open=True, elem_id="lora_trainer_captions_tag_box"):
            with gr.Row():
                self.model = gr.Dropdown(MODEL_CHOICES, value=DEFAULT_MODEL, allow_custom_value=True, scale=3,
                                         label="Tagger", info=f"a hub id (its files cached in "
                                         f"{hub_cache_folder(self.host)}), or a folder with model.onnx and "
                                         "selected_tags.csv", elem_id="lora_trainer_captions_model")
                self.device = gr.Radio(["auto", "cpu", "cuda"], value="auto", label="Device", scale=1,
                                       elem_id="lora_trainer_captions_device")
            with gr.Row():
                self.general = gr.Slider(0.05, 0.95, value=0.35, step=0.01, label="General threshold",
                                         elem_id="lora_trainer_captions_general")
                self.character = gr.Slider(0.05, 1.0, value=0.85, step=0.01, label="Character threshold",
                                           elem_id="lora_trainer_captions_character")
                self.existing = gr.Radio(list(EXISTING), value="skip", label="Images with a caption",
                                         elem_id="lora_trainer_captions_existing")
            self.exclude = gr.Textbox(label="Leave out these tags", placeholder="simple background, white background",
                                      elem_id="lora_trainer_captions_exclude")
            with gr.Row():
                self.tag_button = gr.Button("Tag", variant="primary", elem_id="lora_trainer_captions_tag")
                self.tag_stop_button = gr.Button("Stop", variant="stop", elem_id="lora_trainer_captions_tag_stop")
            self.tag_status = gr.HTML(elem_id="lora_trainer_captions_tag_status")
        with gr.Row():
            self.trigger = gr.Textbox(label="Trigger word", info="first in every caption",
                                      elem_id="lora_trainer_captions_trigger", scale=2)
            self.trigger_button = gr.Button("Put it first", elem_id="lora_trainer_captions_put_first", scale=1)
            self.order_button = gr.Button("Order as the guide", elem_id="lora_trainer_captions_order", scale=1)
        with gr.Accordion("Tag groups (the guide's order)", open=False, elem_id="lora_trainer_captions_groups_box"):
            self.groups = gr.Code(groups_text(GUIDE_GROUPS), language="json", lines=12, interactive=True,
                                  label="subject, negative, pose, hands, camera: the tags in no group are "
                                  "switch on/off tags (* matches anything)", elem_id="lora_trainer_captions_groups")
            self.save_groups_button = gr.Button("Save the project's groups", elem_id="lora_trainer_captions_save_groups")
        self._batch_row()
        self.message = gr.HTML(elem_id="lora_trainer_captions_message")
        self.frequency = gr.Dataframe(headers=FREQUENCY_HEADERS, datatype=["str", "number", "str"],
                                      interactive=False, label="Tags (click one to select its images)",
                                      elem_id="lora_trainer_captions_frequency")
        self._image_editor()
        keep_out_of_forge_ui_config(self.project, self.folder, self.trigger, self.selection, self.image,
                                    self.caption)
        self.timer = gr.Timer(POLL_INTERVAL_S)
        self._wire()
        return self

    def _batch_row(self) -> None:
        with gr.Accordion("Batch edits", open=True, elem_id="lora_trainer_captions_batch_box"):
            self.selection = gr.CheckboxGroup([], label="Selected images (none: all)",
                                              elem_id="lora_trainer_captions_selection")
            with gr.Row():
                self.tags = gr.Textbox(label="Tags", placeholder="blurry, * background",
                                       elem_id="lora_trainer_captions_tags", scale=3)
                self.remove_button = gr.Button("Remove", elem_id="lora_trainer_captions_remove", scale=1)
                self.add_button = gr.Button("Add", elem_id="lora_trainer_captions_add", scale=1)
                self.front = gr.Checkbox(False, label="add in front", elem_id="lora_trainer_captions_front", scale=1)
            with gr.Row():
                self.old = gr.Textbox(label="Replace", elem_id="lora_trainer_captions_old", scale=2)
                self.new = gr.Textbox(label="with (empty: remove)", elem_id="lora_trainer_captions_new", scale=2)
                self.replace_button = gr.Button("Replace", elem_id="lora_trainer_captions_replace", scale=1)
            with gr.Row():
                self.near = gr.Checkbox(False, label="near duplicates too (hair / hairs)",
                                        elem_id="lora_trainer_captions_near")
                self.dedupe_button = gr.Button("Remove duplicate tags", elem_id="lora_trainer_captions_dedupe")
                self.undo_button = gr.Button("Undo the last batch edit", elem_id="lora_trainer_captions_undo")

    def _image_editor(self) -> None:
        with gr.Row():
            self.image_name = gr.Dropdown([], label="Image", elem_id="lora_trainer_captions_image_name", scale=3)
            self.previous_button = gr.Button("Previous", elem_id="lora_trainer_captions_previous", scale=1)
            self.next_button = gr.Button("Next", elem_id="lora_trainer_captions_next", scale=1)
        with gr.Row():
            self.image = gr.Image(type="filepath", interactive=False, label="Image", height=512,
                                  elem_id="lora_trainer_captions_image")
            with gr.Column():
                self.caption = gr.Textbox(label="Caption", lines=6, elem_id="lora_trainer_captions_caption")
                self.tokens = gr.HTML(elem_id="lora_trainer_captions_tokens")
                self.save_button = gr.Button("Save caption", elem_id="lora_trainer_captions_save")

    def view_outputs(self) -> list:
        return [self.project, self.folder, self.summary, self.frequency, self.selection, self.image_name,
                self.image, self.caption, self.tokens, self.groups]

    def _wire(self) -> None:
        views = self.view_outputs()
        self.project.input(self.open_project, [self.project], views)
        self.folder.input(self.open_folder, [self.project, self.folder], views)
        self.refresh_button.click(self.refresh, [self.project, self.folder], views)
        self.tag_button.click(self.start_tagging, [self.project, self.folder, self.model, self.device, self.general,
                                                   self.character, self.existing, self.exclude, self.trigger],
                              [self.message])
        self.tag_stop_button.click(self.stop_tagging, None, [self.message])
        # No inputs: gradio 4.40's page warns for every timer call that sends some (see TrainPanel).
        self.timer.tick(self.poll, None, [self.tag_status, *views], show_progress="hidden")
        batch = [self.project, self.folder, self.selection, self.tags, self.old, self.new, self.front, self.near,
                 self.trigger]
        for button, action in ((self.remove_button, "remove"), (self.add_button, "add"),
                               (self.replace_button, "replace"), (self.dedupe_button, "dedupe"),
                               (self.trigger_button, "trigger"), (self.order_button, "order")):
            button.click(functools.partial(self.batch, action), batch, [self.message, *views])
        self.save_groups_button.click(self.save_groups, [self.project, self.folder, self.groups],
                                      [self.message, *views])
        self.undo_button.click(self.undo_last, [self.project, self.folder], [self.message, *views])
        self.frequency.select(self.select_tag, [self.project, self.folder], [self.selection, self.tags, self.message])
        self.image_name.input(self.show_image, [self.project, self.folder, self.image_name],
                              [self.image, self.caption, self.tokens])
        self.previous_button.click(functools.partial(self.step_image, -1), [self.project, self.folder, self.image_name],
                                   [self.image_name, self.image, self.caption, self.tokens])
        self.next_button.click(functools.partial(self.step_image, 1), [self.project, self.folder, self.image_name],
                               [self.image_name, self.image, self.caption, self.tokens])
        self.caption.input(self.count_tokens, [self.project, self.caption], [self.tokens], show_progress="hidden")
        self.save_button.click(self.save_caption, [self.project, self.folder, self.image_name, self.caption],
                               [self.message, *views])

    def wire_page_load(self, blocks: gr.Blocks) -> None:
        blocks.load(self.refresh, [self.project, self.folder], self.view_outputs(), show_progress="hidden")

    # --- callbacks: the project and its folder ----------------------------------------------------
    def refresh(self, project: str | None, folder: str | None, request: gr.Request = None):
        projects = list_projects(self.host.workspace())
        if project not in projects:
            project, folder = (projects[0] if projects else None), None
        return self._view(projects, project, folder, request=request)

    def open_project(self, project: str | None, request: gr.Request = None):
        return self._view(list_projects(self.host.workspace()), project, None, request=request)

    def open_folder(self, project: str | None, folder: str | None, request: gr.Request = None):
        return self._view(list_projects(self.host.workspace()), project, folder, request=request)

    def _view(self, projects: list[str], name: str | None, folder: str | None, image: str | None = None,
              selection: list[str] | None = None, request: gr.Request | None = None):
        """The project's folder, its captions and tag counts, and one image; the page remembers which
        (its poll has no inputs)."""
        page = self._page(request)
        page.project, page.folder = name or "", folder or ""
        try:
            project = self._open(name)
        except ValueError:
            return (gr.update(choices=projects, value=None), gr.update(choices=[], value=None), "", [],
                    gr.update(choices=[], value=[]), gr.update(choices=[], value=None), None, "", "", gr.update())
        choices = folder_choices(project)
        folders = [value for _, value in choices]
        folder = folder if folder in folders else (folders[0] if folders else None)
        if folder is None:
            return (gr.update(choices=projects, value=project.name), gr.update(choices=[], value=None),
                    render.message(f"no training folder in {project.img}: add images first", error=True), [],
                    gr.update(choices=[], value=[]), gr.update(choices=[], value=None), None, "", "", gr.update())
        captions = captions_of(Path(folder))
        try:
            tag_groups = project_groups(project)
            groups = groups_text(tag_groups)
        except ValueError as e:  # a damaged tag_groups.json: said, and the guide's groups used
            tag_groups, groups = GUIDE_GROUPS, f"// {e}\n" + groups_text(GUIDE_GROUPS)
        names = [image.name for image, _ in captions]
        image = image if image in names else (names[0] if names else None)
        kept = [n for n in (selection or []) if n in names]
        page.folder = folder
        return (gr.update(choices=projects, value=project.name), gr.update(choices=choices, value=folder),
                escape(folder_summary(captions)), frequency_rows(captions, tag_groups),
                gr.update(choices=names, value=kept),
                gr.update(choices=names, value=image), *self._image_values(project, Path(folder), image), groups)

    # --- callbacks: auto-tag -------------------------------------------------------------------------
    def start_tagging(self, project_name, folder, model, device, general, character, existing, exclude, trigger):
        from lora_trainer.captions.tagger import TagSettings

        try:
            self._open(project_name)
            if not folder:
                raise ValueError("choose a training folder")
            settings = TagSettings(general_threshold=float(general), character_threshold=float(character),
                                   exclude=tuple(split_caption(exclude or "")))
            with self._lock:
                if self._job is not None and not self._job.finished:
                    raise ValueError("a tagging runs already: wait for it")
                self._jobs += 1
                job = self._job = _TagJob(Path(folder))
        except ValueError as e:
            return render.message(str(e), error=True)
        thread = threading.Thread(target=self._tag, args=(job, model, device, settings, existing, trigger),
                                  daemon=True, name="lora-trainer-tagging")
        thread.start()
        return render.message(f"tagging the images of {job.folder.name} with {model}")

    def _tag(self, job: _TagJob, model: str, device: str, settings, existing: str, trigger: str) -> None:
        from lora_trainer.captions.models import resolve_model
        from lora_trainer.captions.tagger import Tagger

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            model = (model or DEFAULT_MODEL).strip()
            # a folder or a file (confined); a hub id ("Owner/name") that is not on disk is not a path
            if model not in MODEL_CHOICES and model not in KNOWN_MODELS and (
                    looks_like_path(model) or Path(model).expanduser().exists()):
                confine_path(model, self.host.path_roots())
            tagger = Tagger(resolve_model(model, cache_dir=self.host.hub_cache()), device=device or "auto")
            job.provider = tagger.provider
            result = tag_folder(job.folder, tagger, settings, existing=existing or "skip",
                                trigger=(trigger or "").strip() or None, progress=progress, stop=job.stop)
            job.summary = result.summary() + "".join(f"; {e}" for e in result.errors)
        except Exception as e:  # a missing model names its files; any other failure ends the job
            job.error = str(e) or type(e).__name__
        job.finished = True

    def stop_tagging(self):
        job = self._job
        if job is None or job.finished:
            return render.message("no tagging to stop")
        job.stop.set()
        return render.message("stopping after the batch in hand: the captions written so far stay")

    def poll(self, request: gr.Request = None):
        """The tagging's progress; the page's captions again once when it ends."""
        job = self._job
        keep = [gr.update()] * len(self.view_outputs())
        if job is None:
            return "", *keep
        status = render.job_line(job.status(), job.done, job.total, not job.finished, error=bool(job.error))
        page = self._page(request)
        if not job.finished or page.shown_job == self._jobs:
            return status, *keep
        page.shown_job = self._jobs
        return status, *self._view(list_projects(self.host.workspace()), page.project, page.folder, request=request)

    # --- callbacks: batch edits ----------------------------------------------------------------------
    def batch(self, action, project_name, folder, selection, tags, old, new, front, near, trigger,
              request: gr.Request = None):
        try:
            project = self._open(project_name)
            if not folder:
                raise ValueError("choose a training folder")
            label, edit = batch_edit(action, tags=tags or "", old=old or "", new=new or "", front=bool(front),
                                     near=bool(near), trigger=trigger or "", groups=project_groups(project))
            result = edit_captions(folder, edit, label, only=list(selection) or None)
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(result.summary()),
                *self._view(list_projects(self.host.workspace()), project.name, folder, selection=selection,
                            request=request))

    def save_groups(self, project_name, folder, text, request: gr.Request = None):
        """The project's own tag groups, used by *Order as the guide* and the table's group column."""
        try:
            project = self._open(project_name)
            groups = parse_groups(text)
            groups.save(project.tag_groups_file)
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(f"saved {project.tag_groups_file}"),
                *self._view(list_projects(self.host.workspace()), project.name, folder, request=request))

    def undo_last(self, project_name, folder, request: gr.Request = None):
        try:
            self._open(project_name)
            if not folder:
                raise ValueError("choose a training folder")
            label = last_edit(folder)
            result = undo(folder)
        except (LookupError, ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(f"undid {label}: {result.summary()}"),
                *self._view(list_projects(self.host.workspace()), project_name, folder, request=request))

    def select_tag(self, project_name, folder, event: gr.SelectData):
        """The images that have the clicked tag are selected, and the tag goes in the Tags field (for
        Remove / Replace on them)."""
        row, column = event.index if isinstance(event.index, (list, tuple)) else (None, None)
        clicked = getattr(event, "value", None)
        try:
            captions = captions_of(Path(folder))
            if column == 0 and isinstance(clicked, str) and clicked.strip():
                tag = clicked.strip()  # the tag clicked, even if the folder changed since the table was drawn
            else:
                table = frequency_rows(captions, project_groups(self._open(project_name)))
                tag = table[row][0] if row is not None and 0 <= row < len(table) else None
        except (OSError, TypeError, ValueError) as e:
            return gr.update(), gr.update(), render.message(str(e), error=True)
        if tag is None:
            return gr.update(), gr.update(), ""
        names = images_with_tag(captions, tag)
        return (gr.update(value=names), tag,
                render.message(f"selected the {len(names)} images tagged {tag!r}; the tag is in Tags"))

    # --- callbacks: one image ------------------------------------------------------------------------
    def show_image(self, project_name, folder, name):
        try:
            return self._image_values(self._open(project_name), Path(folder), name)
        except (ValueError, TypeError):
            return None, "", ""

    def step_image(self, step: int, project_name, folder, name):
        try:
            project = self._open(project_name)
            names = [image.name for image in list_images(folder)]
        except (ValueError, OSError, TypeError):
            return gr.update(), None, "", ""
        if not names:
            return gr.update(value=None), None, "", ""
        index = (names.index(name) + step) % len(names) if name in names else 0
        return gr.update(value=names[index]), *self._image_values(project, Path(folder), names[index])

    def count_tokens(self, project_name, caption):
        try:
            project = self._open(project_name)
        except ValueError:
            return ""
        return self._tokens(project, caption or "")

    def save_caption(self, project_name, folder, name, caption, request: gr.Request = None):
        try:
            project = self._open(project_name)
            if not folder or not name:
                raise ValueError("choose an image")
            result = set_caption(folder, Path(folder) / name, split_caption(caption or ""))
        except (ValueError, OSError) as e:
            return render.message(str(e), error=True), *[gr.update()] * len(self.view_outputs())
        return (render.message(result.summary()),
                *self._view(list_projects(self.host.workspace()), project.name, folder, image=name, request=request))

    # --- helpers -------------------------------------------------------------------------------------
    def _image_values(self, project: Project, folder: Path, name: str | None) -> tuple:
        if not name:
            return None, "", ""
        image = folder / name
        caption = join_caption(read_caption(image))
        return str(image), caption, self._tokens(project, caption)

    def _tokens(self, project: Project, caption: str) -> str:
        try:
            limit = int(load_project_settings(project).get("max_token_length") or DEFAULT_TOKEN_LIMIT)
        except Exception:
            limit = DEFAULT_TOKEN_LIMIT
        try:
            return token_text(caption_tokens(caption, self.host.sdxl_config_dir()), limit)
        except (TokenizerMissing, OSError, ValueError) as e:
            return token_text(None, limit, str(e))

    def _open(self, name: str | None) -> Project:
        return chosen_project(self.host, name)

    def _page(self, request: gr.Request | None) -> _Page:
        return self._pages.get(request)


def build_captions_panel(host: Host) -> CaptionsPanel:
    return CaptionsPanel(host).build()
