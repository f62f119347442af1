"""`python -m lora_trainer tag FOLDER ...` (WD14 auto-tagging) and `... tags ACTION FOLDER ...` (batch
caption editing with undo)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .models import DEFAULT_MODEL, DEMO_MODEL, KNOWN_MODELS

EXISTING_HELP = "an image that has a caption: skip it (default), overwrite it, or append the new tags"


def register(subparsers) -> None:
    tag = subparsers.add_parser(
        "tag", help="auto-tag a folder of images with a WD14 tagger (writes image.txt captions)",
        description="Auto-tag the images of FOLDER with a WD14 tagger (onnxruntime; GPU when onnxruntime-gpu "
        "is installed). Each image gets a one-line caption file beside it; `tags undo FOLDER` reverts.")
    tag.add_argument("folder", type=Path)
    tag.add_argument("--model", default=DEFAULT_MODEL,
                     help=f"hub repository id, short name ({', '.join(KNOWN_MODELS)}), a folder with "
                     f"model.onnx + selected_tags.csv, or '{DEMO_MODEL}' (default {DEFAULT_MODEL})")
    tag.add_argument("--general", type=float, default=0.35, help="general tag threshold (0.35)")
    tag.add_argument("--character", type=float, default=0.85, help="character tag threshold (0.85)")
    tag.add_argument("--rating", action="store_true", help="keep the rating tag (dropped by default)")
    tag.add_argument("--exclude", action="append", default=[], metavar="TAGS",
                     help="tags never written, comma separated (repeatable)")
    tag.add_argument("--keep-underscores", action="store_true", help="write short_hair, not short hair")
    tag.add_argument("--existing", choices=("skip", "overwrite", "append"), default="skip", help=EXISTING_HELP)
    tag.add_argument("--trigger", help="put this word (the LoRA's subject, e.g. myLoRA) first in each caption")
    tag.add_argument("--only", nargs="+", metavar="IMAGE", help="only these images (names, stems, wildcards)")
    tag.add_argument("--recursive", action="store_true", help="include images in sub-folders")
    tag.add_argument("--batch-size", type=int, default=8, help="images per model call (8)")
    tag.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    tag.add_argument("--offline", action="store_true", help="never download; use the cache or a folder")
    tag.add_argument("--cache-dir", type=Path, help="Hugging Face cache folder (default: HF_HOME's)")
    tag.add_argument("--print", dest="show", action="store_true", help="print each image's tags and scores")
    tag.set_defaults(func=run_tag)

    tags = subparsers.add_parser(
        "tags", help="edit the captions of a folder: trigger, order, replace, add, remove, dedupe, undo",
        description="Batch caption editing in the guide's format. Every change can be reverted with "
        "`tags undo FOLDER` (the last one).")
    actions = tags.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str, func, selection: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help)
        parser.add_argument("folder", type=Path, help="the dataset folder (images with .txt captions)")
        if selection:
            parser.add_argument("--only", nargs="+", metavar="IMAGE",
                                help="only these images (file names, stems or wildcards)")
            parser.add_argument("--recursive", action="store_true", help="include images in sub-folders")
        parser.set_defaults(func=func)
        return parser

    p = action("trigger", "put the trigger word (the subject) first in every caption", run_edit)
    p.add_argument("word")
    p = action("order", "order tags as the guide says: subject, switch on/off tags, negative tags, pose, "
               "position of hands, camera shot/view", run_edit)
    p.add_argument("--trigger", help="also put this word first")
    p.add_argument("--groups", type=Path, help="JSON file of group word lists (see `tags groups`)")
    p = action("replace", "replace a tag (OLD may use * wildcards; NEW '' removes)", run_edit)
    p.add_argument("old")
    p.add_argument("new")
    p = action("add", "add tags (at the end) to every caption that lacks them", run_edit)
    p.add_argument("tags", nargs="+")
    p.add_argument("--front", action="store_true", help="add at the front instead")
    p = action("remove", "remove tags (wildcards allowed, e.g. '* background')", run_edit)
    p.add_argument("tags", nargs="+")
    p = action("dedupe", "remove duplicate tags", run_edit)
    p.add_argument("--near", action="store_true", help='also near-duplicates such as "smile" + "smiling"')
    p = action("set", "per-image editing: replace one image's caption", run_set, selection=False)
    p.add_argument("image", help="the image (path relative to FOLDER)")
    p.add_argument("caption", help='the new caption, e.g. "myLoRA, 1girl, smile"')
    p = action("show", "print the captions", run_show)
    p = action("freq", "the tag frequency table (how many captions hold each tag)", run_freq)
    p.add_argument("--top", type=int, default=0, help="only the N most frequent")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = action("undo", "revert the last change to the captions of FOLDER", run_undo, selection=False)
    p.add_argument("--force", action="store_true", help="also restore captions changed since")
    groups = actions.add_parser("groups", help="print the default group word lists as JSON (edit them, "
                                "then `tags order --groups FILE`)")
    groups.set_defaults(func=run_groups)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _split_list(values: list[str]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def run_tag(args: argparse.Namespace) -> int:
    from .autotag import tag_folder
    from .models import ModelNotFoundError, resolve_model
    from .tagger import Tagger, TagSettings

    try:
        settings = TagSettings(general_threshold=args.general, character_threshold=args.character,
                               include_rating=args.rating, exclude=tuple(_split_list(args.exclude)),
                               underscores_to_spaces=not args.keep_underscores)
        model = resolve_model(args.model, cache_dir=args.cache_dir, local_files_only=args.offline)
        tagger = Tagger(model, device=args.device, batch_size=args.batch_size)
        print(tagger.describe())
        progress = functools.partial(_progress, stream=sys.stderr)
        result = tag_folder(args.folder, tagger, settings, existing=args.existing, trigger=args.trigger,
                            only=args.only, recursive=args.recursive, progress=progress)
    except (ModelNotFoundError, FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        return _fail(str(e))
    if args.show:
        for image, prediction in result.predictions.items():
            scores = prediction.rating + prediction.character + prediction.general
            print(f"{image.name}: " + ", ".join(f"{t} ({s:.2f})" for t, s in scores))
    for error in result.errors:
        print(f"warning: {error}", file=sys.stderr)
    print(result.summary())
    if result.written:
        print(f"undo with: python -m lora_trainer tags undo {args.folder}")
    return 0


def _progress(done: int, total: int, stream) -> None:
    print(f"\r{done}/{total} images", end="\n" if done >= total else "", file=stream, flush=True)


def _edit_for(args: argparse.Namespace):
    """(label, tags -> tags) for the editing action in `args`."""
    from . import tagops
    from .order import TagGroups, order_tags

    if args.action == "trigger":
        return f"trigger {args.word}", functools.partial(tagops.put_first, trigger=args.word)
    if args.action == "order":
        groups = TagGroups.load(args.groups) if args.groups else TagGroups()
        return "order", functools.partial(order_tags, groups=groups, trigger=args.trigger)
    if args.action == "replace":
        return f"replace {args.old} -> {args.new}", functools.partial(tagops.replace_tag, old=args.old, new=args.new)
    if args.action == "add":
        new = _split_list(args.tags)
        return f"add {', '.join(new)}", functools.partial(tagops.add_tags, new=new, front=args.front)
    if args.action == "remove":
        patterns = _split_list(args.tags)
        return f"remove {', '.join(patterns)}", functools.partial(tagops.remove_tags, patterns=patterns)
    if args.action == "dedupe":
        return ("dedupe near" if args.near else "dedupe"), functools.partial(tagops.dedupe, near=args.near)
    raise ValueError(f"unknown action {args.action}")


def run_edit(args: argparse.Namespace) -> int:
    from .edit import edit_captions

    try:
        label, edit = _edit_for(args)
        result = edit_captions(args.folder, edit, label, only=args.only, recursive=args.recursive)
    except (FileNotFoundError, ValueError, OSError) as e:
        return _fail(str(e))
    print(result.summary())
    if args.action == "order" and not args.trigger:
        print("note: no --trigger given, so the trigger word was ordered like any other tag; "
              "run `tags trigger FOLDER WORD` (or order with --trigger WORD) to put it first")
    if result.changed:
        print(f"undo with: python -m lora_trainer tags undo {args.folder}")
    return 0


def run_set(args: argparse.Namespace) -> int:
    from .edit import set_caption
    from .tagtext import split_caption

    try:
        result = set_caption(args.folder, args.image, split_caption(args.caption))
    except (FileNotFoundError, ValueError, OSError) as e:
        return _fail(str(e))
    print(result.summary())
    return 0


def _captions(args: argparse.Namespace):
    from .files import list_images, read_caption, select_images

    images = select_images(list_images(args.folder, args.recursive), args.only)
    return [(image, read_caption(image)) for image in images]


def run_show(args: argparse.Namespace) -> int:
    from .tagtext import join_caption

    try:
        captions = _captions(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        return _fail(str(e))
    for image, tags in captions:
        print(f"{image.relative_to(args.folder)}: {join_caption(tags) if tags else '(no caption)'}")
    return 0


def run_freq(args: argparse.Namespace) -> int:
    from .tagops import tag_frequency

    try:
        captions = _captions(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        return _fail(str(e))
    table = tag_frequency(tags for _, tags in captions)
    if args.top:
        table = table[:args.top]
    if args.json:
        print(json.dumps(dict(table), indent=2, ensure_ascii=False))
        return 0
    width = max((len(t) for t, _ in table), default=3)
    print(f"{'tag':<{width}}  count  of {len(captions)} captions")
    for tag, count in table:
        print(f"{tag:<{width}}  {count:>5}")
    return 0


def run_undo(args: argparse.Namespace) -> int:
    from .edit import undo

    try:
        result = undo(args.folder, force=args.force)
    except (LookupError, ValueError, OSError) as e:
        return _fail(str(e))
    print(result.summary())
    return 0


def run_groups(args: argparse.Namespace) -> int:
    from .order import TagGroups

    print(json.dumps({k: list(v) for k, v in asdict(TagGroups()).items()}, indent=2))
    return 0
