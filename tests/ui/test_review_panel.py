"""The Review tab: its pure helpers in-process (the grid a form describes, the epochs ticked first, the
refusals), and in a real browser on the standalone UI (`python -m lora_trainer ui`, Debian's Chromium
through Playwright, the tiny model): render a 2x2 grid of two epochs' real LoRA files, see it and its
saved PNG, rate an epoch and find the rating again after a UI restart."""

from __future__ import annotations

import html
import importlib.util
import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from lora_trainer.demo.synthetic import make_character_dataset
from lora_trainer.demo.tiny_lora import write_tiny_lora
from lora_trainer.project import Project
from lora_trainer.review.candidates import Candidate
from lora_trainer.review.grid import grid_layout, load_grid_spec
from lora_trainer.review.spec import Column, LoraRef, RenderSettings
from lora_trainer.runs.lora_files import LoraFile
from lora_trainer.ui import review_panel as rp

_TRAIN_TAB = Path(__file__).with_name("test_train_tab.py")
_spec = importlib.util.spec_from_file_location("_train_tab_helpers", _TRAIN_TAB)
tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tt)

STAMP = "20260101120000"


# --- in-process: the panel's helpers ----------------------------------------------------------------

def _file(tmp_path: Path, epoch: int, step: int, kind: str = "epoch") -> LoraFile:
    return LoraFile(tmp_path / f"hero-{epoch:06d}.safetensors", "hero", kind, epoch, step, 0.0)


def test_build_spec_rows_are_prompts_or_weights():
    lora = Column("epoch 1 (step 4)", LoraRef(Path("/x/hero-000001.safetensors"), "hero-000001"), 1, 4)
    columns = [Column("no LoRA", None), lora]
    settings = rp.render_settings("ugly", "2", "5", "Euler a", "64", "64", " /m/tiny.safetensors ")
    assert settings == RenderSettings("ugly", 2, 5.0, "Euler a", "Automatic", 64, 64, "/m/tiny.safetensors")

    spec = rp.build_spec(columns, "a cat\n\n a dog \n", "", "1, 2", settings)
    assert [r.prompt for r in spec.rows] == ["a cat", "a dog"] and spec.seeds == [1, 2]
    assert len(spec.cells()) == 8

    spec = rp.build_spec(columns, "a cat\na dog", "0.5, 1", "7", settings)
    assert [(r.label, r.prompt, r.weight) for r in spec.rows] == [("weight 0.5", "a cat", 0.5),
                                                                   ("weight 1", "a cat", 1.0)]
    weights = [job.lora.weight for _, _, c, job in spec.cells() if c == 1]
    assert weights == [0.5, 1.0]


@pytest.mark.parametrize("prompts, weights, seeds, columns, message", [
    ("", "", "1", 1, "at least one prompt"),
    ("a", "", "", 1, "at least one seed"),
    ("a", "", "1, x", 1, "'x' is not a whole number"),
    ("a", "0.5, big", "1", 1, "'big' is not a number"),
    ("a", "", "1", 0, "tick at least one epoch"),
])
def test_build_spec_says_what_is_wrong(prompts, weights, seeds, columns, message):
    cols = [Column("no LoRA", None)] * columns
    with pytest.raises(ValueError, match=message):
        rp.build_spec(cols, prompts, weights, seeds, RenderSettings())


def test_render_settings_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        rp.render_settings("", 0, 5, "Euler", 64, 64, "")


def test_adetailer_is_off_unless_a_model_is_chosen_and_offered_only_where_the_host_has_it(tmp_path):
    import gradio as gr

    from lora_trainer.host import StandaloneHost

    assert rp.render_settings("", 2, 5, "Euler", 64, 64, "", "off").adetailer_model == ""
    assert rp.render_settings("", 2, 5, "Euler", 64, 64, "", "face_yolov8n.pt").adetailer_model == "face_yolov8n.pt"

    class WithADetailer(StandaloneHost):
        def adetailer_models(self):
            return ["face_yolov8n.pt", "mediapipe_face_full"]

    with gr.Blocks():
        standalone = rp.ReviewPanel(StandaloneHost(tmp_path), _Runner(active=False)).build()
        forge_like = rp.ReviewPanel(WithADetailer(tmp_path), _Runner(active=False)).build()
    assert standalone.adetailer.visible is False
    assert forge_like.adetailer.visible is True
    assert [value for _, value in forge_like.adetailer.choices] == ["off", "face_yolov8n.pt", "mediapipe_face_full"]


def test_epochs_ticked_first_are_the_candidates(tmp_path):
    files = [_file(tmp_path, 1, 4), _file(tmp_path, 2, 8), _file(tmp_path, 3, 12)]
    assert rp.preselect(files, [Candidate(2, "epoch 2: minimum")]) == [str(files[1].path)]
    assert rp.preselect(files, [Candidate(3, "a"), Candidate(1, "b")]) == [str(files[0].path), str(files[2].path)]
    assert rp.preselect(files, []) == [str(files[2].path)]  # no loss recorded: the last epoch
    assert rp.epoch_label(files[1]) == "epoch 2 (step 8)"
    assert rp.epoch_label(_file(tmp_path, 0, 3, "stop")) == "stopped at step 3 (epoch 0)"


def _write_events(run_dir: Path, losses: dict[int, float]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"event": "epoch", "time": 0.0, "epoch": e, "loss": loss, "step": 4 * e} for e, loss in losses.items()]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_candidates_come_from_the_newest_run_folder_of_the_output_name(tmp_path):
    log = tmp_path / "log"
    _write_events(log / f"hero{STAMP}", {1: 0.3, 2: 0.1, 3: 0.2})
    _write_events(log / "hero20250101120000", {1: 0.1, 2: 0.3, 3: 0.2})  # older
    _write_events(log / f"hero_v2{STAMP}", {1: 0.1, 2: 0.3, 3: 0.2})  # another output name
    run_dir = rp.run_dir_of(log, "hero")
    assert run_dir == log / f"hero{STAMP}"
    candidates = rp.candidates_for(run_dir)
    assert [c.epoch for c in candidates] == [2]
    assert "epoch 2" in rp.candidates_text(candidates)
    assert rp.run_dir_of(log, "other") is None


def test_captions_first_and_spread(tmp_path):
    project = Project(tmp_path / "p", "p").create()
    for i in range(6):
        (project.train_images / f"{i:03d}.txt").write_text(f"caption {i}\n")
    (project.train_images / "006.txt").write_text("caption 0")  # a repeat
    assert rp.project_captions(project) == ["caption 0", "caption 2", "caption 5"]
    assert rp.project_captions(project, most=1) == ["caption 0"]


class _Runner:
    """A training (or none) as TrainRunner.status() tells it."""

    def __init__(self, active: bool, project: str = "p", output_name: str = "other"):
        self.active, self.project, self.output_name = active, project, output_name

    def status(self, project=None):
        return SimpleNamespace(active=self.active, project=self.project, output_name=self.output_name)


class _TightHost:
    """A GPU with 3 GiB free beside the training."""

    def __init__(self, workspace: Path):
        self.root = workspace

    def workspace(self) -> Path:
        return self.root

    def render_memory(self):
        return 3 * 1024 ** 3, "cuda:0"

    def path_roots(self):
        return None  # a local server


def test_another_runs_grid_is_refused_while_a_training_leaves_no_room(tmp_path):
    Project(tmp_path / "p", "p").create()
    panel = rp.ReviewPanel(_TightHost(tmp_path), _Runner(active=True, output_name="other"))
    message = panel.start_render("p", "hero", [], True, "a", "", "1", "", 2, 5, "Euler", 64, 64, "")
    assert "GPU is busy training other" in message and "ends or is stopped" in message
    assert "3.0 GiB free on cuda:0, a render needs about 9.0 GiB" in message


def test_a_second_render_is_refused_while_one_runs(tmp_path, monkeypatch):
    from lora_trainer.host import StandaloneHost

    Project(tmp_path / "p", "p").create()
    panel = rp.ReviewPanel(StandaloneHost(tmp_path), _Runner(active=False))
    release = threading.Event()
    monkeypatch.setattr(rp.GridJob, "run", lambda job, host: release.wait(10))  # a grid that keeps rendering
    try:
        first = panel.start_render("p", "hero", [], True, "a", "", "1", "", 2, 5, "Euler", 64, 64, "m")
        assert "rendering 1 cells" in first
        second = panel.start_render("p", "hero", [], True, "a", "", "1", "", 2, 5, "Euler", 64, 64, "m")
        assert "a grid is rendering already" in second
    finally:
        release.set()


class _SlowHost:
    """Renders a grey 16 px cell per job, waiting for `go` before each; seed 2 fails."""

    name = "fake"

    def __init__(self, workspace: Path):
        self.root = workspace
        self.go = threading.Semaphore(0)
        self.published = []

    def workspace(self) -> Path:
        return self.root

    def checkpoints(self):
        return []

    def hub_cache(self):
        return self.root / "hub"  # the host's Hugging Face cache (Forge's models/diffusers)

    def publish_lora(self, path, project):
        self.published.append((Path(path).name, project))
        return f"published-{Path(path).stem}"

    def path_roots(self):
        return None  # a local server

    def render(self, job):
        from lora_trainer.review.spec import RenderError

        self.go.acquire(timeout=10)
        if job.seed == 2:
            raise RenderError("the host cannot load it")
        return Image.new("RGB", (16, 16), (120, 120, 120))


def _wait(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_stopped_grid_keeps_its_cells_and_lists_the_failed_one(tmp_path, write_lora):
    project = Project(tmp_path / "p", "p").create()
    write_lora(project.model, "hero-000001", 100, ss_output_name="hero", ss_epoch="1", ss_steps="4")
    host = _SlowHost(tmp_path)
    panel = rp.ReviewPanel(host, _Runner(active=False))
    lora = str(project.model / "hero-000001.safetensors")
    message = panel.start_render("p", "hero", [lora], True, "a cat", "", "1, 2, 3", "", 2, 5, "Euler", 16, 16, "m")
    assert "rendering 6 cells (2 columns x 1 rows x 3 seeds)" in message
    assert host.published == [("hero-000001.safetensors", "p")]
    assert panel._job.spec.columns[1].lora.name == "published-hero-000001"
    assert "cell 0/6" in panel.poll()[0]
    for _ in range(3):
        host.go.release()
    _wait(lambda: panel._job.done == 3)
    assert "cell 3/6, about" in panel.poll()[0]
    assert "stopping after" in panel.stop_render()
    host.go.release()
    _wait(lambda: panel._job.finished)
    status, grid, gallery, errors, chart, scores, params, *buttons = panel.poll()
    assert "cell 4/6" in status and "stopped" in status and "saved" in status
    saved = sorted((project.root / "review" / "hero").glob("*/grid.png"))
    assert len(saved) == 1 and str(saved[0]) in status
    assert grid.size == Image.open(saved[0]).size
    assert [caption for _, caption in gallery][0] == "grid" and len(gallery) == 1 + 2  # seed 1's two cells
    assert "Seed: 1" in gallery[1][1] and "<lora:published-hero-000001:1>" in gallery[2][1]
    assert "seed 2" in errors and "the host cannot load it" in errors
    assert params == "" and all(b["interactive"] is False for b in buttons)  # nothing picked yet
    assert chart is None and scores == ""  # not scored: the Render call did not ask for it
    assert panel.poll()[1:] == ({"__type__": "update"},) * 9  # the page shows it already
    assert "no grid is rendering" in panel.stop_render()


class _FaceHost(_SlowHost):
    """The astronaut's face with a LoRA, the cameraman's without (scikit-image's photos), each after `go`."""

    def render(self, job):
        from skimage import data

        self.go.acquire(timeout=10)
        if job.lora is None:
            return Image.fromarray(data.camera()).convert("RGB")
        return Image.fromarray(data.astronaut())


def test_a_scored_grid_shows_its_chart_and_its_pick_leads_the_candidates(tmp_path, write_lora):
    pytest.importorskip("skimage")
    from skimage import data

    project = Project(tmp_path / "p", "p").create()
    Image.fromarray(data.astronaut()).save(project.train_images / "a.png")
    (project.train_images / "a.txt").write_text("p, 1girl, solo\n")
    for epoch in (1, 2):
        write_lora(project.model, f"hero-{epoch:06d}", 100 + epoch, ss_output_name="hero", ss_epoch=str(epoch),
                   ss_steps=str(4 * epoch))
    _write_events(project.log / f"hero{STAMP}", {1: 0.3, 2: 0.1})  # the loss's candidate: epoch 2
    host = _FaceHost(tmp_path)
    panel = rp.ReviewPanel(host, _Runner(active=False))
    loras = [str(project.model / "hero-000001.safetensors")]
    panel.start_render("p", "hero", loras, True, "p, 1girl", "", "1", "", 2, 5, "Euler", 16, 16, "m",
                       score=True, tagger="tiny-demo")
    host.go.release()
    # the first cell is measured while the second waits to render
    _wait(lambda: panel._job.scorer is not None and len(panel._job.scorer.cells) == 1, timeout=60)
    assert not panel._job.finished and panel._job.done == 1
    host.go.release()
    _wait(lambda: panel._job.finished, timeout=60)
    status, grid, gallery, errors, chart, scores, *_ = panel.poll()
    assert panel._job.score_error == "" and "saved" in status
    assert chart.endswith("grid.scores.png") and Path(chart).is_file()
    assert "Suggested: epoch 1: the closest face (likeness 1.00) among epoch 1" in scores, scores
    assert "| no LoRA | 0.2" in scores  # the cameraman: another face
    assert "adherence: WD14 tagger" in scores and "tiny-wd14-tagger" in scores and "Training faces: 1 of 1 images." in scores
    # the scored pick comes before the loss's candidates, and is ticked with them
    candidates = rp.candidates_for(project.log / f"hero{STAMP}")
    assert [c.epoch for c in candidates][:2] == [1, 2]
    assert candidates[0].reason.endswith("(measured on the last scored grid)")
    # Score the grid shown again, with a face models folder that has none: named, the tags still measured
    chart2, text, candidates_md, message = panel.score_shown("tiny-demo", str(tmp_path))
    assert "scored 2 cells" in message and "likeness not measured:" in text and str(tmp_path) in text
    assert "no face found in the renders" in text  # nothing measured the faces this time
    assert candidates_md.startswith("Suggested: epoch 1: no face found")
    # a hub tagger is looked for in the host's cache (as the Captions panel does), not downloaded
    _chart, text, _candidates, message = panel.score_shown(rp.DEFAULT_MODEL, "")
    assert f"adherence not measured: WD14 tagger '{rp.DEFAULT_MODEL}' is not in the Hugging Face cache " \
           f"({tmp_path / 'hub'})" in html.unescape(text), text


def test_notes_table():
    from lora_trainer.review.notes import EpochNotes

    table = rp.notes_table({2: EpochNotes(2, 4, "sharp | eyes", True)})
    assert "| 2 | ★★★★ | ✓ | sharp \\| eyes |" in table


def _saved_run(project: Project, write_lora, name: str, stamp: str, modified: float, losses: dict[int, float],
               **settings) -> Path:
    from lora_trainer.config.settings import TrainConfig

    TrainConfig(output_name=name, output_dir=str(project.model), logging_dir=str(project.log),
                **settings).save_json(project.model / f"{name}.json")
    for epoch in losses:
        write_lora(project.model, f"{name}-{epoch:06d}", modified, ss_output_name=name, ss_epoch=str(epoch),
                   ss_steps=str(4 * epoch))
    _write_events(project.log / f"{name}{stamp}", losses)
    return project.log / f"{name}{stamp}"


def test_runs_table_marks_the_settings_that_changed(tmp_path, write_lora):
    from lora_trainer.review.compare import project_runs
    from lora_trainer.review.notes import save_note

    project = Project(tmp_path / "p", "p").create()
    old = _saved_run(project, write_lora, "hero", STAMP, 100, {1: 0.2, 2: 0.1, 3: 0.15}, network_dim=32,
                     network_alpha=16, max_train_epochs=3)
    _saved_run(project, write_lora, "hero_v2", "20260102120000", 200, {1: 0.3, 2: 0.25}, network_dim=24,
               network_alpha=12, max_train_epochs=3)
    save_note(old, 2, rating=4, note="good | likeness", chosen=True)
    from lora_trainer.review.scores import ColumnScore, GridScores, scores_json_text
    from lora_trainer.runs.layout import scores_file

    scored = [ColumnScore(f"epoch {e}", e, False, 2, 0, li, ad, 0.0) for e, li, ad in [(1, 0.4, 0.9), (3, 0.55, 0.8)]]
    scores_file(old).write_text(scores_json_text(GridScores(scored, [], 3, "epoch 3: the closest face")))
    grid = project.review / "hero" / "20260101-120000" / "grid.png"
    grid.parent.mkdir(parents=True)
    Image.new("RGB", (900, 300), (200, 10, 10)).save(grid)
    thumbnails = rp.grid_thumbnails(project.review, ["hero", "hero_v2"])
    assert list(thumbnails) == ["hero"] and thumbnails["hero"].startswith("data:image/png;base64,")
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(thumbnails["hero"].split(",", 1)[1]))) as small:
        assert small.size == (2 * rp.THUMBNAIL_PX, round(2 * rp.THUMBNAIL_PX / 3))
    table = rp.runs_table(project_runs(project), thumbnails).splitlines()
    assert table[0] == ("| run | network_dim | network_alpha | epochs | final loss | best loss (epoch) "
                        "| scored pick (likeness, adherence) | chosen | rating | note | grid |")
    assert table[2] == "| hero_v2 | **24** | **12** | 1, 2 | 0.2500 | 0.2500 (2) |  |  |  |  |  |"
    assert table[3].startswith("| hero | 32 | 16 | 1-3 | 0.1500 | 0.1000 (2) | 3 (0.55, 0.80) | 2 | ★★★★ "
                               "| good \\| likeness | "
                               f'<img src="{thumbnails["hero"]}" alt="last grid of hero" width="160"> |')
    assert len(table) == 4
    assert "No runs in this project yet" in rp.runs_table([])
    one = rp.runs_table(project_runs(project)[1:])
    assert "| hero | 1-3 |" in one and "Only one run so far" in one


def test_runs_side_by_side_in_the_panel_follow_the_project(tmp_path, write_lora):
    import gradio as gr

    from lora_trainer.host import StandaloneHost

    first, second = Project(tmp_path / "a", "a").create(), Project(tmp_path / "b", "b").create()
    _saved_run(first, write_lora, "hero", STAMP, 100, {1: 0.2}, network_dim=32)
    _saved_run(first, write_lora, "hero_v2", "20260102120000", 200, {1: 0.3}, network_dim=16)
    with gr.Blocks():
        panel = rp.ReviewPanel(StandaloneHost(tmp_path), _Runner(active=False)).build()
    outputs = panel.view_outputs()
    runs = outputs.index(panel.runs)
    assert len(panel._form()) == rp.FORM_INPUTS and len(panel._cell_outputs()) == rp.CELL_OUTPUTS
    assert panel.runs.elem_id == "lora_trainer_review_runs"
    shown = panel.refresh(None, None, "")
    assert len(shown) == len(outputs)
    assert "| hero_v2 | **16** |" in shown[runs] and "| hero | 32 |" in shown[runs]
    assert shown[outputs.index(panel.next_run)]["choices"] == ["hero_v2", "hero"]  # "New run from this one"
    assert "No runs in this project yet" in panel.open_project("b")[runs]
    _saved_run(second, write_lora, "solo", STAMP, 100, {1: 0.4, 2: 0.35})
    table = panel.refresh("b", None, "")[runs]  # Refresh reads the files again
    assert "| solo | 1, 2 | 0.3500 | 0.3500 (2) |" in table
    assert panel.open_project(None)[runs] == ""  # no project chosen: no table

    # The page's load and the tab's select both answer when the tab opens at once: the second
    # answer leaves the epochs the user ticked meanwhile; a new file sets them again.
    epochs = outputs.index(panel.epochs)
    assert panel.refresh("b", None, "")[epochs]["choices"]
    assert panel.refresh("b", None, "")[epochs] == gr.update()
    _saved_run(second, write_lora, "solo", STAMP, 100, {1: 0.4, 2: 0.35, 3: 0.3})
    assert len(panel.refresh("b", None, "")[epochs]["choices"]) == 3
    # ... and leaves the prompts the page holds (a refresh answering while the user types would put back
    # the text it was sent); empty prompts get the project's captions
    prompts = outputs.index(panel.prompts)
    assert panel.refresh("b", None, "a prompt being typed")[prompts] == gr.update()
    assert isinstance(panel.refresh("b", None, "")[prompts], str)


# --- in the browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_sdxl):
    from lora_trainer.config.presets import PRESETS
    from lora_trainer.runs.runner import config_for_project

    root = tmp_path_factory.mktemp("review_ws")
    (root / "models").mkdir()
    model = root / "models" / "tiny_sdxl.safetensors"
    shutil.copy(tiny_sdxl.single_file, model)
    make_character_dataset(root / "hero" / "img", name="hero", count=8, size=64, repeats=1, seed=0)
    project = Project(root / "hero", "hero").create()
    config_for_project(project, {**PRESETS["CPU smoke test"], "output_name": "hero"}, str(model)) \
        .save_json(project.config_file)
    make_lora(tiny_sdxl, project.model / "hero-000001.safetensors", 1, 4)
    make_lora(tiny_sdxl, project.model / "hero-000002.safetensors", 2, 8)
    _write_events(project.log / f"hero{STAMP}", {1: 0.3, 2: 0.1, 3: 0.2})
    return root


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright")
    if not tt.CHROMIUM.exists():
        pytest.skip(f"{tt.CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(tt.CHROMIUM), args=tt.CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_review(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 2000})
    context.route(lambda u: not u.startswith("http://127.0.0.1"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_role("tab", name="Review").click()
    page.wait_for_function("document.querySelector('#lora_trainer_review_project input').value === 'hero'")
    page.wait_for_function("document.querySelectorAll('#lora_trainer_review_epochs input').length === 2")
    # Both the page load and the tab's click refresh the panel: a field typed into before the later one
    # answers would be reset by it (gradio marks the outputs of an event in flight as pending).
    page.wait_for_function("!document.querySelector('#lora_trainer_review_prompts .pending')")
    return context, page


def set_number(page, elem_id: str, value: str) -> None:
    page.fill(f"#{elem_id} input", value)
    page.keyboard.press("Tab")


@pytest.mark.slow
def test_render_a_grid_rate_an_epoch_and_see_it_after_a_restart(browser, workspace, tiny_sdxl, tmp_path):
    project = workspace / "hero"
    server, url = tt.start_ui(workspace, tiny_sdxl.config_dir, workspace / "ui1.log")
    try:
        context, page = open_review(browser, url)
        # Preselected: the loss minimum (epoch 2) and the baseline; its reason shown.
        epochs = page.locator("#lora_trainer_review_epochs")
        assert not epochs.get_by_label("epoch 1 (step 4)").is_checked()
        assert epochs.get_by_label("epoch 2 (step 8)").is_checked()
        assert page.locator("#lora_trainer_review_baseline input").is_checked()
        assert "local minimum of loss/epoch" in tt.text_of(page, "lora_trainer_review_candidates")
        assert page.input_value("#lora_trainer_review_model textarea") == str(workspace / "models" /
                                                                               "tiny_sdxl.safetensors")
        prompts = page.input_value("#lora_trainer_review_prompts textarea").splitlines()
        captions = [p.read_text().strip() for p in sorted((project / "img" / "1_hero").glob("*.txt"))]
        assert prompts and prompts[0] == captions[0] and len(prompts) <= 3
        assert page.input_value("#lora_trainer_review_steps input") == "20"
        assert page.input_value("#lora_trainer_review_width input") == "64"  # the size the run trained at

        epochs.get_by_label("epoch 1 (step 4)").check()
        page.locator("#lora_trainer_review_baseline input").uncheck()
        page.fill("#lora_trainer_review_prompts textarea", prompts[0])
        page.fill("#lora_trainer_review_seeds textarea", "1, 2")
        set_number(page, "lora_trainer_review_steps", "2")
        assert page.locator("#lora_trainer_review_score input").is_checked()  # scored unless unticked
        page.click("#lora_trainer_review_scoring_box button")
        page.fill("#lora_trainer_review_tagger textarea", "tiny-demo")
        page.click("#lora_trainer_review_render")
        tt.wait_for_text(page, "lora_trainer_review_message", "rendering 4 cells")
        page.wait_for_function("document.getElementById('lora_trainer_review_progress').innerText"
                               ".includes('saved')", timeout=240_000)
        progress = tt.text_of(page, "lora_trainer_review_progress")
        assert "cell 4/4" in progress and "error" not in progress, progress
        page.wait_for_selector("#lora_trainer_review_grid img")
        page.wait_for_function("document.querySelectorAll('#lora_trainer_review_gallery img').length >= 5")
        grids = sorted((project / "review" / "hero").glob("*/grid.png"))
        assert len(grids) == 1 and str(grids[0]) in progress
        spec = load_grid_spec(grids[0])
        assert [c.label for c in spec.columns] == ["epoch 1 (step 4)", "epoch 2 (step 8)"]
        assert spec.seeds == [1, 2] and spec.settings.width == 64 and spec.settings.steps == 2
        cells = {(s, r, c): Image.new("RGB", (64, 64)) for s, r, c, _ in spec.cells()}
        layout, _ = grid_layout(spec, cells)
        with Image.open(grids[0]) as grid:
            assert grid.size == (layout.width, layout.height)
        cell_files = sorted((grids[0].parent / "grid").glob("*.png"))
        assert len(cell_files) == 4 and all(Image.open(p).size == (64, 64) for p in cell_files)
        # no error listed (read once the poll has answered: while it is pending gradio puts its timer
        # text, "0.0s", inside the output)
        page.wait_for_function("!document.querySelector('#lora_trainer_review_errors .pending')")
        page.wait_for_function("document.getElementById('lora_trainer_review_errors').innerText.trim() === ''",
                               timeout=10_000)
        # Scored beside the grid: the chart, the table with the tiny model's faceless cells counted
        page.wait_for_selector("#lora_trainer_review_chart img")
        tt.wait_for_text(page, "lora_trainer_review_scores", "no face found in the renders")
        scores_text = tt.text_of(page, "lora_trainer_review_scores")
        assert "2/2" in scores_text and "adherence: WD14 tagger" in scores_text, scores_text
        assert grids[0].with_suffix(".scores.png").is_file() and grids[0].with_suffix(".scores.json").is_file()
        page.screenshot(path=str(tmp_path / "review_grid.png"), full_page=True)
        shutil.copy(tmp_path / "review_grid.png", "/tmp/review_grid.png")

        # Pick seed 1's epoch-2 cell (the gallery: grid, then the cells) and send it to the form.
        assert not page.locator("#lora_trainer_review_send_txt2img").is_visible()  # standalone: no txt2img
        assert page.locator("#lora_trainer_review_send_form").is_disabled()
        page.locator("#lora_trainer_review_gallery .thumbnail-item").nth(2).click()
        page.wait_for_function("document.querySelector('#lora_trainer_review_cell_params textarea').value"
                               ".includes('Seed: 1,')")
        params = page.input_value("#lora_trainer_review_cell_params textarea")
        assert params.startswith(f"{prompts[0]} <lora:hero-000002:1>"), params
        page.fill("#lora_trainer_review_seeds textarea", "99")
        set_number(page, "lora_trainer_review_width", "1024")
        page.click("#lora_trainer_review_send_form")
        tt.wait_for_text(page, "lora_trainer_review_message", "the picked cell's settings are in the form")
        assert page.input_value("#lora_trainer_review_seeds textarea") == "1"
        assert page.input_value("#lora_trainer_review_width input") == "64"
        assert page.input_value("#lora_trainer_review_prompts textarea") == prompts[0]
        assert epochs.get_by_label("epoch 2 (step 8)").is_checked()
        assert not epochs.get_by_label("epoch 1 (step 4)").is_checked()
        assert not page.locator("#lora_trainer_review_baseline input").is_checked()
        page.evaluate(tt.FAKE_CARD_REFRESH)
        page.click("#lora_trainer_review_preview")
        tt.wait_for_text(page, "lora_trainer_review_message", "hero-000002.preview.png is the preview of hero-000002")
        # the WebUI's LoRA cards are refreshed once, to show the new picture
        page.wait_for_function("window.cardRefreshes.txt2img === 1 && window.cardRefreshes.img2img === 1")
        assert (project / "model" / "hero-000002.preview.png").read_bytes() == \
            (grids[0].parent / "grid" / "s0_r0_c1.png").read_bytes()
        page.screenshot(path="/tmp/review_cell_sent.png", full_page=True)

        # A rating and a note for epoch 2.
        tt.choose(page, "lora_trainer_review_note_epoch", "2")
        page.locator("#lora_trainer_review_rating").get_by_label("4").check()
        page.fill("#lora_trainer_review_note textarea", "sharp eyes, good hair")
        page.locator("#lora_trainer_review_chosen input").check()
        page.click("#lora_trainer_review_save_note")
        tt.wait_for_text(page, "lora_trainer_review_notes", "sharp eyes, good hair")
        assert "saved the notes of epoch 2" in tt.text_of(page, "lora_trainer_review_message")
        context.close()
    finally:
        tt.end_ui(server)

    server, url = tt.start_ui(workspace, tiny_sdxl.config_dir, workspace / "ui2.log")
    try:
        context, page = open_review(browser, url)
        tt.wait_for_text(page, "lora_trainer_review_notes", "sharp eyes, good hair")
        # The last grid is shown again with its scores, its cells still to be picked; its suggestion
        # comes first among the candidates.
        page.wait_for_selector("#lora_trainer_review_grid img")
        page.wait_for_selector("#lora_trainer_review_chart img")
        assert "no face found in the renders" in tt.text_of(page, "lora_trainer_review_scores")
        candidates = tt.text_of(page, "lora_trainer_review_candidates")
        assert candidates.startswith("Suggested: epoch ") and "(measured on the last scored grid)" in candidates
        page.wait_for_function("document.querySelectorAll('#lora_trainer_review_gallery img').length >= 5")
        page.locator("#lora_trainer_review_gallery .thumbnail-item").nth(1).click()
        page.wait_for_function("document.querySelector('#lora_trainer_review_cell_params textarea').value"
                               ".includes('<lora:hero-000001:1>')")
        # Runs side by side: the run's last grid as a thumbnail, drawn (an inline image)
        page.click("#lora_trainer_review_runs_box button")
        page.wait_for_function("(() => { const img = document.querySelector('#lora_trainer_review_runs img');"
                               " return img && img.complete && img.naturalWidth > 0; })()")
        notes = tt.text_of(page, "lora_trainer_review_notes")
        assert "★★★★" in notes and "✓" in notes
        tt.choose(page, "lora_trainer_review_note_epoch", "2")
        page.wait_for_function("document.querySelector('#lora_trainer_review_note textarea').value"
                               " === 'sharp eyes, good hair'")
        assert page.locator("#lora_trainer_review_rating").get_by_label("4").is_checked()
        assert page.locator("#lora_trainer_review_chosen input").is_checked()
        page.screenshot(path="/tmp/review_after_restart.png", full_page=True)
        context.close()
    finally:
        tt.end_ui(server)


def test_pickers_are_kept_out_of_forges_ui_config(tmp_path):
    from lora_trainer.host import StandaloneHost
    from lora_trainer.ui import build_ui

    blocks = build_ui(StandaloneHost(workspace_dir=tmp_path))
    not_saved = {b.elem_id for b in blocks.blocks.values() if getattr(b, "do_not_save_to_config", False)}
    review = {e for e in not_saved if e.startswith("lora_trainer_review_")}
    assert review == {f"lora_trainer_review_{n}" for n in ("project", "run", "epochs", "prompts", "model",
                                                           "note_epoch", "note", "rating", "chosen", "cell_params",
                                                           "next_run", "width", "height")}


def make_lora(tiny_sdxl, path: Path, epoch: int, step: int) -> Path:
    """A kohya LoRA file with random non-zero U-Net weights and the trainer's metadata."""
    return write_tiny_lora(tiny_sdxl.diffusers_dir, path, seed=epoch, epoch=epoch, step=step)


class _PreviewHost(_SlowHost):
    def __init__(self, workspace: Path):
        super().__init__(workspace)
        self.previews = []

    def publish_preview(self, lora_file, project, image):
        self.previews.append((Path(lora_file).name, project, Path(image).read_bytes()))
        return Path(lora_file).with_name(Path(lora_file).stem + ".preview.png")


def _select(index: int):
    return SimpleNamespace(index=index)


def test_a_picked_cell_goes_to_the_form_or_becomes_the_preview_and_the_grid_is_back_after_a_restart(
        tmp_path, write_lora):
    """Gallery: [grid, baseline cell, epoch cell]. Picking the LoRA cell shows its parameters and
    enables its buttons; "Send to the form" puts its run, epoch, prompt, seed and settings in the form;
    "Use as preview" hands its PNG to the host. A new panel (a UI restart) shows the same grid and its
    cells keep working."""
    project = Project(tmp_path / "p", "p").create()
    write_lora(project.model, "hero-000001", 100, ss_output_name="hero", ss_epoch="1", ss_steps="4")
    write_lora(project.model, "hero-000002", 200, ss_output_name="hero", ss_epoch="2", ss_steps="8")
    host = _PreviewHost(tmp_path)
    panel = rp.ReviewPanel(host, _Runner(active=False))
    lora = str(project.model / "hero-000002.safetensors")
    panel.start_render("p", "hero", [lora], True, "a cat", "0.8", "7", "ugly", 3, 4.5, "Euler a", 16, 24, "base.safetensors",
                       "face_yolov8n.pt", "Karras")
    for _ in range(2):
        host.go.release()
    _wait(lambda: panel._job.finished)
    panel.poll()
    assert "pick a cell" in panel.send_to_form()[-1] and "pick a cell" in panel.use_as_preview()

    params, send, txt2img, preview = panel.pick_cell(_select(2))
    assert params.startswith("a cat <lora:published-hero-000002:0.8>\nNegative prompt: ugly\nSteps: 3, Sampler: Euler a, "
                             "Schedule type: Karras")
    assert "Seed: 7, Size: 16x24, Model: base, ADetailer model: face_yolov8n.pt" in params
    assert send["interactive"] and txt2img["interactive"] and preview["interactive"]
    form = panel.send_to_form()
    (project_, run, epochs, baseline, prompts, weights, seeds, negative, steps, cfg, sampler, width, height,
     model, adetailer, scheduler, message) = form
    assert project_["value"] == "p" and run["value"] == "hero" and epochs["value"] == [lora]
    assert [value for _, value in epochs["choices"]] == [str(project.model / "hero-000001.safetensors"), lora]
    assert (baseline, prompts, weights, seeds, negative, steps, cfg, sampler, width, height, model, adetailer,
            scheduler) == (False, "a cat", "0.8", "7", "ugly", 3, 4.5, "Euler a", 16, 24, "base.safetensors",
                           "face_yolov8n.pt", "Karras")
    assert "Render" in message

    assert "is the preview of published-hero-000002" in panel.use_as_preview()
    cell_png = sorted((project.review / "hero").glob("*/grid/s0_r0_c1.png"))[0]
    assert host.previews == [("hero-000002.safetensors", "p", cell_png.read_bytes())]

    assert panel.pick_cell(_select(1))[3]["interactive"] is False  # the baseline cell: no LoRA, no preview
    assert panel.send_to_form()[3] is True  # the baseline box ticked
    assert panel.pick_cell(_select(0))[0] == ""  # the grid itself is no cell

    restarted = rp.ReviewPanel(host, _Runner(active=False))
    view = restarted.open_run("p", "hero", "")
    grid, gallery = view[15], view[16]
    assert grid.size == Image.open(sorted((project.review / "hero").glob("*/grid.png"))[0]).size
    assert len(gallery) == 3 and "<lora:published-hero-000002:0.8>" in gallery[2][1]
    assert restarted.pick_cell(_select(2))[0] == params


def test_the_form_starts_with_the_hosts_txt2img_settings(tmp_path, write_lora):
    """Forge: its samplers and schedule types, and its txt2img's SDXL settings, size included;
    standalone: the diffusers renderer's samplers and the run's training size."""
    import gradio as gr

    from lora_trainer.config.settings import TrainConfig
    from lora_trainer.host import StandaloneHost
    from lora_trainer.review.spec import RenderOptions, RenderSettings

    project = Project(tmp_path / "p", "p").create()
    TrainConfig(max_resolution="832,1216").save_json(project.config_file)
    write_lora(project.model, "hero-000001", 100, ss_output_name="hero", ss_epoch="1", ss_steps="4")

    class ForgeLike(StandaloneHost):
        def render_options(self):
            return RenderOptions(("Euler a", "DPM++ 2M SDE"), ("Automatic", "Karras", "Exponential"),
                                 RenderSettings(steps=25, cfg_scale=6.0, sampler="DPM++ 2M SDE", scheduler="Karras",
                                                width=896, height=1152), webui_size=True)

    with gr.Blocks():
        standalone = rp.ReviewPanel(StandaloneHost(tmp_path), _Runner(active=False)).build()
        forge_like = rp.ReviewPanel(ForgeLike(tmp_path), _Runner(active=False)).build()
    assert [v for _, v in forge_like.sampler.choices] == ["Euler a", "DPM++ 2M SDE"]
    assert (forge_like.sampler.value, forge_like.scheduler.value, forge_like.steps.value, forge_like.cfg.value) == (
        "DPM++ 2M SDE", "Karras", 25, 6.0)
    assert "DPM++ 2M SDE Karras" in [v for _, v in standalone.sampler.choices]
    outputs = standalone.view_outputs()
    width, height = outputs.index(standalone.width), outputs.index(standalone.height)
    view = standalone.open_run("p", "hero", "")
    assert (view[width], view[height]) == (832, 1216)  # standalone: the size the run trained at
    view = forge_like.open_run("p", "hero", "")
    assert view[width] == gr.update() and view[height] == gr.update()  # Forge: its txt2img's 896x1152 stays
    assert (forge_like.width.value, forge_like.height.value) == (896, 1152)


def test_the_review_size_defaults_to_the_size_the_run_trained_at():
    assert rp.training_size({"max_resolution": "832,1216"}) == (832, 1216)
    assert rp.training_size({"max_resolution": "768"}) == (768, 768)
    assert rp.training_size({}) == (1024, 1024)


def test_new_run_from_this_one_fills_the_train_panel_with_the_next_step_and_the_dataset_changes(
        tmp_path, write_lora):
    """Run hero (8 epochs, rank 32, alpha 16, epoch 4 chosen) -> the Train panel gets 6 epochs, rank
    16, alpha 8 at 1/2, the next free output name, the Train tab selected and a message naming the
    advice and the images changed since. Another project than the page's: opening it takes them too."""
    import gradio as gr

    from lora_trainer.host import StandaloneHost
    from lora_trainer.review.notes import save_note
    from lora_trainer.runs.resume import DATASET_FILE, dataset_record
    from lora_trainer.runs.runner import TrainRunner
    from lora_trainer.ui.form import FIELDS
    from lora_trainer.ui.train_panel import TrainPanel

    Project(tmp_path / "other", "other").create()
    project = Project(tmp_path / "p", "p").create()
    make_character_dataset(project.img, name="p", count=3, size=32, repeats=1, seed=0)
    old = _saved_run(project, write_lora, "hero", STAMP, 100, {e: 0.3 - 0.01 * e for e in range(1, 9)},
                     network_dim=32, network_alpha=16, max_train_epochs=8, train_data_dir=str(project.img))
    save_note(old, 4, rating=5, note="best", chosen=True)
    state = project.model / "hero-state"
    state.mkdir()
    (state / DATASET_FILE).write_text(json.dumps(dataset_record(project.img, ".txt")))
    removed = sorted((project.img / "1_p").glob("*.png"))[0]
    removed.unlink()

    host = StandaloneHost(tmp_path)
    runner = TrainRunner(host)
    with gr.Blocks():
        with gr.Tabs() as tabs:
            train = TrainPanel(host, runner).build()
            review = rp.ReviewPanel(host, runner).build()
        review.wire_new_run(train, tabs)
    assert train.project.value == "other"  # the page shows another project in the Train tab
    answer = review.new_run("p", "hero", "1/2")
    outputs = [*train.new_run_outputs(), tabs, review.message]
    assert len(answer) == len(outputs)
    values = dict(zip((f.key for f in FIELDS), answer[2:2 + len(FIELDS)]))
    assert answer[0]["value"] == "p"
    assert (values["max_train_epochs"], values["network_dim"], values["network_alpha"]) == (6, 16, 8.0)
    assert values["output_name"] == "hero_v2"  # hero keeps its files
    assert answer[outputs.index(train.preset)] == "Custom"
    message = answer[outputs.index(train.message)]
    assert "New run from hero: max_train_epochs 8 -&gt; 6" in message and "1/2 of the rank" in message
    assert f"removed: 1_p/{removed.name}" in message
    assert answer[outputs.index(tabs)].selected == "train"

    opened = train.open_project("p", "Custom")  # the project dropdown's change event
    assert list(opened[6:6 + len(FIELDS)]) == list(answer[2:2 + len(FIELDS)])
    saved = train.open_project("p", "Custom")  # once: opening it again shows what it has saved
    again = dict(zip((f.key for f in FIELDS), saved[6:6 + len(FIELDS)]))
    assert again["network_dim"] == gr.update()  # p has no saved settings of its own: the form stays

    refused = review.new_run("p", "nobody", "3/4")
    assert "choose a run with saved settings" in refused[-1]


class _LiveHost(_SlowHost):
    def render_memory(self):
        return 64 * 1024 ** 3, "cuda:0"


def test_while_the_run_trains_its_grid_is_live_and_grows_a_column_per_saved_epoch(tmp_path, write_lora):
    """Render on the run that trains: the baseline, then each epoch file as it appears, the grid saved
    (and shown again) after each column; the status says live and why; when the training ends the
    grid ends with every epoch."""
    project = Project(tmp_path / "p", "p").create()
    host = _LiveHost(tmp_path)
    runner = _Runner(active=True, project="p", output_name="hero")
    panel = rp.ReviewPanel(host, runner)
    write_lora(project.model, "hero-000001", 100, ss_output_name="hero", ss_epoch="1", ss_steps="4")
    message = panel.start_render("p", "hero", [], True, "a cat", "", "1", "", 2, 5, "Euler", 16, 16, "")
    assert "live grid of hero" in message and "1 rows x 1 seeds a column" in message
    for _ in range(2):
        host.go.release()
    _wait(lambda: panel._job.version == 2)  # baseline, epoch 1
    status, grid, gallery, *_ = panel.poll()
    assert "live: 64.0 GiB free on cuda:0" in status
    assert [c.label for c in panel._job.spec.columns] == ["no LoRA", "epoch 1"] and len(gallery) == 3
    folder = panel._job.folder
    write_lora(project.model, "hero-000002", 200, ss_output_name="hero", ss_epoch="2", ss_steps="8")
    host.go.release()
    _wait(lambda: panel._job.version == 3)
    assert panel.poll()[2] is not None and len(panel._job.gallery) == 4  # shown again, one cell more
    assert load_grid_spec(folder / "grid.png").columns[-1].label == "epoch 2"
    runner.active = False  # the training ends
    _wait(lambda: panel._job.finished)
    assert [c.label for c in panel._job.spec.columns] == ["no LoRA", "epoch 1", "epoch 2"]
    assert sorted(p.name for p in (project.review / "hero").iterdir()) == [folder.name]  # one grid, grown
    assert host.published == [("hero-000001.safetensors", "p"), ("hero-000002.safetensors", "p")]


def test_a_live_grid_is_scored_after_each_column(tmp_path, write_lora):
    project = Project(tmp_path / "p", "p").create()
    host = _LiveHost(tmp_path)
    runner = _Runner(active=True, project="p", output_name="hero")
    panel = rp.ReviewPanel(host, runner)
    write_lora(project.model, "hero-000001", 100, ss_output_name="hero", ss_epoch="1", ss_steps="4")
    panel.start_render("p", "hero", [], True, "1girl, red shirt", "", "1", "", 2, 5, "Euler", 16, 16, "",
                       score=True, tagger="tiny-demo")
    for _ in range(2):
        host.go.release()
    _wait(lambda: panel._job.scores is not None and len(panel._job.scores.columns) == 2, timeout=30)
    assert [c.name for c in panel._job.scores.columns] == ["no LoRA", "epoch 1"]
    assert panel._job.scores.pick == 1
    write_lora(project.model, "hero-000002", 200, ss_output_name="hero", ss_epoch="2", ss_steps="8")
    host.go.release()
    _wait(lambda: len(panel._job.scores.columns) == 3, timeout=30)
    assert sorted(panel._job.scorer.cells) == [(0, 0, 0), (0, 0, 1), (0, 0, 2)]  # each cell measured once
    runner.active = False
    _wait(lambda: panel._job.finished)
    assert panel._job.score_error == ""
    status, grid, gallery, errors, chart, scores, *_ = panel.poll()
    assert chart.endswith("grid.scores.png") and "epoch 2 |" in scores
