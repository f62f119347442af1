"""The X/Y/Z plot's "LoRA epoch" axis: how a cell's prompt gets its LoRA, and which names it offers."""

from __future__ import annotations

from lora_trainer.review.xyz_axis import NO_LORA, apply_lora_epoch, lora_epoch_choices, missing_names

AXIS = ["hero-000001", "hero-000002", NO_LORA]


def test_the_tag_of_an_axis_lora_is_switched_keeping_its_weight():
    prompt = "hero, smile <lora:hero-000001:0.8>, detailed"
    assert apply_lora_epoch(prompt, "hero-000002", AXIS) == "hero, smile <lora:hero-000002:0.8>, detailed"


def test_a_prompt_without_the_tag_gets_one_and_none_removes_it():
    assert apply_lora_epoch("hero, smile", "hero-000002", AXIS) == "hero, smile <lora:hero-000002:1>"
    assert apply_lora_epoch("hero, smile <lora:hero-000001:0.8>", NO_LORA, AXIS) == "hero, smile"
    assert apply_lora_epoch("hero, smile", NO_LORA, AXIS) == "hero, smile"


def test_other_loras_in_the_prompt_are_left_alone():
    prompt = "<lora:style:0.5> hero <lora:hero-000001:1>"
    assert apply_lora_epoch(prompt, "hero-000002", AXIS) == "<lora:style:0.5> hero <lora:hero-000002:1>"
    assert apply_lora_epoch(prompt, NO_LORA, AXIS) == "<lora:style:0.5> hero"


def test_choices_are_our_published_epochs_in_training_order(tmp_path):
    folder = tmp_path / "lora_trainer" / "hero"
    folder.mkdir(parents=True)
    for stem in ("hero-000010", "hero-000002", "hero", "hero-step00000005", "anna-000001"):
        (folder / f"{stem}.safetensors").write_bytes(b"x")
    (tmp_path / "elsewhere.safetensors").write_bytes(b"x")  # not ours
    assert lora_epoch_choices(tmp_path) == ["anna-000001", "hero-000002", "hero-step00000005", "hero-000010",
                                            "hero", NO_LORA]
    assert lora_epoch_choices(tmp_path / "missing") == [NO_LORA]


def test_names_the_webui_does_not_list_are_named():
    assert missing_names(["hero-000001", "gone", NO_LORA], {"hero-000001"}) == ["gone"]
