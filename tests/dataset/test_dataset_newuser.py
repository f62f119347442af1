"""What a new user hit in the dataset commands: a missing background model found only after minutes of
work, masks imported as photos, small photos padded silently, prepare and audit counting close-ups
differently, the copy kept instead of the original among duplicates, flat photos called blurry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.cli import main
from lora_trainer.dataset.background import ModelMissingError, check_model
from lora_trainer.dataset.prepare import PrepareOptions, prepare
from lora_trainer.project import Project

ROOT = Path(__file__).resolve().parents[2]

_OFFLINE_PREPARE = """
import sys, time
from lora_trainer.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
print(f"RESULT rc={rc} seconds={time.perf_counter() - t:.3f} rembg={'rembg' in sys.modules}")
"""


def test_prepare_remove_background_without_the_model_fails_at_once(tmp_path, h):
    """Offline, no u2net.onnx: the command fails within a second, before rembg is even imported (that
    alone takes up to a minute), naming the file, the folder and where to get it; nothing is written."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        h.photo(900, 1200, i).save(src / f"IMG_{i:04}.jpg")
    empty = tmp_path / "u2net-home"
    empty.mkdir()
    project = tmp_path / "proj"
    env = dict(os.environ, U2NET_HOME=str(empty), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", _OFFLINE_PREPARE, "prepare", str(src), "--project", str(project),
                          "--name", "myLoRA", "--remove-background"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    result = run.stdout.strip().splitlines()[-1]
    assert result.startswith("RESULT rc=2 ") and result.endswith("rembg=False"), (result, run.stderr)
    assert float(result.split("seconds=")[1].split()[0]) < 1.0, result
    err = run.stderr
    assert f"u2net.onnx not found in {empty}" in err, err
    assert "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx (176 MB)" in err
    assert "U2NET_HOME" in err and "--download-model" in err
    assert not project.exists()
    assert sorted(p.name for p in src.iterdir()) == [f"IMG_{i:04}.jpg" for i in range(12)]


def test_background_command_without_the_model_writes_nothing(tmp_path, h, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(300, 300, 1).save(src / "a.jpg")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    rc = main(["background", str(src), "--output", str(tmp_path / "out"), "--model", "isnet-general-use"])
    err = capsys.readouterr().err
    assert rc == 2 and f"isnet-general-use.onnx not found in {tmp_path / 'models'}" in err
    assert "releases/download/v0.0.0/isnet-general-use.onnx (179 MB)" in err
    assert not (tmp_path / "out").exists()
    # a release file saved under another name is said so; an .onnx path that is not there is named
    with pytest.raises(ModelMissingError, match="BiRefNet-portrait-epoch_150.onnx and save it as "
                                                "birefnet-portrait.onnx there"):
        check_model("birefnet-portrait")
    with pytest.raises(ModelMissingError, match=f"rembg model file {tmp_path / 'x.onnx'} does not exist"):
        check_model(str(tmp_path / "x.onnx"))
    with pytest.raises(ModelMissingError):
        prepare([src], Project(tmp_path / "p", "x"), PrepareOptions(background=True, background_model="u2netp"))
    assert not (tmp_path / "p").exists()


TINY = ROOT / "tests" / "assets" / "tiny_segmenter.onnx"


def _subject(seed: int) -> Image.Image:
    im = Image.new("RGB", (400, 300), (40, 160, 90 + seed))
    im.paste((230, 30, 30), (150, 75, 250, 225))
    return im


def test_background_output_then_prepare_skips_the_masks(tmp_path, capsys):
    """`background` writes <stem>.png + <stem>_mask.png; prepare on that folder imports the photos only,
    and names each mask as skipped, with the reason; audit and edit leave the masks alone too."""
    from lora_trainer.dataset.audit import audit_folder
    from lora_trainer.dataset.background import MASK_REASON, remove_backgrounds

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _subject(i).save(src / f"p{i}.jpg")
    records = remove_backgrounds(sorted(src.iterdir()), tmp_path / "bg", model=str(TINY), seed=1)
    assert sorted(p.name for p in (tmp_path / "bg").iterdir()) == [
        "p0.png", "p0_mask.png", "p1.png", "p1_mask.png", "p2.png", "p2_mask.png"]
    # a photo whose name merely ends in _mask (no <stem>.png beside it) is a photo
    _subject(9).save(tmp_path / "bg" / "carnival_mask.png")

    project = Project(tmp_path / "p", "x")
    report = prepare([tmp_path / "bg"], project, PrepareOptions(workers=1, size=256))
    skipped = {Path(e.source).name: e.reason for e in report.entries if e.status == "skipped"}
    assert skipped == {f"p{i}_mask.png": MASK_REASON for i in range(3)}
    assert MASK_REASON == "a mask written by the background step, not a photo"
    assert sorted(p.name for p in project.train_images.glob("*.png")) == [
        "carnival_mask.png", "p0.png", "p1.png", "p2.png"]
    text = report.to_text()
    assert f"SKIPPED   {records[0]['mask']}: {MASK_REASON}" in text
    assert "4 image(s) prepared, 0 close-up(s) added, 0 duplicate(s) and 3 file(s) skipped" in text

    audit = audit_folder(tmp_path / "bg", detector=lambda im: [])
    assert sorted(i.name for i in audit.images) == ["carnival_mask.png", "p0.png", "p1.png", "p2.png"]
    assert [s["name"] for s in audit.skipped] == ["p0_mask.png", "p1_mask.png", "p2_mask.png"]
    assert f"p0_mask.png: {MASK_REASON}" in audit.to_text()

    assert main(["edit", str(tmp_path / "bg"), "--output", str(tmp_path / "edited"), "--contrast", "1.1"]) == 0
    assert sorted(p.name for p in (tmp_path / "edited").iterdir()) == [
        "carnival_mask.png", "p0.png", "p1.png", "p2.png"]


def test_duplicates_keep_the_original_name(tmp_path, h):
    """`IMG_0003 (copy).jpg` sorts before `IMG_0003.jpg`; the original is kept all the same, and the
    report says which file was dropped as a duplicate of which."""
    src = tmp_path / "in"
    src.mkdir()
    pairs = {"IMG_0003": ["IMG_0003 (copy)", "IMG_0003 - Copy", "IMG_0003(1)"], "beach": ["beach-1"],
             "holiday": ["DSC copy 2", "Copy of holiday"]}
    for seed, (original, copies) in enumerate(pairs.items()):
        h.photo(320, 240, seed).save(src / f"{original}.jpg", quality=90)
        for copy in copies:
            (src / f"{copy}.jpg").write_bytes((src / f"{original}.jpg").read_bytes())
    project = Project(tmp_path / "p", "x")
    report = prepare([src], project, PrepareOptions(workers=1, size=256))
    kept = sorted(Path(e.source).name for e in report.entries if e.status == "ok")
    assert kept == ["IMG_0003.jpg", "beach.jpg", "holiday.jpg"]
    dropped = {Path(e.source).name: e.reason for e in report.entries if e.status == "duplicate"}
    for original, copies in pairs.items():
        for copy in copies:
            assert dropped[f"{copy}.jpg"] == f"a duplicate of {src / original}.jpg (same content), which is kept"
    assert sorted(p.name for p in project.sources.iterdir()) == ["IMG_0003.jpg", "beach.jpg", "holiday.jpg"]
    assert f"DUPLICATE {src / 'IMG_0003 (copy).jpg'}: a duplicate of {src / 'IMG_0003.jpg'}" in report.to_text()
