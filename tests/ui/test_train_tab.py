"""The Train tab in a real browser: `python -m lora_trainer ui` in a subprocess on a free port, driven by
Debian's Chromium through Playwright. The tiny model sits in the workspace's models/ folder and the
synthetic dataset in a project; a second project holds LoRA files from earlier runs (as after a
restart). Everything stays on 127.0.0.1."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def ui_url(workspace, tiny_sdxl):
    port = free_port()
    log = workspace / "ui.log"
    command = [sys.executable, "-m", "lora_trainer", "ui", "--dir", str(workspace),
               "--model-config-dir", str(tiny_sdxl.config_dir), "--port", str(port)]
    with open(log, "wb") as out:
        # Its own process group: teardown ends the UI and any trainer it started.
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=subprocess_env({"GRADIO_ANALYTICS_ENABLED": "False"}))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, server, log)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


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


def open_page(context, url: str, init_script: str = ""):
    page = context.new_page()
    page.set_default_timeout(30_000)
    if init_script:
        page.add_init_script(init_script)
    page.goto(url)
    page.wait_for_selector("#lora_trainer_start")
    # The page-load event (the project as it is now) has answered: until then gradio keeps its
    # invisible progress text inside the outputs, and innerText would include it.
    page.wait_for_function("!document.querySelector('#lora_trainer_project_info .pending')")
    return page


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def text_of(page, elem_id: str) -> str:
    return page.inner_text(f"#{elem_id}")


def wait_for_text(page, elem_id: str, text: str) -> None:
    page.wait_for_function("([id, text]) => document.getElementById(id).innerText.includes(text)",
                           arg=[elem_id, text])


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
                           "document.querySelector('#lora_trainer_status').innerText.includes(s))", timeout=180_000)
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
