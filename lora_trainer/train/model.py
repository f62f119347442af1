"""Load the SDXL model a LoRA is trained on.

Accepted: a single-file `.safetensors` checkpoint (what Forge users keep in
models/Stable-diffusion), a `.ckpt`/`.pt` pickle holding only tensors, a diffusers folder, or a
hub id. A single file needs a local config folder (Forge ships one; standalone, SDXL base's
small config files come from the hub once and stay in huggingface-hub's cache): diffusers goes
to the network without one, even with `local_files_only`.

The architecture is read from the file's keys before any weight is loaded (the safetensors
header is a few kilobytes), so an SD 1.5, SD 2, refiner, Flux or SD3 file is refused at once with
a message naming the file and what it looks like.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lora_trainer.host import FORGE_CONFIG_SUBDIR
from lora_trainer.train.sgm_names import (
    CLIP_G_PREFIX,
    CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    sdxl_single_file_state_dict,
)

SDXL_BASE_HUB_ID = "stabilityai/stable-diffusion-xl-base-1.0"
# The config folder's files (a few MB in all); never the weights.
CONFIG_FILE_PATTERNS = ["model_index.json", "*/config.json", "scheduler/*.json", "tokenizer*/*"]
CONFIG_DIR_FILES = (
    "model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
    "text_encoder_2/config.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
    "tokenizer_2/vocab.json",
)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SDXL_ADVICE = ("This trainer makes SDXL LoRAs: choose an SDXL checkpoint (SDXL 1.0 base or a model "
               "fine-tuned from it).")


class ModelLoadError(ValueError):
    """The model cannot be used; the message names the file and says why."""


@dataclass
class SDXLModel:
    unet: Any
    vae: Any
    text_encoder_1: Any
    text_encoder_2: Any
    tokenizer_1: Any
    tokenizer_2: Any
    noise_scheduler: Any
    source: str
    model_name: str


def load_sdxl(source: str, *, config_dir: str | None = None, vae: str = "", device: str | torch.device = "cpu",
              dtype: torch.dtype | None = torch.float32, allow_download: bool = True) -> SDXLModel:
    """Load SDXL from a single file, a diffusers folder or a hub id, frozen and in eval mode.

    `config_dir`: the diffusers-layout config folder for a single file (Forge's
    `backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0`); found or fetched once when
    not given. `vae`: a VAE file or folder that replaces the model's own. U-Net and text encoders
    get `dtype` (None: the dtype a single file stores them in, float32 for a diffusers folder); the
    VAE stays in float32 (the fp16 SDXL VAE makes NaNs).
    """
    path = Path(source).expanduser()
    if path.is_file():
        model = _load_single_file(path, config_dir, vae, allow_download)
    elif path.is_dir():
        model = _load_diffusers(str(path), path.name, vae)
    elif _looks_like_hub_id(source):
        model = _load_diffusers(source, source, vae)
    else:
        raise ModelLoadError(f"model not found: {source} (no such file or folder)")
    return _prepare(model, device, dtype)


def _prepare(model: SDXLModel, device, dtype: torch.dtype | None) -> SDXLModel:
    for module in (model.unet, model.text_encoder_1, model.text_encoder_2):
        module.requires_grad_(False).eval().to(device, *([dtype] if dtype else []))
    model.vae.requires_grad_(False).eval().to(device, torch.float32)
    return model


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not source.endswith(
        (".safetensors",) + PICKLE_SUFFIXES
    )


# ---------------------------------------------------------------------------------------------
# Reading keys cheaply and telling architectures apart


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's header, without reading any weight."""
    return {k: tuple(v["shape"]) for k, v in _safetensors_header(path).items() if k != "__metadata__"}


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            return json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as e:
        raise ModelLoadError(f"{path} is not a readable .safetensors file ({e}); "
                             "an interrupted download leaves such files") from None


STORED_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def stored_dtype(path: Path) -> torch.dtype:
    """The dtype most of a checkpoint's U-Net weights are stored in (float32 when the file does not
    say: a pickle). Loading in it is exact and, for the usual fp16 files, takes half the memory of
    float32 (a full SDXL loaded as float32 peaks above 13 GiB of RAM)."""
    if path.suffix.lower() != ".safetensors":
        return torch.float32
    counts: dict[str, int] = {}
    for key, entry in _safetensors_header(path).items():
        if key.startswith("model.diffusion_model.") and entry.get("dtype") in STORED_DTYPES:
            counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + 1
    return STORED_DTYPES[max(counts, key=counts.get)] if counts else torch.float32


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A `.ckpt`/`.pt` state dict, loaded only if it holds nothing but tensors and plain values."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # old (non-zip) pickles cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0]
        raise ModelLoadError(
            f"{path} was not loaded: this pickle holds Python objects besides tensors, and loading it could "
            f"run code ({reason}). Use a .safetensors version of the model."
        ) from None
    except Exception as e:  # not a pickle at all, truncated, ...
        raise ModelLoadError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a checkpoint's state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def meta_sdxl(config_dir: str | Path):
    """U-Net, VAE and both text encoders of the config folder, on the meta device (no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config_dir = Path(config_dir)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2"))
    return unet, vae, te1, te2


def read_checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a `.safetensors` (header only) or tensors-only pickle checkpoint."""
    if path.suffix.lower() == ".safetensors":
        return read_safetensors_header(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return {k: tuple(v.shape) for k, v in _load_pickle(path).items()}
    raise ModelLoadError(f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors or .ckpt")


ARCHITECTURES = {
    "sdxl": "an SDXL base checkpoint",
    "sdxl_refiner": "an SDXL refiner checkpoint (it refines SDXL images; LoRAs are trained on the base)",
    "sdxl_inpaint": "an SDXL inpainting checkpoint",
    "sdxl_edm": "a Playground v2.5-style SDXL checkpoint (EDM noise schedule, which this trainer does not use)",
    "sdxl_unet_only": "an SDXL U-Net without text encoders",
    "sd1": "a Stable Diffusion 1.x checkpoint",
    "sd2": "a Stable Diffusion 2.x checkpoint",
    "flux": "a Flux checkpoint",
    "sd3": "a Stable Diffusion 3 checkpoint",
    "lora": "a LoRA, not a full model",
    "vae": "a VAE on its own, not a full model",
    "unknown": "no model this trainer knows",
}


def detect_architecture(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """One of ARCHITECTURES' keys, from checkpoint key names (and a shape or two)."""
    keys = shapes.keys()

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    def contains(part: str) -> bool:
        return any(part in k for k in keys)

    if has("lora_unet_") or has("lora_te") or contains(".lora_down.") or contains(".lora_A."):
        return "lora"
    if contains("double_blocks.") and contains("single_blocks."):
        return "flux"
    if contains("joint_blocks."):
        return "sd3"
    if has("conditioner.embedders.0.model.") and not has("conditioner.embedders.1."):
        return "sdxl_refiner"
    if has(UNET_PREFIX + "label_emb.") and not has("conditioner."):
        return "sdxl_unet_only"
    if has(CLIP_L_PREFIX) and has(CLIP_G_PREFIX) and has(UNET_PREFIX + "label_emb."):
        if "edm_mean" in keys:
            return "sdxl_edm"
        if shapes.get(UNET_PREFIX + "input_blocks.0.0.weight", (0, 4))[1] != 4:
            return "sdxl_inpaint"
        return "sdxl"
    if has("cond_stage_model.model."):
        return "sd2"
    if has("cond_stage_model.transformer."):
        return "sd1"
    if not has(UNET_PREFIX) and any(k.split(".", 1)[-1].startswith("encoder.conv_in.") or
                                    k.startswith("encoder.conv_in.") for k in keys):
        return "vae"
    return "unknown"


def _require_sdxl(path: Path, shapes: Mapping[str, tuple[int, ...]], has_user_vae: bool) -> None:
    kind = detect_architecture(shapes)
    if kind != "sdxl":
        raise ModelLoadError(f"{path} looks like {ARCHITECTURES[kind]}, not an SDXL base model. {SDXL_ADVICE}")
    if not has_user_vae and not any(k.startswith(VAE_PREFIX) for k in shapes):
        raise ModelLoadError(f"{path} has no VAE inside; choose a VAE file for it (the SDXL VAE, sdxl_vae.safetensors)")


# ---------------------------------------------------------------------------------------------
# Config folders


def check_config_dir(config_dir: str | Path) -> Path:
    """The folder, if it is an SDXL diffusers config folder; a clear error otherwise."""
    folder = Path(config_dir).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model config folder not found: {folder}")
    missing = [name for name in CONFIG_DIR_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"{folder} is not an SDXL config folder: missing {', '.join(missing)}")
    pipeline = json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "")
    if not str(pipeline).startswith("StableDiffusionXL"):
        raise ModelLoadError(f"{folder} is a config folder for {pipeline or 'an unknown pipeline'}, not SDXL")
    return folder


def find_config_dir(config_dir: str | Path | None = None, *, forge_dir: str | Path | None = None,
                    allow_download: bool = True) -> Path:
    """Where the single-file loader's config folder comes from, in this order: the given folder;
    Forge's own (`<forge_dir>/backend/huggingface/...`); SDXL base's config files in
    huggingface-hub's cache; a one-time download of just those files (a few MB)."""
    if config_dir:
        return check_config_dir(config_dir)
    if forge_dir and (Path(forge_dir) / FORGE_CONFIG_SUBDIR).is_dir():
        return check_config_dir(Path(forge_dir) / FORGE_CONFIG_SUBDIR)
    from huggingface_hub import snapshot_download

    attempts = [True, False] if allow_download else [True]
    last_error: Exception | None = None
    for local_only in attempts:
        try:
            folder = snapshot_download(SDXL_BASE_HUB_ID, allow_patterns=CONFIG_FILE_PATTERNS,
                                       local_files_only=local_only)
            return check_config_dir(folder)
        except Exception as e:  # not cached, offline, hub unreachable
            last_error = e
    raise ModelLoadError(
        "a single-file checkpoint needs SDXL's config folder and none was found: pass the folder "
        f"(in Forge: {FORGE_CONFIG_SUBDIR}), or allow the one-time download of {SDXL_BASE_HUB_ID}'s "
        f"config files (a few MB). Last attempt: {type(last_error).__name__}: {last_error}"
    )


def _expected_single_file_shapes(config_dir: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape that a checkpoint fitting `config_dir` has (models built on the meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2"))
    state = sdxl_single_file_state_dict(unet, vae, te1, te2)
    return {k: tuple(v.shape) for k, v in state.items()}


def _require_fit(path: Path, shapes: Mapping[str, tuple[int, ...]], config_dir: Path, has_user_vae: bool) -> None:
    expected = _expected_single_file_shapes(config_dir)
    if has_user_vae:
        expected = {k: v for k, v in expected.items() if not k.startswith(VAE_PREFIX)}
    missing = [k for k in expected if k not in shapes]
    wrong = [k for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    if missing or wrong:
        example = wrong[0] if wrong else missing[0]
        found = shapes.get(example, "missing")
        raise ModelLoadError(
            f"the config folder {config_dir} does not fit {path}: {len(missing)} tensors missing, "
            f"{len(wrong)} of another shape (e.g. {example}: file {found}, config {expected[example]})"
        )


# ---------------------------------------------------------------------------------------------
# Loading


def _load_single_file(path: Path, config_dir: str | None, vae: str, allow_download: bool) -> SDXLModel:
    from diffusers import StableDiffusionXLPipeline

    shapes = read_checkpoint_shapes(path)
    _require_sdxl(path, shapes, has_user_vae=bool(vae))
    folder = find_config_dir(config_dir, allow_download=allow_download)
    _require_fit(path, shapes, folder, has_user_vae=bool(vae))
    replacements = {"vae": load_vae(vae, str(folder), "vae")} if vae else {}
    try:
        pipe = StableDiffusionXLPipeline.from_single_file(
            str(path), config=str(folder), local_files_only=True, add_watermarker=False,
            torch_dtype=stored_dtype(path), **replacements
        )
    except Exception as e:  # diffusers' own errors do not name the file
        raise ModelLoadError(f"could not load {path} with the config folder {folder}: "
                             f"{type(e).__name__}: {e}") from e
    return _from_pipeline_parts(pipe, source=str(path), model_name=path.name)


def _load_diffusers(source: str, model_name: str, vae: str) -> SDXLModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    _require_sdxl_pipeline(source)
    try:
        parts = dict(
            unet=UNet2DConditionModel.from_pretrained(source, subfolder="unet"),
            vae=load_vae(vae, source, "vae") if vae else AutoencoderKL.from_pretrained(source, subfolder="vae"),
            text_encoder=CLIPTextModel.from_pretrained(source, subfolder="text_encoder"),
            text_encoder_2=CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2"),
            tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
            tokenizer_2=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2"),
            scheduler_config=_scheduler_config(source),
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the diffusers model {source}: {e}") from None
    return _assemble(parts, source=source, model_name=model_name)


def _require_sdxl_pipeline(source: str) -> None:
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(source)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{source} is not a diffusers model (no readable model_index.json): {e}") from None
    pipeline = index.get("_class_name", "")
    encoders = [index.get(name, [None])[0] for name in ("text_encoder", "text_encoder_2")]
    if not str(pipeline).startswith("StableDiffusionXL") or None in encoders:
        kind = "an SDXL refiner" if str(pipeline).startswith("StableDiffusionXL") else pipeline or "unknown"
        raise ModelLoadError(f"{source} is a diffusers model of type {kind}, not an SDXL base model. {SDXL_ADVICE}")


def _scheduler_config(source: str) -> dict:
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(source, subfolder="scheduler"))


def _from_pipeline_parts(pipe, source: str, model_name: str) -> SDXLModel:
    parts = dict(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2,
                 tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2, scheduler_config=dict(pipe.scheduler.config))
    return _assemble(parts, source=source, model_name=model_name)


def _assemble(parts: dict, source: str, model_name: str) -> SDXLModel:
    from diffusers import DDPMScheduler

    # Training adds noise with DDPM using the model's own betas (SDXL: scaled_linear 0.00085-0.012).
    scheduler = DDPMScheduler.from_config(parts["scheduler_config"], clip_sample=False)
    return SDXLModel(
        unet=parts["unet"], vae=parts["vae"], text_encoder_1=parts["text_encoder"],
        text_encoder_2=parts["text_encoder_2"], tokenizer_1=parts["tokenizer"], tokenizer_2=parts["tokenizer_2"],
        noise_scheduler=scheduler, source=source, model_name=model_name,
    )


# ---------------------------------------------------------------------------------------------
# A user's VAE


def load_vae(vae: str, config_source: str, subfolder: str = "vae"):
    """A VAE from a file (`.safetensors` / tensors-only `.ckpt`, in the original or the diffusers
    key layout) or a diffusers VAE folder, shaped by `config_source`/`subfolder`'s config."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = Path(vae).expanduser()
    if path.is_dir():
        return AutoencoderKL.from_pretrained(str(path)).to(torch.float32)
    if not path.is_file():
        raise ModelLoadError(f"VAE not found: {path}")
    state = _read_state_dict(path)
    config = AutoencoderKL.load_config(config_source, subfolder=subfolder)
    model = AutoencoderKL.from_config(config)
    if not any(k.endswith("encoder.conv_in.weight") for k in state):
        kind = ARCHITECTURES[detect_architecture({k: tuple(v.shape) for k, v in state.items()})]
        raise ModelLoadError(f"{path} does not look like a VAE (it looks like {kind})")
    if not any(".down_blocks." in k for k in state):  # the original (LDM) layout
        state = convert_ldm_vae_checkpoint(state, dict(config))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise ModelLoadError(f"the VAE {path} does not fit this model's VAE: {first[0].strip()}") from None
    return model.to(torch.float32)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        read_safetensors_header(path)  # a clear message for a broken file
        return load_file(str(path))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return _load_pickle(path)
    raise ModelLoadError(f"{path}: unknown VAE file type {path.suffix!r}; expected .safetensors")
