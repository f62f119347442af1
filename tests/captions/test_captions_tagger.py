"""The tagger on the tiny WD14-shaped model: its scores follow the image's mean colour
(tools/make_tiny_wd14_tagger.py), so each known image has known tags."""

import shutil

import numpy as np
import pytest
from PIL import Image

from lora_trainer.captions import ModelFiles, Tagger, TagSettings
from lora_trainer.captions import tagger as tagger_module

RED_TAGS = ["demo girl (tiny)", "red shirt", "1girl", "solo", "simple background", "short hair", "looking at viewer"]


def solid(rgb, size=(20, 20)):
    return Image.new("RGB", size, rgb)


def test_reads_size_batch_and_provider_from_the_model(tagger):
    assert tagger.size == 32 and tagger.fixed_batch is None and tagger.batch_size == 4
    assert tagger.provider == "CPUExecutionProvider"
    assert "on CPU via CPUExecutionProvider" in tagger.describe()


def test_red_image_gets_red_tags_in_caption_order(tagger):
    [prediction] = tagger.tag([solid((255, 0, 0))])
    assert prediction.tags() == RED_TAGS  # characters first, then general tags by score
    assert [name for name, _ in prediction.character] == ["demo girl (tiny)"]
    assert prediction.rating == []  # rating dropped by default
    assert "blue eyes" not in prediction.tags()  # the model saw BGR: red was not read as blue


def test_green_image_keeps_the_kaomoji_underscore(tagger):
    [prediction] = tagger.tag([solid((0, 255, 0))])
    assert prediction.tags() == ["green hair", "^_^", "1girl", "solo", "simple background", "short hair",
                                 "looking at viewer"]


def test_character_from_two_channels(tagger):
    [prediction] = tagger.tag([solid((0, 255, 255))])
    assert prediction.tags()[0] == "aqua girl (tiny)"
    assert {"green hair", "blue eyes", "^_^"} <= set(prediction.tags())


@pytest.mark.parametrize("threshold, last", [(0.35, "looking at viewer"), (0.5, "short hair"),
                                             (0.7, "simple background")])
def test_general_threshold(tagger, threshold, last):
    # general scores for red: red shirt .99, 1girl .98, solo .95, simple bg .73, short hair .62, looking .45
    tags = tagger.select(scores(tagger, (255, 0, 0)), TagSettings(general_threshold=threshold)).tags()
    assert tags[-1] == last


def test_character_threshold_is_separate_from_the_general_one(tagger):
    red_06 = scores(tagger, (153, 0, 0))  # red mean 0.6: logit 1 -> 0.73 for "red shirt" and the character
    default = tagger.select(red_06)
    assert "red shirt" in default.tags() and default.character == []  # 0.73 < 0.85
    lower = tagger.select(red_06, TagSettings(character_threshold=0.7))
    assert [t for t, _ in lower.character] == ["demo girl (tiny)"]


def test_rating_exclude_and_underscores(tagger):
    red = scores(tagger, (255, 0, 0))
    with_rating = tagger.select(red, TagSettings(include_rating=True))
    assert with_rating.tags()[0] == "general" and len(with_rating.rating) == 1
    excluded = tagger.select(red, TagSettings(exclude=("Short_Hair", "looking at viewer", "demo girl (tiny)")))
    assert excluded.tags() == ["red shirt", "1girl", "solo", "simple background"]
    raw = tagger.select(scores(tagger, (0, 255, 0)), TagSettings(underscores_to_spaces=False))
    assert raw.tags()[:2] == ["green_hair", "^_^"] and "short_hair" in raw.tags()
    assert "demo_girl_(tiny)" in tagger.select(red, TagSettings(underscores_to_spaces=False)).tags()


def test_settings_are_validated():
    with pytest.raises(ValueError, match="general_threshold"):
        TagSettings(general_threshold=1.5)
    with pytest.raises(ValueError, match="exclude"):
        TagSettings(exclude="solo")


def test_batched_equals_one_at_a_time(tiny_model):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in [(20, 30), (32, 32), (50, 10), (7, 9), (64, 48), (33, 33), (16, 40), (40, 16), (5, 5)]]
    batched = Tagger(tiny_model, device="cpu", batch_size=4)
    single = Tagger(tiny_model, device="cpu", batch_size=1)
    a, b = batched.predict(images), single.predict(images)
    assert a.shape == (9, 17)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert [p.tags() for p in batched.tag(images)] == [p.tags() for p in single.tag(images)]


def test_model_with_a_fixed_batch_of_one(tmp_path, tiny_model, caption_assets):
    shutil.copy(caption_assets / "tiny-wd14-fixed-batch.onnx", tmp_path / "model.onnx")
    shutil.copy(tiny_model.tags_path, tmp_path / "selected_tags.csv")
    fixed = Tagger(ModelFiles("fixed", tmp_path / "model.onnx", tmp_path / "selected_tags.csv"), batch_size=8)
    assert fixed.fixed_batch == 1 and fixed.batch_size == 1
    images = [solid(c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    dynamic = Tagger(tiny_model, device="cpu", batch_size=8)
    np.testing.assert_allclose(fixed.predict(images), dynamic.predict(images), atol=1e-6)


def test_empty_input(tagger):
    assert tagger.predict([]).shape == (0, 17) and tagger.tag([]) == []


def test_cuda_when_offered(monkeypatch):
    monkeypatch.setattr(tagger_module, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert tagger_module.choose_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert tagger_module.choose_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(tagger_module, "available_providers", lambda: ["CPUExecutionProvider"])
    assert tagger_module.choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        tagger_module.choose_providers("cuda")


def test_tag_list_that_does_not_fit_the_model(tmp_path, tiny_model):
    shutil.copy(tiny_model.model_path, tmp_path / "model.onnx")
    lines = tiny_model.tags_path.read_text(encoding="utf-8").splitlines()
    (tmp_path / "selected_tags.csv").write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="predicts 17 tags but .*selected_tags.csv lists 15"):
        Tagger(ModelFiles("x", tmp_path / "model.onnx", tmp_path / "selected_tags.csv"))


def test_broken_model_file_is_named(tmp_path, tiny_model):
    (tmp_path / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot load tagger model .*model.onnx"):
        Tagger(ModelFiles("x", tmp_path / "model.onnx", tiny_model.tags_path))


def scores(tagger, rgb):
    return tagger.predict([solid(rgb)])[0]
