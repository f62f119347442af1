"""The Train tab in a real browser: `python -m lora_trainer ui` in a subprocess on a free port, driven by
Debian's Chromium through Playwright. The tiny model sits in the workspace's models/ folder and the
synthetic dataset in a project; a second project holds LoRA files from earlier runs (as after a
restart). Everything stays on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lora_trainer.demo.synthetic import make_character_dataset
from lora_trainer.host import subprocess_env
from lora_trainer.project import Project

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
# Noticed: the Dataset panel's mask editor (gradio's ImageEditor, pixi.js) draws its WebGL canvas at every
# animation frame even when hidden; without a GPU, Chromium's software GL takes both cores (175% CPU on
# an idle page), which slows every browser test here.


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed "
                                 "(Debian package 'chromium'; .ci/run installs it)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the UI exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the UI did not answer at {url} within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_sdxl, write_lora):
    root = tmp_path_factory.mktemp("workspace")
    (root / "models").mkdir()
    shutil.copy(tiny_sdxl.single_file, root / "models" / "tiny_sdxl.safetensors")
    make_character_dataset(root / "myLoRA" / "img", name="myLoRA", count=8, size=64, repeats=1, seed=0)
    # "older": two earlier runs, "older" (two files) then "older_v2" (stopped at step 4)
    older = Project(root / "older", "older").create()
    write_lora(older.model, "older-000001", 100, ss_output_name="older", ss_epoch="1", ss_steps="8")
    write_lora(older.model, "older", 101, ss_output_name="older", ss_epoch="1", ss_steps="8")
    write_lora(older.model, "older_v2-step00000004", 200, ss_output_name="older_v2", ss_epoch="0", ss_steps="4")
    return root


def start_ui(workspace: Path, config_dir: Path, log: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m lora_trainer ui` on a free port, serving; in its own process group (with any trainer
    it starts), which `end_ui` ends. `env`: more variables for it and its trainers."""
    port = free_port()
    command = [sys.executable, "-m", "lora_trainer", "ui", "--dir", str(workspace),
               "--model-config-dir", str(config_dir), "--port", str(port)]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=subprocess_env({"GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, server, log)
    except BaseException:
        end_ui(server)
        raise
    return server, url


def end_ui(server: subprocess.Popen) -> None:
    """End the UI and every process of its group (a trainer it started, even after the UI itself ended)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def ui_url(workspace, tiny_sdxl):
    server, url = start_ui(workspace, tiny_sdxl.config_dir, workspace / "ui.log")
    try:
        yield url
    finally:
        end_ui(server)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_url.rstrip("/"))
    # Nothing leaves the machine (gradio's page asks for web fonts and a CDN script).
    context.route(lambda url: not url.startswith("http://127.0.0.1"), lambda route: route.abort())
    yield open_page(context, ui_url)
    context.close()


def open_page(context, url: str, init_script: str = "", replace=None, timeout_ms: float = 30_000):
    """A page on the UI (`replace`: a page to close first, so a page left behind does not poll the
    server and load the 2 CPUs for the rest of the test)."""
    if replace is not None:
        replace.close()
    page = context.new_page()
    page.set_default_timeout(30_000)
    if init_script:
        page.add_init_script(init_script)
    page.goto(url, timeout=timeout_ms)
    # while a CPU run takes both cores, a page can take a minute to appear
    page.get_by_role("tab", name="Train").click(timeout=timeout_ms)
    page.wait_for_selector("#lora_trainer_start")
    # The page-load event (the project as it is now) has answered: until then gradio keeps its
    # invisible progress text inside the outputs, and innerText would include it.
    page.wait_for_function("!document.querySelector('#lora_trainer_project_info .pending')")
    return page


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


# An output's text as shown: while an event that writes it is pending (the status poll, every second),
# gradio puts its invisible progress text ("0.0s", "queue: 1/1") in the element beside the content.
SHOWN_TEXT = "(e) => (e.querySelector('.prose') || e).innerText"


def text_of(page, elem_id: str) -> str:
    return page.eval_on_selector(f"#{elem_id}", SHOWN_TEXT)


def wait_for_text(page, elem_id: str, text: str, timeout: float | None = None) -> None:
    """Wait until the element's text holds `text`; on a timeout the failure shows what it held."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("([id, text]) => document.getElementById(id).innerText.includes(text)",
                               arg=[elem_id, text], timeout=timeout)
    except PlaywrightTimeout:
        held = page.evaluate("(id) => document.getElementById(id)?.innerText", elem_id)
        raise AssertionError(f"#{elem_id} never held {text!r}; it holds {held!r}") from None


def output_name(page) -> str:
    return page.input_value("#lora_trainer_output_name textarea")


def test_config_error_names_the_key_in_the_page(page, workspace):
    choose(page, "lora_trainer_preset", "CPU smoke test")
    page.wait_for_function("document.querySelector('#lora_trainer_max_resolution textarea').value === '64,64'")
    page.fill("#lora_trainer_network_dim input", "0")
    page.keyboard.press("Tab")
    page.click("#lora_trainer_start")
    page.wait_for_function("document.querySelector('#lora_trainer_message').innerText.includes('network_dim')")
    assert "network_dim = 0: must be >= 1" in text_of(page, "lora_trainer_message")
    assert "Idle" in text_of(page, "lora_trainer_status")  # nothing was started
    assert not (workspace / "myLoRA" / "model").exists()


def test_train_two_epochs_from_the_page(page, workspace):
    assert page.input_value("#lora_trainer_project input") == "myLoRA"  # the workspace's only project
    images = workspace / "myLoRA" / "img" / "1_myLoRA"
    assert f"Training images: {images} (8 image(s))." == text_of(page, "lora_trainer_project_info")
    choose(page, "lora_trainer_preset", "CPU smoke test")
    page.wait_for_function("document.querySelector('#lora_trainer_max_resolution textarea').value === '64,64'")
    choose(page, "lora_trainer_model", "tiny_sdxl.safetensors")
    page.fill("#lora_trainer_max_train_epochs input", "2")
    page.keyboard.press("Tab")
    page.click("#lora_trainer_start")

    page.wait_for_function("['Finished', 'Failed'].some(s => "
                           "document.querySelector('#lora_trainer_status').innerText.includes(s))",
                           timeout=400_000)  # 137 s alone here: the page's WebGL editor shares the 2 cores
    status = text_of(page, "lora_trainer_status")
    assert status.startswith("Finished"), f"{status}\n{page.input_value('#lora_trainer_log textarea')}"
    assert "started myLoRA" in text_of(page, "lora_trainer_message")
    saved = text_of(page, "lora_trainer_saved")
    model_dir = workspace / "myLoRA" / "model"
    for name in ("myLoRA-000001", "myLoRA-000002", "myLoRA"):
        assert f"{name}.safetensors" in saved and f"<lora:{name}:1>" in saved
        assert (model_dir / f"{name}.safetensors").is_file()
    assert f"tensorboard --logdir {workspace / 'myLoRA' / 'log'}" == page.input_value(
        "#lora_trainer_tensorboard textarea")
    assert (workspace / "myLoRA" / "myLoRA.json").is_file()  # the settings the run used
    # The trainer output as a terminal shows it: a progress bar's last redraw only (a bar line ends
    # where the trainer prints a line), and "saved ..." on a line of its own (it may follow a \r redraw).
    log = page.input_value("#lora_trainer_log textarea").splitlines()
    is_bar = [line.startswith("myLoRA:") for line in log]
    assert any(is_bar) and not any(a and b for a, b in zip(is_bar, is_bar[1:])), log
    assert all(".safetensors" not in line for line, bar in zip(log, is_bar) if bar), log
    assert f"saved {model_dir.resolve() / 'myLoRA-000002.safetensors'}" in log, log


def test_a_project_opens_with_its_saved_settings(page):
    """After the run above, myLoRA has saved settings: a new page (as after a restart) shows them, not the
    preset, with an output name no run used yet; so does choosing the project again."""
    def shows_saved_settings():
        page.wait_for_function("document.querySelector('#lora_trainer_max_train_epochs input').value === '2'")
        assert page.input_value("#lora_trainer_output_name textarea") == "myLoRA_v2"
        assert page.input_value("#lora_trainer_max_resolution textarea") == "64,64"
        assert page.input_value("#lora_trainer_model input") == "tiny_sdxl.safetensors"

    shows_saved_settings()
    choose(page, "lora_trainer_project", "older")  # no saved settings: the form stays as it is
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'older_v3'")
    choose(page, "lora_trainer_preset", "Realistic character (guide) - Apple")
    page.wait_for_function("document.querySelector('#lora_trainer_max_train_epochs input').value === '64'")
    choose(page, "lora_trainer_project", "myLoRA")
    shows_saved_settings()


def test_earlier_loras_are_listed_and_copied_and_the_log_is_monospace(page):
    choose(page, "lora_trainer_project", "older")
    wait_for_text(page, "lora_trainer_saved", "older-000001")
    table = page.inner_text("#lora_trainer_saved table")
    rows = [line.split("\t") for line in table.splitlines() if line.strip()]
    assert rows == [["Saved", "File", "Use in a prompt"], ["older_v2"],  # the newest run first
                        ["stopped at step 4", "older_v2-step00000004.safetensors", "<lora:older_v2-step00000004:1> copy"],
                        ["older"], ["epoch 1", "older-000001.safetensors", "<lora:older-000001:1> copy"],
                        ["final (epoch 1)", "older.safetensors", "<lora:older:1> copy"]]
    font = page.evaluate("getComputedStyle(document.querySelector('#lora_trainer_log textarea')).fontFamily")
    assert font.endswith("monospace"), font  # style.css reached the page

    page.click("#lora_trainer_saved button[data-copy='<lora:older-000001:1>']")
    wait_for_text(page, "lora_trainer_saved", "copied")
    assert page.evaluate("navigator.clipboard.readText()") == "<lora:older-000001:1>"


def test_copy_works_without_navigator_clipboard(page, ui_url):
    """A WebUI opened by plain http from another machine has no navigator.clipboard."""
    bare = open_page(page.context, ui_url, "Object.defineProperty(Navigator.prototype, 'clipboard', "
                     "{get: () => undefined}); window.copyCommands = [];"
                     "const exec = document.execCommand.bind(document);"
                     "document.execCommand = (c, ...a) => { window.copyCommands.push(c); return exec(c, ...a); };")
    choose(bare, "lora_trainer_project", "older")
    wait_for_text(bare, "lora_trainer_saved", "older_v2")
    bare.click("#lora_trainer_saved button[data-copy='<lora:older:1>']")
    wait_for_text(bare, "lora_trainer_saved", "copied")
    assert bare.evaluate("navigator.clipboard") is None and bare.evaluate("window.copyCommands") == ["copy"]
    assert page.evaluate("navigator.clipboard.readText()") == "<lora:older:1>"  # the same browser's clipboard


def test_start_refuses_a_used_output_name_and_offers_a_free_one(page, workspace):
    choose(page, "lora_trainer_project", "older")
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'older_v3'")
    choose(page, "lora_trainer_model", "tiny_sdxl.safetensors")
    page.fill("#lora_trainer_output_name textarea", "older")  # what the user typed: kept as typed
    page.keyboard.press("Tab")
    page.click("#lora_trainer_start")
    wait_for_text(page, "lora_trainer_message", "is taken")
    message = text_of(page, "lora_trainer_message")
    assert f"the output name 'older' is taken by 2 LoRA file(s) in {workspace / 'older' / 'model'}: " \
           "older-000001.safetensors, older.safetensors." in message and "use 'older_v3' (free)" in message
    assert output_name(page) == "older" and not (workspace / "older" / "older.json").exists()  # nothing done

    assert page.inner_text("#lora_trainer_use_name") == "Use older_v3"
    page.click("#lora_trainer_use_name")
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'older_v3'")
    wait_for_text(page, "lora_trainer_message", "output name set to older_v3: press Start")
    assert not page.is_visible("#lora_trainer_use_name")


def test_status_polls_leave_the_browser_console_quiet(page):
    """gradio 4.40's page warns "Too many arguments provided for the endpoint" for each call that sends
    inputs: the status poll sends none."""
    page.wait_for_timeout(2000)  # the page-load calls are answered
    messages, polls = [], []
    page.on("console", lambda m: messages.append(m.text))
    page.on("request", lambda r: polls.append(r.url) if "/queue/join" in r.url else None)
    deadline = time.monotonic() + 20  # a poll waits while the page-load estimate holds the CPUs
    while len(polls) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert len(polls) >= 2, polls  # the status was polled meanwhile
    assert not [m for m in messages if "Too many arguments" in m], messages


def option_labels(page, elem_id: str) -> list[str]:
    return page.evaluate(f"[...document.querySelectorAll('#{elem_id} li')].map(e => e.getAttribute('aria-label'))")


def open_options_until(page, elem_id: str, option: str, timeout: float = 30.0) -> None:
    """Open the dropdown until `option` is listed (the status poll brings a changed project list)."""
    deadline = time.monotonic() + timeout
    while True:
        page.click(f"#{elem_id} input")
        if option in option_labels(page, elem_id):
            return
        page.keyboard.press("Escape")
        page.locator("body").click(position={"x": 5, "y": 5})
        assert time.monotonic() < deadline, f"{option!r} never listed: {option_labels(page, elem_id)}"
        page.wait_for_timeout(500)


def test_projects_made_elsewhere_are_listed_and_open(page, workspace):
    """A project folder made after the page opened (another tab, the CLI) is listed without Refresh;
    choosing it opens it, also when it sorts before the selected project (gradio kept the selected
    index, so the new entry showed as selected and choosing it did nothing); labels are plain names."""
    choose(page, "lora_trainer_project", "older")
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'older_v3'")
    make_character_dataset(workspace / "newbie" / "img", name="newbie", count=2, size=64, repeats=3, seed=1)

    open_options_until(page, "lora_trainer_project", "newbie")
    assert option_labels(page, "lora_trainer_project") == ["myLoRA", "newbie", "older"]
    texts = page.evaluate("[...document.querySelectorAll('#lora_trainer_project li')].map(e => e.innerText.trim())")
    assert texts == ["myLoRA", "newbie", "✓\nolder"]  # gradio's mark on the selected one only
    page.get_by_role("option", name="newbie", exact=True).click()
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'newbie'")
    wait_for_text(page, "lora_trainer_project_info", "(2 image(s))")
    assert page.input_value("#lora_trainer_repeats input") == "3"

    # a new project from the box beside the list: listed, selected and opened
    page.fill("#lora_trainer_new_project input", "pnew")
    page.click("#lora_trainer_create_project")
    page.wait_for_function("document.querySelector('#lora_trainer_project input').value === 'pnew'")
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'pnew'")
    wait_for_text(page, "lora_trainer_message", f"project folders ready in {workspace / 'pnew'}")
    assert page.input_value("#lora_trainer_new_project input") == ""
    choose(page, "lora_trainer_project", "older")
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'older_v3'")
    choose(page, "lora_trainer_project", "pnew")
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'pnew'")
    assert (workspace / "pnew" / "img" / "3_pnew").is_dir()  # with the repeats in the box


def test_saved_settings_show_as_such_and_presets_apply_over_them(page, workspace, tiny_sdxl):
    """A config written by the `config` command (output_name 'lora', no model) opens with the project's
    name and the first listed model; the Preset box says the form holds saved settings, so any preset
    chosen then applies; a saved model path that is the listed file (a hard link) shows in the list."""
    cli = workspace / "pcli"
    (cli / "img" / "1_pcli").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "lora_trainer", "config", "--preset", "CPU smoke test",
                           "-o", str(cli / "pcli.json")], env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    linked = workspace / "plinked"
    (linked / "img" / "1_plinked").mkdir(parents=True)
    elsewhere = workspace / "elsewhere" / "tiny_link.safetensors"
    elsewhere.parent.mkdir()
    os.link(workspace / "models" / "tiny_sdxl.safetensors", elsewhere)  # as the demo does
    settings = json.loads((cli / "pcli.json").read_text())
    assert (settings["output_name"], settings["pretrained_model_name_or_path"]) == ("lora", "")
    (linked / "plinked.json").write_text(json.dumps({**settings, "pretrained_model_name_or_path": str(elsewhere),
                                                     "max_train_epochs": 3}))

    def epochs_are(value: str) -> None:
        page.wait_for_function(f"document.querySelector('#lora_trainer_max_train_epochs input').value === '{value}'")

    open_options_until(page, "lora_trainer_project", "pcli")
    page.get_by_role("option", name="pcli", exact=True).click()
    page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'pcli'")
    epochs_are("2")
    assert page.input_value("#lora_trainer_preset input") == "(project's saved settings)"
    assert page.input_value("#lora_trainer_model input") == "tiny_sdxl.safetensors"
    assert page.input_value("#lora_trainer_model_path textarea") == ""

    choose(page, "lora_trainer_preset", "Realistic character (guide)")  # fires: the box said otherwise
    epochs_are("64")
    assert output_name(page) == "pcli"  # the output name belongs to the project
    page.fill("#lora_trainer_max_train_epochs input", "5")
    page.keyboard.press("Tab")
    page.wait_for_function("document.querySelector('#lora_trainer_preset input').value === 'Custom'")
    choose(page, "lora_trainer_preset", "Realistic character (guide)")  # the same preset again
    epochs_are("64")
    choose(page, "lora_trainer_preset", "(project's saved settings)")
    epochs_are("2")
    wait_for_text(page, "lora_trainer_message", f"settings loaded from {cli / 'pcli.json'}")

    choose(page, "lora_trainer_project", "plinked")
    epochs_are("3")
    assert page.input_value("#lora_trainer_model input") == "tiny_sdxl.safetensors"
    assert page.input_value("#lora_trainer_model_path textarea") == ""


def wait_for_status(page, text: str, timeout: float = 180_000) -> None:
    page.wait_for_function("t => document.querySelector('#lora_trainer_status').innerText.includes(t)", arg=text,
                           timeout=timeout)


def test_a_run_keeps_its_status_and_name_across_reloads_projects_and_ui_restarts(browser, tmp_path, tiny_sdxl):
    """The status is the selected project's; another project's run is named (and Start waits for it),
    also in a UI started while it trains; a stopped run's name comes back with its project after a
    restart, and Resume continues it."""
    workspace = tmp_path / "ws"
    (workspace / "models").mkdir(parents=True)
    shutil.copy(tiny_sdxl.single_file, workspace / "models" / "tiny_sdxl.safetensors")
    for name in ("alpha", "beta"):  # alpha is listed first: a page opens on it
        make_character_dataset(workspace / name / "img", name=name, count=8, size=64, repeats=1, seed=0)
    servers, pages = [], []
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    context.route(lambda url: not url.startswith("http://127.0.0.1"), lambda route: route.abort())

    def restart_ui():
        """A new UI process; the one before ends without a word to its trainer (SIGTERM to it alone)."""
        if servers:
            servers[-1].send_signal(signal.SIGTERM)
            servers[-1].wait(timeout=30)
        # the trainer trains through the whole test: one core for it, the other for the UI and browser
        server, url = start_ui(workspace, tiny_sdxl.config_dir, tmp_path / f"ui{len(servers)}.log",
                               env={"OMP_NUM_THREADS": "1"})
        servers.append(server)
        pages[:] = [open_page(context, url, replace=pages[0] if pages else None, timeout_ms=120_000)]
        return pages[0]

    try:
        page = restart_ui()
        choose(page, "lora_trainer_project", "beta")
        page.wait_for_function("document.querySelector('#lora_trainer_output_name textarea').value === 'beta'")
        choose(page, "lora_trainer_preset", "CPU smoke test")
        page.wait_for_function("document.querySelector('#lora_trainer_max_resolution textarea').value === '64,64'")
        page.fill("#lora_trainer_max_train_epochs input", "500")
        page.keyboard.press("Tab")
        page.click("#lora_trainer_start")
        wait_for_status(page, "epoch 1/500, step ")

        page = open_page(context, page.url, replace=page, timeout_ms=120_000)  # a new page in the middle of the run
        wait_for_status(page, "Busy")  # on alpha
        assert "training in project beta (beta): epoch " in text_of(page, "lora_trainer_status")
        assert "Idle" in text_of(page, "lora_trainer_status")  # alpha's own state
        assert not page.is_enabled("#lora_trainer_start") and not page.is_enabled("#lora_trainer_stop")
        choose(page, "lora_trainer_project", "beta")
        wait_for_status(page, "Running")
        assert output_name(page) == "beta"
        choose(page, "lora_trainer_project", "alpha")
        wait_for_status(page, "Busy")

        page = restart_ui()  # while beta trains; the page opens on alpha
        wait_for_status(page, "training in project beta (beta): epoch ")
        page.wait_for_function("document.querySelector('#lora_trainer_start').disabled")
        choose(page, "lora_trainer_project", "beta")
        wait_for_status(page, "Running")
        page.wait_for_function("!document.querySelector('#lora_trainer_stop').disabled")
        page.click("#lora_trainer_stop")
        wait_for_status(page, "Stopped")

        page = restart_ui()  # the stopped run comes back with its project
        choose(page, "lora_trainer_project", "beta")
        wait_for_status(page, "Stopped")
        assert "Resume continues from there" in text_of(page, "lora_trainer_status")
        assert output_name(page) == "beta"
        assert "stopped at step" in page.input_value("#lora_trainer_log textarea")
        page.click("#lora_trainer_start")  # the name is taken: Start says to Resume or use a new name
        wait_for_text(page, "lora_trainer_message", "is taken")
        assert "press Resume" in text_of(page, "lora_trainer_message")
        assert page.inner_text("#lora_trainer_use_name") == "Use beta_v2"
        page.click("#lora_trainer_resume")
        wait_for_text(page, "lora_trainer_message", "resumed beta")
        wait_for_status(page, "Running")
    finally:
        context.close()
        for server in servers:
            end_ui(server)


# Forge's hidden refresh buttons of its LoRA cards (modules/ui_extra_networks.py), counting clicks.
FAKE_CARD_REFRESH = """
for (const tab of ["txt2img", "img2img"]) {
    const button = document.createElement("button");
    button.id = tab + "_lora_extra_refresh_internal";
    button.style.display = "none";
    window.cardRefreshes = window.cardRefreshes || {};
    window.cardRefreshes[tab] = 0;
    button.addEventListener("click", () => window.cardRefreshes[tab] += 1);
    document.body.appendChild(button);
}
"""


def test_a_newly_saved_lora_refreshes_the_webuis_lora_cards(page, workspace, write_lora):
    """javascript/lora_trainer_cards.js: the LoRA cards of txt2img and img2img are refreshed when a
    file appears in a project's list, not when the page first shows a project's files."""
    cards = Project(workspace / "cards", "cards").create()
    page.evaluate(FAKE_CARD_REFRESH)
    # the status poll lists the new project (a list that changes while open would move under the click)
    page.wait_for_timeout(2500)
    choose(page, "lora_trainer_project", "older")
    wait_for_text(page, "lora_trainer_saved", "older-000001")
    choose(page, "lora_trainer_project", "cards")
    wait_for_text(page, "lora_trainer_saved", "No LoRA")
    page.wait_for_timeout(2500)  # the script looks every second
    assert page.evaluate("window.cardRefreshes") == {"txt2img": 0, "img2img": 0}
    write_lora(cards.model, "cards-000001", 300, ss_output_name="cards", ss_epoch="1", ss_steps="4")
    wait_for_text(page, "lora_trainer_saved", "cards-000001")
    page.wait_for_function("window.cardRefreshes.txt2img === 1 && window.cardRefreshes.img2img === 1")
    choose(page, "lora_trainer_project", "older")
    wait_for_text(page, "lora_trainer_saved", "older-000001")
    choose(page, "lora_trainer_project", "cards")
    wait_for_text(page, "lora_trainer_saved", "cards-000001")
    page.wait_for_timeout(2500)
    assert page.evaluate("window.cardRefreshes") == {"txt2img": 1, "img2img": 1}  # nothing new: no refresh
