"""Forge calls `preload(parser)` before parsing its command line: our flags live here."""


def preload(parser):
    parser.add_argument(
        "--lora-trainer-dir",
        type=str,
        default=None,
        help="LoRA Trainer: workspace folder for datasets, runs and outputs "
        "(default: <webui>/lora_trainer_workspace)",
    )
