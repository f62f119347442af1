"""`prepare`, `audit`, `background` and `edit` sub-commands of `python -m lora_trainer`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _colour(text: str) -> tuple[int, int, int]:
    """'128,128,128' or '#808080' -> (128, 128, 128)."""
    text = text.strip()
    try:
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
        parts = tuple(int(v) for v in text.split(","))
        if len(parts) == 3 and all(0 <= v <= 255 for v in parts):
            return parts
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"colour {text!r}: use R,G,B (0-255 each) or #RRGGBB")


def _add_edit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edits (1.0 = unchanged)")
    g.add_argument("--sharpen", type=float, default=0.0, help="unsharp mask strength in percent (e.g. 80)")
    g.add_argument("--brightness", type=float, default=1.0)
    g.add_argument("--contrast", type=float, default=1.0)
    g.add_argument("--saturation", type=float, default=1.0)
    g.add_argument("--autolevel", action="store_true", help="stretch each channel's levels")


def _edits(args):
    from .edits import Edits

    return Edits(sharpen=args.sharpen, brightness=args.brightness, contrast=args.contrast,
                 saturation=args.saturation, autolevel=args.autolevel)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="import photos (folder, files, zip) into a project and write training images",
        description="Import photos into PROJECT/sources (byte-for-byte copies; the originals are never "
                    "touched) and write PROJECT/img/<repeats>_<name>/*.png: 8-bit RGB, framed to SIZE. "
                    "Every input gets a report line; the report is also saved as PROJECT/prepare-report.json.")
    p.add_argument("inputs", nargs="*", help="folders, image files or .zip archives (none: re-prepare the "
                                             "project's own sources)")
    p.add_argument("--project", required=True, type=Path, help="the project folder")
    p.add_argument("--name", required=True, help="the LoRA / concept name, e.g. myLoRA")
    p.add_argument("--repeats", type=int, default=1, help="repeats per epoch (folder prefix), default 1")
    p.add_argument("--size", type=int, default=1024, help="square side, or the maximum side with --bucket")
    p.add_argument("--bucket", action="store_true", help="keep the aspect (for bucket training): fit, no pad")
    p.add_argument("--fill", type=_colour, default=(128, 128, 128), help="padding colour, default 128,128,128")
    p.add_argument("--alpha-fill", type=_colour, default=(128, 128, 128),
                   help="colour transparent pixels become, default 128,128,128")
    p.add_argument("--upscale-small", "--upscale", dest="upscale", action="store_true",
                   help="enlarge images smaller than SIZE (and face crops for close-ups) to SIZE; without it "
                        "they are padded and reported (close-ups from too small crops are not made)")
    p.add_argument("--crop", choices=("none", "subject", "face"), default="none",
                   help="automatic crop: subject (needs --remove-background) or face")
    p.add_argument("--boxes", type=Path, help="JSON file {name: [left, top, right, bottom]} of manual crops")
    p.add_argument("--closeups", choices=("off", "auto", "all"), default="off",
                   help="extra face close-ups from half/full body shots (auto: until 1/3 are close-ups)")
    p.add_argument("--remove-background", action="store_true",
                   help="replace the background with a random colour (rembg); masks go to PROJECT/masks")
    p.add_argument("--model", default="u2net", help="rembg model name or .onnx path (default u2net)")
    p.add_argument("--seed", type=int, default=0, help="seed for the background colours")
    p.add_argument("--download-model", action="store_true", help="let rembg download a missing model")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="refuse images larger than this (decompression-bomb guard), default ~89")
    p.add_argument("--keep-duplicates", action="store_true", help="prepare same-content files again")
    p.add_argument("--compress-level", type=int, default=3,
                   help="PNG compression 0-9 (default 3: fast; 6-9 give files a few percent smaller)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU core)")
    p.add_argument("--caption-encoding", default="", metavar="NAME",
                   help="the captions' encoding when they are not UTF-8 or UTF-16 with a byte-order mark "
                        "(e.g. cp1252, latin-1, shift_jis); by default such captions are reported and their "
                        "images skipped")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_edit_options(p)
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser("audit", help="quality report on a folder of images before training",
                              description="Check count, resolution, blur, saturation / colour cast, "
                                          "exposure, near-duplicates and the shot mix against the guide.")
    p.add_argument("folder", type=Path, help="a folder of images, e.g. PROJECT/img/1_myLoRA")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--output", type=Path, help="also write the JSON report to this file")
    p.add_argument("--blur-threshold", type=float, default=None,
                   help="flag images whose sharpness (0-100: how steep their crispest edges are for their "
                        "contrast, not how much detail they have) is below this; default 35")
    p.set_defaults(func=cmd_audit)

    p = subparsers.add_parser("background", help="replace backgrounds of images with random colours (rembg)",
                              description="Writes OUTPUT/<stem>.png and OUTPUT/<stem>_mask.png; inputs untouched.")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--output", required=True, type=Path, help="output folder")
    p.add_argument("--model", default="u2net", help="rembg model name or .onnx path (default u2net)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download-model", action="store_true", help="let rembg download a missing model")
    p.set_defaults(func=cmd_background)

    p = subparsers.add_parser("edit", help="batch edits: sharpen, brightness, contrast, saturation, auto-level",
                              description="Writes OUTPUT/<stem>.png for each input; inputs untouched.")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--output", required=True, type=Path, help="output folder")
    _add_edit_options(p)
    p.set_defaults(func=cmd_edit)


def _expand(inputs: list[Path]) -> list[Path]:
    from .audit import list_images

    out = []
    for path in inputs:
        if path.is_dir():
            out.extend(list_images(path))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return out


def cmd_prepare(args) -> int:
    from ..project import Project
    from .background import ModelMissingError
    from .loading import DEFAULT_MAX_PIXELS
    from .prepare import PrepareOptions, prepare

    try:
        boxes = read_boxes(args.boxes) if args.boxes else None
        options = PrepareOptions(
            size=args.size, mode="bucket" if args.bucket else "pad", fill=args.fill, alpha_fill=args.alpha_fill,
            upscale=args.upscale, crop=args.crop, edits=_edits(args), background=args.remove_background,
            background_model=args.model, background_seed=args.seed, allow_download=args.download_model,
            closeups=args.closeups, keep_duplicates=args.keep_duplicates, compress_level=args.compress_level,
            max_pixels=int(args.max_megapixels * 1e6) if args.max_megapixels else DEFAULT_MAX_PIXELS,
            workers=args.workers, caption_encoding=args.caption_encoding)
        report = prepare(args.inputs, Project(args.project, args.name, args.repeats), options, boxes=boxes)
    except (ValueError, FileNotFoundError, ModelMissingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text(), end="")
    return 0 if report.count("ok") else 1


def read_boxes(path: Path) -> dict[str, list[int]]:
    """The `--boxes` file: {name: [left, top, right, bottom]}; errors name the file and the entry."""
    from ..captions.encoding import decode_text

    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024 + 1)
    except OSError as e:
        raise ValueError(f"--boxes {path}: cannot read it: {e.strerror or e}") from None
    if len(data) > 16 * 1024 * 1024:
        raise ValueError(f"--boxes {path}: over 16 MB, not a list of crop boxes")
    try:
        boxes = json.loads(decode_text(data, f"--boxes {path}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"--boxes {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; "
                         'it should look like {"photo1": [left, top, right, bottom]}') from None
    if not isinstance(boxes, dict):
        raise ValueError(f'--boxes {path}: must be a JSON object {{"name": [left, top, right, bottom]}}')
    for name, box in boxes.items():
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in box)
                and box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"--boxes {path}: {name!r}: {box!r} is not [left, top, right, bottom] "
                             "(pixels, left < right, top < bottom)")
    return boxes


def cmd_audit(args) -> int:
    from .audit import AuditThresholds, audit_folder

    try:
        thresholds = AuditThresholds() if args.blur_threshold is None else \
            AuditThresholds(blur_threshold=args.blur_threshold)
        report = audit_folder(args.folder, thresholds=thresholds)
    except (FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output:
        from ..fsutil import write_text_atomic

        try:
            write_text_atomic(args.output, report.to_json() + "\n")
        except OSError as e:
            print(f"error: cannot write the report to {args.output}: {e.strerror or e}", file=sys.stderr)
            return 2
    print(report.to_json() if args.json else report.to_text(), end="\n" if args.json else "")
    return 0


def cmd_background(args) -> int:
    from .background import ModelMissingError, remove_backgrounds
    from .loading import ImageProblem

    try:
        records = remove_backgrounds(_expand(args.inputs), args.output, model=args.model, seed=args.seed,
                                     allow_download=args.download_model)
    except (ValueError, FileNotFoundError, ModelMissingError, ImageProblem, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in records:
        print(f"{r['source']} -> {r['output']} (background {tuple(r['color'])}, mask {r['mask']})")
    return 0


def cmd_edit(args) -> int:
    from .edits import edit_files
    from .loading import ImageProblem

    try:
        written = edit_files(_expand(args.inputs), _edits(args), args.output)
    except (ValueError, FileNotFoundError, ImageProblem, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
