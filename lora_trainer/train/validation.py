"""The validation loss: how well the LoRA predicts the noise on images it never trains on.

Every held-out image is noised at the same timesteps with the same noise each time (drawn once from
`validation_seed`), so two evaluations differ only by the weights: a falling curve means the LoRA
generalises, a rising one that it memorises its training photos. The loss is the plain squared error
(whatever loss_type trains), averaged over the images and the timesteps.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from lora_trainer.config import TrainConfig
from lora_trainer.train.batches import TrainingBatches

# Spread over the schedule: low-noise steps judge detail, high-noise ones composition.
VALIDATION_TIMESTEPS = (100, 300, 500, 700, 900)


class Validator:
    def __init__(self, cfg: TrainConfig, batches: TrainingBatches, noise_scheduler,
                 timesteps: tuple[int, ...] = VALIDATION_TIMESTEPS):
        self.cfg, self.batches, self.noise_scheduler = cfg, batches, noise_scheduler
        self.timesteps = torch.tensor(timesteps, dtype=torch.long)
        seed = cfg.seed if cfg.validation_seed is None else cfg.validation_seed
        rng = torch.Generator().manual_seed(seed)
        self.samples = []  # (latent [4, h, w], caption, time_ids [6], noise [T, 4, h, w]) on the CPU
        for item, geometry in batches.validation:
            latent = batches.latents.get(item.path, geometry, False)
            noise = torch.randn((len(self.timesteps), *latent.shape), generator=rng)
            self.samples.append((latent, item.caption, torch.tensor(geometry.time_ids(False)), noise))

    def __len__(self) -> int:
        return len(self.samples)

    @torch.no_grad()
    def loss(self, unet, model, text_encoders, accelerator: Accelerator, weight_dtype: torch.dtype) -> float:
        """The mean validation loss over every process's share of the held-out images."""
        device = accelerator.device
        total = torch.zeros(2, device=device)  # [sum of losses, count]
        chunk = max(1, self.cfg.train_batch_size)
        was_training = unet.training
        unet.eval()
        try:
            mine = self.samples[accelerator.process_index::accelerator.num_processes]
            with accelerator.autocast():  # as in training: base weights and LoRA weights may differ in dtype
                for latent, caption, time_ids, noise in mine:
                    for start in range(0, len(self.timesteps), chunk):
                        steps = self.timesteps[start:start + chunk].to(device)
                        total += self._chunk(unet, model, text_encoders, latent, caption, time_ids,
                                             noise[start:start + chunk], steps, weight_dtype)
        finally:
            unet.train(was_training)
        total = accelerator.reduce(total, reduction="sum")
        return (total[0] / total[1].clamp(min=1)).item()

    def _chunk(self, unet, model, text_encoders, latent, caption, time_ids, noise, steps, weight_dtype):
        n, device = len(steps), steps.device
        latents = latent.to(device).unsqueeze(0).expand(n, *latent.shape)
        noise = noise.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, steps)
        prompt_embeds, pooled = self.batches.embed([caption] * n, model, text_encoders)
        prediction = unet(noisy.to(weight_dtype), steps, prompt_embeds.to(weight_dtype),
                          added_cond_kwargs={"text_embeds": pooled.to(weight_dtype),
                                             "time_ids": time_ids.to(device, weight_dtype).expand(n, -1)}).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, steps)
        else:
            target = noise
        per_sample = (prediction.float() - target.float()).square().mean(dim=(1, 2, 3))
        return torch.stack([per_sample.sum(), torch.tensor(float(n), device=device)])
