"""The standalone renderer: a diffusers SDXL pipeline built once from the base model, rendering one
`RenderJob` at a time, for `python -m lora_trainer grid` and the standalone UI (Forge renders with its
own txt2img instead).

The same job renders the same bytes on the same machine: the seed goes through a CPU generator. Each
LoRA file is loaded once as its own adapter and switched per job; the baseline disables them. LoHa,
LoKr and DoRA files, which diffusers cannot apply, are merged into the weights instead (merged_lora.py). torch
and diffusers are imported when a renderer is built, not at import.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from lora_trainer.review.spec import RenderError, RenderJob

# WebUI sampler name -> (diffusers scheduler class, extra config). "Karras" in the name, or the
# job's scheduler "Karras", uses Karras sigmas.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                            "use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
SCHEDULERS = ("Automatic", "Karras")  # the WebUI's schedule types this renderer follows
_KARRAS_CAPABLE = {"EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"}
MAX_ADAPTERS = 8  # LoRA files kept loaded; the oldest goes beyond


def check_sampler(sampler: str, scheduler: str = "Automatic") -> None:
    """A RenderError naming an unknown sampler or schedule type and the known ones (torch-free)."""
    if sampler not in SAMPLERS:
        raise RenderError(f"unknown sampler {sampler!r}: the standalone renderer knows "
                          f"{', '.join(SAMPLERS)}")
    if scheduler not in SCHEDULERS:
        raise RenderError(f"unknown schedule type {scheduler!r}: the standalone renderer knows "
                          f"{', '.join(SCHEDULERS)}")


class DiffusersRenderer:
    """SDXL from a single-file checkpoint (offline with `config_dir`) or a diffusers folder."""

    def __init__(self, model: str, config_dir: str | None = None, *, device: str | None = None):
        import torch
        from diffusers import StableDiffusionXLPipeline

        from lora_trainer.train.model import ModelLoadError, load_sdxl

        self.model = str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda"):
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        try:
            sdxl = load_sdxl(self.model, config_dir=str(config_dir) if config_dir else None,
                             device=self.device, dtype=self.dtype)
        except ModelLoadError as e:
            raise RenderError(str(e)) from None
        self._scheduler_config = dict(sdxl.noise_scheduler.config)
        self.pipe = StableDiffusionXLPipeline(
            vae=sdxl.vae, text_encoder=sdxl.text_encoder_1, text_encoder_2=sdxl.text_encoder_2,
            tokenizer=sdxl.tokenizer_1, tokenizer_2=sdxl.tokenizer_2, unet=sdxl.unet,
            scheduler=self._make_scheduler("Euler", "Automatic"), add_watermarker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self._adapters: OrderedDict[tuple, str] = OrderedDict()  # (file, mtime, size) -> adapter name
        self._next_adapter = 0
        self._lora_enabled = False
        from lora_trainer.review.merged_lora import WeightPatcher

        self._patcher = WeightPatcher(self.pipe)

    # -- one image -------------------------------------------------------------------------------

    def render(self, job: RenderJob):
        """The job's image (PIL); a RenderError says why not."""
        import torch

        settings = job.settings
        check_sampler(settings.sampler, settings.scheduler)
        self.pipe.scheduler = self._make_scheduler(settings.sampler, settings.scheduler)
        self._select_lora(job)
        generator = torch.Generator("cpu").manual_seed(int(job.seed))
        with torch.inference_mode():
            latents = self.pipe(
                prompt=job.prompt, negative_prompt=settings.negative_prompt or None,
                num_inference_steps=settings.steps, guidance_scale=settings.cfg_scale,
                width=settings.width, height=settings.height, generator=generator, output_type="latent",
            ).images
            return self._decode(latents)

    def _decode(self, latents):
        """Latents to a PIL image with the VAE in float32 (the fp16 SDXL VAE makes NaNs)."""
        import torch

        vae = self.pipe.vae
        latents = latents.to(vae.device, torch.float32)
        config = vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")[0]

    def _make_scheduler(self, sampler: str, scheduler: str):
        import diffusers

        class_name, extra = SAMPLERS[sampler]
        extra = dict(extra)
        if scheduler == "Karras" and class_name in _KARRAS_CAPABLE:
            extra["use_karras_sigmas"] = True
        return getattr(diffusers, class_name).from_config(self._scheduler_config, **extra)

    # -- LoRA adapters ---------------------------------------------------------------------------

    def _select_lora(self, job: RenderJob) -> None:
        from lora_trainer.review.merged_lora import needs_merging

        path = Path(job.lora.path) if job.lora is not None else None
        if path is not None and needs_merging(path):  # LoHa, LoKr, DoRA: merged into the weights
            self._disable_adapters()
            self._patcher.apply(path, float(job.lora.weight))
            return
        self._patcher.restore()
        if path is None:
            self._disable_adapters()
            return
        name = self._adapter_for(path)
        self.pipe.enable_lora()
        self.pipe.set_adapters([name], [float(job.lora.weight)])
        self._lora_enabled = True

    def _disable_adapters(self) -> None:
        if self._lora_enabled:
            self.pipe.disable_lora()
            self._lora_enabled = False

    def _adapter_for(self, path: Path) -> str:
        try:
            stat = path.stat()
        except OSError as e:
            raise RenderError(f"LoRA file not found: {path} ({e.strerror or e})") from None
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key]
        while len(self._adapters) >= MAX_ADAPTERS:
            _, oldest = self._adapters.popitem(last=False)
            self._delete_adapter(oldest)
        name = f"review_lora_{self._next_adapter}"  # adapter names become module keys: no dots
        self._next_adapter += 1
        try:
            self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except Exception as e:  # diffusers' and safetensors' errors do not name the file
            self._delete_adapter(name)
            raise RenderError(f"could not read the LoRA file {path}: {type(e).__name__}: {e}") from None
        self._adapters[key] = name
        return name

    def _delete_adapter(self, name: str) -> None:
        try:
            self.pipe.delete_adapters([name])
        except Exception:  # a half-loaded adapter may be missing from some components
            pass
