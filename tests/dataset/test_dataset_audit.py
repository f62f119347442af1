"""Audit findings on synthetic images made blurry, desaturated, duplicated, small and dark; the shot mix
from OpenCV's real Haar cascade on drawn faces, and from an injected detector."""

from __future__ import annotations

import json

from lora_trainer.dataset.audit import AuditThresholds, audit_folder, audit_images, hamming, measure, phash
from lora_trainer.dataset.faces import HaarFaceDetector, classify_shot


def _findings(report):
    return {i.name: i.findings for i in report.images}


def test_audit_flags_each_problem(audit_set):
    report = audit_folder(audit_set["folder"], detector=lambda im: [])
    f = _findings(report)
    assert any(x.startswith("blurry: sharpness") for x in f["blurry.png"]), f["blurry.png"]
    assert any(x.startswith("desaturated") for x in f["grey.png"])
    assert any("low resolution: 600x600" in x for x in f["small.png"])
    assert any(x.startswith("underexposed") for x in f["dark.png"])
    assert any(x.startswith("colour cast toward yellow") for x in f["tinted.png"])
    assert any("near-duplicate of good_0_resized.jpg" in x for x in f["good_0.png"])
    assert report.near_duplicates == [{"images": ["good_0.png", "good_0_resized.jpg"],
                                       "distance": report.near_duplicates[0]["distance"]}]
    for name in ("good_1.png", "good_2.png", "good_3.png"):
        assert f[name] == [], (name, f[name])
    set_findings = " | ".join(report.findings)
    assert "10 image(s): the guide asks for at least 64" in set_findings
    assert "10 image(s) with no detected face" in set_findings

    data = json.loads(report.to_json())
    assert data["count"] == 10 and data["thresholds"]["blur_threshold"] == 35.0
    text = report.to_text()
    assert "blurry.png:" in text and "variance of the Laplacian" in text and "good_1.png" not in text


def test_blur_threshold_is_adjustable(audit_set):
    strict = audit_folder(audit_set["folder"], detector=lambda im: [],
                          thresholds=AuditThresholds(blur_threshold=1e9))
    assert all(any("sharpness" in x for x in i.findings) for i in strict.images if i.sharpness is not None)
    assert sum(i.sharpness is not None for i in strict.images) >= 9


def test_perceptual_hash_separates_different_pictures(h):
    a = measure(h.photo(512, 512, 1))["phash"]
    b = measure(h.photo(600, 600, 1).resize((512, 512)))["phash"]
    c = measure(h.photo(512, 512, 2))["phash"]
    assert hamming(a, b) <= 6 < hamming(a, c)
    assert len(phash(__import__("numpy").zeros((40, 40), "uint8"))) == 16


def test_shot_mix_with_the_real_cascade(tmp_path, h):
    """OpenCV's bundled frontal cascade finds the drawn faces; the face's size sets the shot."""
    d = tmp_path / "shots"
    d.mkdir()
    h.face_image(1024, 1024, 512, 480, 400).save(d / "close.png")
    h.face_image(1024, 1024, 512, 300, 200).save(d / "half.png")
    h.face_image(1024, 1536, 512, 250, 110).save(d / "full.png")
    h.photo(1024, 1024, 3).save(d / "nobody.png")
    report = audit_folder(d)
    shots = {i.name: i.shot for i in report.images}
    assert shots == {"close.png": "close-up", "half.png": "half body", "full.png": "full body",
                     "nobody.png": "no face"}
    assert report.shot_mix == {"close-up": 1, "half body": 1, "full body": 1, "no face": 1}
    assert any("close-ups are 1 of 4 (25%); the guide wants 33%-50%" in f for f in report.findings)


def test_shot_mix_against_the_guide_with_an_injected_detector(tmp_path, h):
    """The classification and the 1/3-1/2 rule, independent of the cascade."""
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        h.photo(640, 640, i).save(p)
        paths.append(p)
    heights = iter([300, 300, 300, 300, 100, 40])  # face heights at 640 px: 4 close-ups of 6

    def detector(im):
        s = next(heights)
        return [(100, 100, 100 + s, 100 + s)]

    report = audit_images(paths, detector=detector)
    assert report.shot_mix == {"close-up": 4, "half body": 1, "full body": 1, "no face": 0}
    assert any("above the guide's 50%" in f for f in report.findings)


def test_classify_shot_rule():
    assert classify_shot((1000, 1000), []) == "no face"
    assert classify_shot((1000, 1000), [(0, 0, 300, 300)]) == "close-up"
    assert classify_shot((1000, 1000), [(0, 0, 150, 150), (0, 0, 20, 20)]) == "half body"
    assert classify_shot((1000, 1000), [(0, 0, 80, 80)]) == "full body"


def test_haar_cascades_ship_with_opencv():
    detector = HaarFaceDetector()
    assert len(detector._cascades) == 2
