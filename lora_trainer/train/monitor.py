"""What a run reports while it trains: TensorBoard scalars (kohya's names, so existing habits and
dashboards work) and the JSON-lines event stream."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from lora_trainer.runs import layout
from lora_trainer.train.events import EventLog
from lora_trainer.train.state import Progress


class Monitor:
    def __init__(self, run_dir: Path | None, events: EventLog, progress: Progress):
        # On resume, purge_step drops points a stopped run logged after its last saved state.
        first_step = progress.global_step + 1 if progress.global_step else None
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=first_step) if run_dir else None
        self.events = events
        self.progress = progress

    def step(self, step: int, epoch: int, loss: float, learning_rates: dict[str, float]) -> None:
        self.progress.epoch_loss_sum += loss
        self.progress.epoch_loss_count += 1
        average = self.progress.epoch_loss_sum / self.progress.epoch_loss_count
        if self.writer:
            self.writer.add_scalar("loss/current", loss, step)
            self.writer.add_scalar("loss/average", average, step)
            for name, lr in learning_rates.items():
                self.writer.add_scalar(f"lr/{name}", lr, step)
        self.events.emit(layout.STEP, step=step, epoch=epoch, loss=loss, average_loss=average, lr=learning_rates)

    def end_epoch(self, epoch: int) -> float:
        count = max(self.progress.epoch_loss_count, 1)
        epoch_loss = self.progress.epoch_loss_sum / count
        if self.writer:
            self.writer.add_scalar("loss/epoch", epoch_loss, epoch)
            self.writer.flush()
        self.events.emit(layout.EPOCH_END, epoch=epoch, loss=epoch_loss, step=self.progress.global_step)
        self.progress.epoch_loss_sum, self.progress.epoch_loss_count = 0.0, 0
        return epoch_loss

    def validation(self, epoch: int, loss: float, images: int) -> None:
        if self.writer:
            self.writer.add_scalar("loss/validation", loss, epoch)
            self.writer.flush()
        self.events.emit(layout.VALIDATION, epoch=epoch, loss=loss, step=self.progress.global_step, images=images)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
