"""The Train tab in a real browser: `python -m lora_trainer ui` in a subprocess on a free port, driven by
Debian's Chromium through Playwright. The tiny model sits in the workspace's models/ folder and the
synthetic dataset in a project; everything stays on 127.0.0.1."""

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
def workspace(tmp_path_factory, tiny_sdxl):
    root = tmp_path_factory.mktemp("workspace")
    (root / "models").mkdir()
    shutil.copy(tiny_sdxl.single_file, root / "models" / "tiny_sdxl.safetensors")
    make_character_dataset(root / "myLoRA" / "img", name="myLoRA", count=8, size=64, repeats=1, seed=0)
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
    # Nothing leaves the machine (gradio's page asks for web fonts and a CDN script).
    context.route(lambda url: not url.startswith("http://127.0.0.1"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(ui_url)
    page.wait_for_selector("#lora_trainer_start")
    yield page
    context.close()


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def text_of(page, elem_id: str) -> str:
    return page.inner_text(f"#{elem_id}")


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
