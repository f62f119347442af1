"""Tag text, one-caption operations and the guide's order."""

import json

import pytest

from lora_trainer.captions import (
    TagGroups,
    add_tags,
    caption_to_prompt,
    dedupe,
    escape_prompt,
    near_duplicates,
    order_tags,
    put_first,
    remove_tags,
    replace_tag,
    split_caption,
    tag_frequency,
    tag_key,
    tag_to_text,
)


def test_underscores_become_spaces_except_in_kaomoji():
    assert tag_to_text("short_hair") == "short hair"
    assert tag_to_text("^_^") == "^_^" and tag_to_text(">_<") == ">_<"
    assert tag_to_text("short_hair", underscores_to_spaces=False) == "short_hair"
    assert tag_to_text("hatsune_miku_(cosplay)") == "hatsune miku (cosplay)"  # parentheses kept as they are


def test_tag_key_ignores_case_underscores_spaces_and_escapes():
    assert tag_key(" Short_Hair ") == tag_key("short  hair") == "short hair"
    assert tag_key(r"demo girl \(tiny\)") == tag_key("demo girl (tiny)")
    assert tag_key("^_^") == "^_^"


def test_escape_only_for_prompts():
    assert escape_prompt("demo girl (tiny)") == r"demo girl \(tiny\)"
    assert escape_prompt(r"demo girl \(tiny\)") == r"demo girl \(tiny\)"  # not twice
    assert caption_to_prompt(["myLoRA", "a (b)", "[c]"]) == r"myLoRA, a \(b\), \[c\]"


def test_split_caption():
    assert split_caption(" a,b ,, c\nd ,  e  f ") == ["a", "b", "c", "d", "e f"]
    assert split_caption("") == []


def test_dedupe_exact_and_near():
    tags = ["smile", "Smile", "smiling", "short_hair", "short hair", "smiles", "looking at viewer",
            "sitting", "sit", "1girl"]
    assert dedupe(tags) == ["smile", "smiling", "short_hair", "smiles", "looking at viewer", "sitting", "sit", "1girl"]
    assert dedupe(tags, near=True) == ["smile", "short_hair", "looking at viewer", "sitting", "1girl"]
    assert near_duplicates(["smile", "smiling", "hands up", "hand up"]) == [("smile", "smiling"),
                                                                           ("hands up", "hand up")]


def test_near_dedupe_keeps_different_tags():
    tags = ["red hair", "red eyes", "hair", "short hair", "open mouth", "closed mouth", "eye", "blue eyes"]
    assert dedupe(tags, near=True) == tags


def test_replace_add_remove():
    tags = ["1girl", "smiling", "simple background", "white background", "smile"]
    assert replace_tag(tags, "smiling", "smile") == ["1girl", "smile", "simple background", "white background"]
    assert replace_tag(tags, "SMILING", "") == ["1girl", "simple background", "white background", "smile"]
    assert remove_tags(tags, ["* background"]) == ["1girl", "smiling", "smile"]
    assert remove_tags(tags, ["simple_background"]) == ["1girl", "smiling", "white background", "smile"]
    assert add_tags(["a", "b"], ["c", "A", "d", "c"]) == ["a", "b", "c", "d"]
    assert add_tags(["a", "b"], ["c", "d"], front=True) == ["c", "d", "a", "b"]


def test_trigger_first_exactly_once():
    assert put_first(["1girl", "myLoRA", "smile", "mylora"], "myLoRA") == ["myLoRA", "1girl", "smile"]
    assert put_first(["1girl"], "myLoRA") == ["myLoRA", "1girl"]
    with pytest.raises(ValueError, match="empty"):
        put_first(["a"], " ")


def test_guide_order():
    tags = ["looking at viewer", "hand on hip", "standing", "white background", "glasses", "1girl",
            "red shirt", "myLoRA", "holding cup", "border", "full body", "smile"]
    assert order_tags(tags, trigger="myLoRA") == [
        "myLoRA",  # subject: the trigger word, then who
        "1girl",
        "glasses", "red shirt", "smile",  # switch on/off tags (in no list), in the caption's order
        "white background", "border",  # negative tags
        "standing",  # pose
        "hand on hip", "holding cup",  # position of hands
        "looking at viewer", "full body",  # camera shot / view
    ]


def test_custom_groups_and_their_file(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"negative": ["glasses"], "camera": ["cowboy shot"]}), encoding="utf-8")
    groups = TagGroups.load(path)
    assert groups.pose == TagGroups().pose  # keys left out keep their defaults
    assert order_tags(["cowboy shot", "glasses", "smile", "white background"], groups) == [
        "smile", "white background", "glasses", "cowboy shot"]  # "white background" is now a switch tag
    groups.save(tmp_path / "saved.json")
    assert TagGroups.load(tmp_path / "saved.json") == groups
    path.write_text(json.dumps({"poses": ["x"]}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown key.*poses"):
        TagGroups.load(path)
    path.write_text(json.dumps({"pose": "standing"}), encoding="utf-8")
    with pytest.raises(ValueError, match="'pose' must be a list"):
        TagGroups.load(path)


def test_frequency_counts_each_caption_once():
    captions = [["1girl", "smile", "Smile"], ["1girl", "short_hair"], ["short hair", "1girl"]]
    assert tag_frequency(captions) == [("1girl", 3), ("short_hair", 2), ("smile", 1)]
