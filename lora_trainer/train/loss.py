"""The noise a training step adds and the loss it takes: the options kohya sd-scripts users know.

- `make_noise`: Gaussian noise, plus a per-channel offset (`noise_offset`: brightness can be learned)
  and multi-resolution ("pyramid") noise (`multires_noise_iterations` / `multires_noise_discount`: noise
  at coarser scales, so large areas can change colour as a whole).
- `elementwise_loss`: squared error (`loss_type` "l2"), or the pseudo-Huber loss ("huber",
  "smooth_l1"; Khrapov et al. 2024, "Improving Diffusion Models's Data-Corruption Resistance using
  Scheduled Pseudo-Huber Loss"), whose `huber_c` can follow the timestep (`huber_schedule`): it grows
  linearly, not quadratically, for large errors, so a few odd images pull less.
- `timestep_weights`: Min-SNR weighting (`min_snr_gamma`) and the debiased estimation weight
  1/sqrt(SNR) (`debiased_estimation_loss`), per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SNR_CAP = 1000.0  # the debiased weight 1/sqrt(SNR) at the lowest-noise timesteps stays above 1/sqrt(1000)


def make_noise(latents: torch.Tensor, rng: torch.Generator, *, offset: float = 0.0, multires_iterations: int = 0,
               multires_discount: float = 0.3) -> torch.Tensor:
    """Noise shaped like `latents`, drawn from `rng` (the plain noise first, so the options only add)."""
    noise = torch.randn(latents.shape, generator=rng, device=latents.device)
    if offset:
        noise = noise + offset * torch.randn((*latents.shape[:2], 1, 1), generator=rng, device=latents.device)
    if multires_iterations:
        noise = _add_pyramid(noise, rng, multires_iterations, multires_discount)
    return noise


def _add_pyramid(noise: torch.Tensor, rng: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    """Add noise drawn at ever smaller sizes (each a random 2-4x smaller than the last), enlarged back
    and weighted discount**level, then bring each sample back to unit standard deviation."""
    batch, channels, height, width = noise.shape
    total = noise.clone()
    scale = 1.0
    for level in range(1, iterations + 1):
        scale *= 2 + 2 * torch.rand((), generator=rng, device=noise.device).item()
        h, w = max(1, int(height / scale)), max(1, int(width / scale))
        coarse = torch.randn((batch, channels, h, w), generator=rng, device=noise.device)
        total += F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * discount ** level
        if h == 1 or w == 1:
            break
    return total / total.std(dim=(1, 2, 3), keepdim=True)


def huber_c(noise_scheduler, timesteps: torch.Tensor, c: float, schedule: str) -> torch.Tensor:
    """The pseudo-Huber parameter per sample: `c` ("constant"), from 1 at t=0 down to `c` at the last
    timestep ("exponential"), or shrinking with the noise level sigma(t) ("snr")."""
    if schedule == "constant":
        return torch.full(timesteps.shape, c, dtype=torch.float32, device=timesteps.device)
    if schedule == "exponential":
        steps = noise_scheduler.config.num_train_timesteps
        return torch.exp(timesteps.float() * (math.log(c) / steps))
    if schedule == "snr":
        alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        sigma = ((1 - alphas) / alphas).sqrt()
        return (1 - c) / (1 + sigma) ** 2 + c
    raise ValueError(f"huber_schedule must be constant, exponential or snr, got {schedule!r}")


def elementwise_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str = "l2",
                     c: torch.Tensor | None = None) -> torch.Tensor:
    """The loss per element: squared error, or the pseudo-Huber loss with parameter `c` per sample
    ("huber": 2c(sqrt(d^2 + c^2) - c), about d^2 for small d and 2c|d| for large; "smooth_l1": the
    same without the factor c)."""
    diff = prediction.float() - target.float()
    if loss_type == "l2":
        return diff.square()
    c = c.view(-1, *[1] * (diff.dim() - 1))
    smooth = torch.sqrt(diff.square() + c.square()) - c
    if loss_type == "huber":
        return 2 * c * smooth
    if loss_type == "smooth_l1":
        return 2 * smooth
    raise ValueError(f"loss_type must be l2, huber or smooth_l1, got {loss_type!r}")


def timestep_weights(snr: torch.Tensor, *, v_prediction: bool, min_snr_gamma: float = 0.0,
                     debiased: bool = False) -> torch.Tensor:
    """Each sample's loss weight from its timestep's signal-to-noise ratio."""
    weight = torch.ones_like(snr)
    if min_snr_gamma:
        # Min-SNR weighting (Hang et al. 2023): low-noise steps stop dominating the loss.
        weight = weight * torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if v_prediction else snr)
    if debiased:
        # Debiased estimation (Yu et al. 2023): 1/sqrt(SNR) evens out what each timestep contributes
        # (for v-prediction, whose loss already carries a factor SNR + 1: 1/(SNR + 1)).
        capped = torch.clamp(snr, max=SNR_CAP)
        weight = weight / (capped + 1 if v_prediction else torch.sqrt(capped))
    return weight
