"""From "import 64 photos" to "captions written": through the tab's panels against the commands.

The panels' own code path, in this process (the Dataset panel's Import: `start_import` and its job
thread, the Captions panel's Tag: `start_tagging` and its job thread, each followed by polling as the
page's timer does) against `python -m lora_trainer prepare` + `tag` called in this process with the
same settings (1024 px, pad, the tiny demo tagger: the real WD14 models are not on this machine). Both
import the same 64 synthetic photos into a fresh project. What the UI adds is its polling (the job
ends, the next poll sees it: up to one poll interval per job), the audit the Dataset panel runs to
show its gallery badges after an import (printed), and its threads.

    .venv/bin/python benchmarks/bench_dataset_ui.py [--photos 64] [--repeats 2]

Prints each side's seconds (median of interleaved repeats) and their ratio. Nothing asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POLL_S = 1.0  # the panels' timer


def photos(folder: Path, count: int) -> Path:
    from lora_trainer.demo.synthetic import make_character_dataset

    made = make_character_dataset(folder, name="src", count=count, size=512, repeats=1, seed=7)
    for caption in (Path(made) / "1_src").glob("*.txt"):
        caption.unlink()  # photos only: the captions are the tagger's
    return Path(made) / "1_src"


def wait(job, poll) -> None:
    """As the page does: poll every POLL_S until the job has ended and a poll has seen it."""
    while True:
        time.sleep(POLL_S)
        poll()
        if job.finished:
            return


def through_the_ui(source: Path, workspace: Path) -> float:
    import gradio as gr

    from lora_trainer.captions.models import DEMO_MODEL
    from lora_trainer.host import StandaloneHost
    from lora_trainer.ui.captions_panel import CaptionsPanel
    from lora_trainer.ui.dataset_panel import DatasetPanel

    host = StandaloneHost(workspace_dir=workspace)
    with gr.Blocks():
        dataset, captions = DatasetPanel(host).build(), CaptionsPanel(host).build()
    start = time.perf_counter()
    dataset.start_import("hero", str(source), None, 1024, "pad", "#808080", "off", False)
    wait(dataset._job, dataset.poll)
    folder = workspace / "hero" / "img" / "1_hero"
    captions.open_project("hero")
    captions.start_tagging("hero", str(folder), DEMO_MODEL, "cpu", 0.35, 0.85, "skip", "", "hero")
    wait(captions._job, captions.poll)
    seconds = time.perf_counter() - start
    assert captions._job.error == "", captions._job.error
    assert len(list(folder.glob("*.txt"))) == len(list(source.glob("*.png")))
    return seconds


def through_the_commands(source: Path, workspace: Path) -> float:
    from lora_trainer.captions.models import DEMO_MODEL
    from lora_trainer.cli import main

    project = workspace / "hero"
    start = time.perf_counter()
    assert main(["prepare", str(source), "--project", str(project), "--name", "hero", "--size", "1024"]) == 0
    folder = project / "img" / "1_hero"
    assert main(["tag", str(folder), "--model", DEMO_MODEL, "--device", "cpu", "--trigger", "hero"]) == 0
    seconds = time.perf_counter() - start
    assert len(list(folder.glob("*.txt"))) == len(list(source.glob("*.png")))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = photos(Path(tmp) / "photos", args.photos)
        ui, commands = [], []
        for repeat in range(args.repeats):
            ui.append(through_the_ui(source, Path(tmp) / f"ui{repeat}"))
            commands.append(through_the_commands(source, Path(tmp) / f"cli{repeat}"))
            print(f"repeat {repeat + 1}: UI {ui[-1]:.1f} s, commands {commands[-1]:.1f} s", flush=True)
        audit_s = audit_seconds(Path(tmp) / "cli0" / "hero" / "img" / "1_hero")
    u, c = statistics.median(ui), statistics.median(commands)
    print(f"import {args.photos} photos -> captions written: UI {u:.1f} s, commands {c:.1f} s, "
          f"UI / commands = {u / c:.2f}; the UI's own work: the gallery's audit of the imported images "
          f"{audit_s:.1f} s, and its polling up to {2 * POLL_S:.0f} s; left over: {u - c - audit_s:.1f} s")


def audit_seconds(folder: Path) -> float:
    """What the Dataset panel's gallery costs after an import: an audit of every training image."""
    from lora_trainer.dataset.audit import audit_folder

    start = time.perf_counter()
    audit_folder(folder)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
