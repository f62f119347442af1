"""Finding a tagger: a local folder, the hub cache (offline), and the message when it is missing."""

import shutil

import pytest

from lora_trainer.captions import DEFAULT_MODEL, KNOWN_MODELS, ModelNotFoundError, resolve_model
from lora_trainer.captions.models import DEMO_MODEL_DIR


def test_known_models_cover_smilingwolfs_v3_and_v2():
    for name in ("wd-vit-tagger-v3", "wd-swinv2-tagger-v3", "wd-convnext-tagger-v3", "wd-eva02-large-tagger-v3",
                 "wd-v1-4-convnext-tagger-v2", "wd-v1-4-moat-tagger-v2"):
        assert KNOWN_MODELS[name] == f"SmilingWolf/{name}"
    assert DEFAULT_MODEL in KNOWN_MODELS.values()


def test_local_folder_or_onnx_path(tmp_path):
    shutil.copytree(DEMO_MODEL_DIR, tmp_path / "tagger")
    by_folder = resolve_model(tmp_path / "tagger")
    by_file = resolve_model(str(tmp_path / "tagger" / "model.onnx"))
    assert by_folder.model_path == by_file.model_path == tmp_path / "tagger" / "model.onnx"
    assert by_folder.tags_path == tmp_path / "tagger" / "selected_tags.csv"


def test_folder_missing_a_file_names_it(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model(tmp_path)
    assert str(tmp_path) in str(e.value) and "missing selected_tags.csv" in str(e.value)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(tmp_path / "nowhere")


def test_hub_model_not_cached_offline_says_which_files_and_where(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("wd-swinv2-tagger-v3", cache_dir=tmp_path)
    message = str(e.value)
    for part in ("SmilingWolf/wd-swinv2-tagger-v3", "model.onnx", "selected_tags.csv", str(tmp_path),
                 "https://huggingface.co/SmilingWolf/wd-swinv2-tagger-v3", "--model", "offline"):
        assert part in message


def test_local_files_only_never_downloads(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        resolve_model("SmilingWolf/wd-vit-tagger-v3", cache_dir=tmp_path, local_files_only=True)


def test_hub_model_found_in_the_cache_without_network(tmp_path):
    # The layout huggingface-hub writes: models--OWNER--NAME/{refs/main, snapshots/COMMIT/FILES}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--SmilingWolf--wd-vit-tagger-v3"
    shutil.copytree(DEMO_MODEL_DIR, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    files = resolve_model("wd-vit-tagger-v3", cache_dir=tmp_path)
    assert files.name == "SmilingWolf/wd-vit-tagger-v3"
    assert files.model_path == repo / "snapshots" / commit / "model.onnx"
    assert files.tags_path.read_text(encoding="utf-8").startswith("tag_id,name,category,count")
