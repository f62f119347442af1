"""The events a real run writes are the ones runs/layout.py declares, field for field, so the UI
(which reads by the declaration) sees every one of them."""

from __future__ import annotations

import pytest

from lora_trainer.config.presets import load_preset
from lora_trainer.runs import layout
from lora_trainer.runs.layout import RunFiles, check_event, request_stop
from lora_trainer.train.events import read_events
from lora_trainer.train.trainer import train

pytestmark = pytest.mark.slow


def test_a_stopped_and_resumed_run_writes_only_declared_events(tiny_sdxl, character_dataset, tmp_path):
    next(character_dataset.glob("*/*.txt")).unlink()  # an image without caption: a warning
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(character_dataset), output_dir=str(tmp_path / "model"),
                      logging_dir=str(tmp_path / "log"), output_name="myLoRA", network_train_unet_only=True,
                      max_train_epochs=1, validation_split=1)  # one image held out: a validation event

    def stop_at_step_2(event):
        if event["event"] == layout.STEP and event["step"] == 2:
            request_stop(cfg.output_dir, cfg.output_name)

    stopped = train(cfg, model_config_dir=str(tiny_sdxl.config_dir), on_event=stop_at_step_2)
    resumed = train(cfg, model_config_dir=str(tiny_sdxl.config_dir),
                    resume_from=RunFiles(cfg.output_dir, cfg.output_name).state_dir)
    assert stopped.run_dir == resumed.run_dir

    events = read_events(layout.events_file(resumed.run_dir))
    for event in events:
        fields = {k: v for k, v in event.items() if k not in ("event", "time")}
        check_event(event["event"], fields)
    kinds = {e["event"] for e in events}
    assert kinds == set(layout.EVENT_FIELDS) - {layout.ERROR}
    finished = events[-1]
    assert finished["event"] == layout.FINISHED
    assert (finished["epoch"], finished["step"]) == (1, 7)  # 8 images, 1 held out
    assert finished["path"] == str(RunFiles(cfg.output_dir, cfg.output_name).final_lora)
