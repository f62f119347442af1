"""VRAM estimate: the peak GPU memory of a training step for a checkpoint and settings, before Start.

How: every part that is a parameter count is counted exactly (the models are built on PyTorch's `meta`
device from the config folder, so no weight is read): the frozen U-Net and text encoders in their
dtype (float8 U-Net weights with fp8_base), the adapters the trainer's own `add_network` attaches, their
gradients and the optimizer's state. The activations are measured: each distinct block of the U-Net
(ResNet block, transformer block, the transformer's projections, down/upsamplers, the skip concatenation)
runs forward and backward once on fake tensors (`FakeTensorMode`: shapes and dtypes only, no memory,
no GPU) with the run's adapters, dtypes, fp8 and attention, while a dispatch mode counts the bytes of
every storage alive. CUDA's autocast is applied by hand (the CPU build has no CUDA autocast, and it
decides a lot: CUDA runs the norms in fp32, so their outputs take twice the bytes). The block costs are
then put together in the U-Net's order, forward and backward, with gradient checkpointing's rule (a
checkpointed block keeps only its inputs and is recomputed during its backward). Tracing each distinct
block once instead of the whole U-Net (whose 70 transformer blocks repeat two designs), and keeping the
block costs by the settings that reach them, makes a setting change cost 0-3 s of CPU instead of the
whole U-Net's 10-60 s; `trace_unet_step` runs the whole U-Net for the tests to compare.

Not measured, added as constants: the CUDA context, the cuBLAS/cuDNN workspaces and the caching
allocator's fragmentation ("CUDA context and workspace"). The tests compare the estimate with the bytes
really allocated on CPU for the tiny model; docs/vram.md gives the full-size figures.
"""

from __future__ import annotations

import copy
import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from lora_trainer.config import TrainConfig
from lora_trainer.train.fp8 import store_frozen_weights_in_fp8
from lora_trainer.train.network import UNET_CONV_TARGETS, add_network
from lora_trainer.train.sgm_names import TEXT_ENCODER_LORA_TARGETS, UNET_LORA_TARGETS

GIB = 1024**3
# What PyTorch cannot see: the CUDA context with cuBLAS/cuDNN loaded (about 0.3-0.5 GiB on recent cards
# and drivers), their workspaces, and the caching allocator's rounding and fragmentation, which on a
# training loop like ours is a few percent of the peak.
CUDA_CONTEXT_BYTES = int(0.45 * GIB)
FRAGMENTATION = 0.05

# --- public ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    total_bytes: int  # the run's peak: the larger of a training step and the caching before it
    parts: dict[str, int]  # the training step's peak, by what holds it (sums to step_bytes)
    setup_bytes: int = 0  # peak of the set-up before the first step (caching latents, moving the models)
    setup_note: str = ""  # what holds the set-up's peak

    @property
    def step_bytes(self) -> int:
        return sum(self.parts.values())

    def fits(self, gpu_total_bytes: int) -> bool:
        return self.total_bytes <= gpu_total_bytes

    def summary(self, gpu_total_bytes: int | None = None) -> str:
        """One line: "about 9.4 GiB peak (U-Net weights 4.8, activations 2.1, ...), fits in 24.0 GiB"."""
        parts = ", ".join(f"{name} {_gib(n)}" for name, n in self.parts.items() if n >= 0.05 * GIB)
        text = f"about {_gib(self.step_bytes)} GiB peak ({parts})"
        if self.setup_bytes > self.step_bytes:
            text += f"; before the first step {self.setup_note}: about {_gib(self.setup_bytes)} GiB"
        if gpu_total_bytes is not None:
            verdict = "fits in" if self.fits(gpu_total_bytes) else "does not fit in"
            text += f"; {verdict} {_gib(gpu_total_bytes)} GiB"
        return text


def estimate_training_memory(cfg: TrainConfig, config_dir: str | Path) -> MemoryEstimate:
    """The expected peak GPU memory of training `cfg` on the model whose diffusers config folder is
    `config_dir` (the single-file loader's folder, or a diffusers model folder)."""
    folder = str(Path(config_dir).expanduser().resolve())
    models = _models(folder)
    width, height = cfg.resolution
    if cfg.enable_bucket:  # buckets keep about the same area; the largest one still fits max_bucket_reso
        width, height = min(width, cfg.max_bucket_reso), min(height, cfg.max_bucket_reso)
    unet = _unet_step(folder, _UNetKey.of(cfg, width // 8, height // 8))
    train_te = cfg.train_text_encoder
    te = _text_encoder_step(folder, _TEKey.of(cfg)) if train_te else None

    weight = _itemsize(_weight_dtype(cfg))
    unet_weights = (models.unet_fp8_params * 1 + models.unet_other_params * weight if cfg.fp8_base
                    else models.unet_params * weight)
    te_resident = train_te or cfg.shuffle_caption or bool(cfg.caption_tag_dropout_rate)
    te_weights = models.te_params * (weight if train_te else 4) if te_resident else 0
    trainable = unet.trainable + (te.trainable if te else ())
    lora_bytes = sum(_numel(s) for s in trainable) * _itemsize(_lora_dtype(cfg))
    optimizer_bytes, step_transient = _optimizer_bytes(cfg, trainable)
    # The backward's peak holds the activations and the gradients made so far; the optimizer's step
    # comes after, with every gradient and its own temporaries but no activations.
    activations = unet.activations + (te.activations if te else 0)
    grads = unet.grads_at_peak + (te.grads if te else 0)
    if cfg.gradient_accumulation_steps > 1:  # the gradients of the earlier micro-batches are all there
        grads = lora_bytes
    temporaries = 0
    if activations + grads < lora_bytes + step_transient:
        activations, grads, temporaries = 0, lora_bytes, step_transient
    tensors = unet_weights + te_weights + lora_bytes + optimizer_bytes + activations + grads + temporaries
    parts = {
        "U-Net weights": unet_weights,
        "text encoders": te_weights,
        "LoRA weights": lora_bytes,
        "gradients": grads,
        "optimizer state": optimizer_bytes,
        "activations": activations,
        "optimizer step temporaries": temporaries,
        "CUDA context and workspace": CUDA_CONTEXT_BYTES + int(FRAGMENTATION * tensors),
    }
    setup, note = _setup_bytes(cfg, folder, models, width, height, lora_bytes)
    return MemoryEstimate(total_bytes=max(sum(parts.values()), setup), parts=parts, setup_bytes=setup,
                          setup_note=note)


# The changes tried, in the order a user would give things up, each on top of the settings as they are.
def _candidate_fixes(cfg: TrainConfig) -> list[tuple[str, dict]]:
    fixes = []
    if not cfg.gradient_checkpointing:
        fixes.append(("turn on gradient_checkpointing", {"gradient_checkpointing": True}))
    if not cfg.fp8_base and not cfg.dora_wd:
        fixes.append(("fp8_base", {"fp8_base": True}))
    if cfg.train_text_encoder or cfg.shuffle_caption or cfg.caption_tag_dropout_rate:
        # cached outputs need captions that do not change from step to step
        fixed = " (shuffle_caption and caption_tag_dropout_rate off)" if (
            cfg.shuffle_caption or cfg.caption_tag_dropout_rate) else ""
        fixes.append((f"network_train_unet_only + sdxl_cache_text_encoder_outputs{fixed}",
                      {"network_train_unet_only": True, "sdxl_cache_text_encoder_outputs": True,
                       "shuffle_caption": False, "caption_tag_dropout_rate": 0.0}))
    if cfg.train_batch_size > 1:
        fixes.append(("train_batch_size 1", {"train_batch_size": 1}))
    if cfg.optimizer not in ("Adafactor", "AdamW8bit"):
        fixes.append(("optimizer Adafactor", {"optimizer": "Adafactor", "optimizer_args":
                                              "scale_parameter=False relative_step=False warmup_init=False"}))
    if cfg.mixed_precision == "no":
        fixes.append(("mixed_precision bf16 (fp16 on cards without bf16)", {"mixed_precision": "bf16"}))
    elif cfg.mixed_precision == "bf16" and not cfg.full_bf16:
        fixes.append(("full_bf16", {"full_bf16": True}))
    if cfg.network_dim > 16:
        fixes.append((f"network_dim 16 (now {cfg.network_dim})", {"network_dim": 16}))
    if cfg.xformers == "none":
        fixes.append(("attention sdpa", {"xformers": "sdpa"}))
    width, height = cfg.resolution
    if max(width, height) > 768:
        smaller = f"{width * 3 // 4 // 64 * 64},{height * 3 // 4 // 64 * 64}"
        fixes.append((f"max_resolution {smaller}", {"max_resolution": smaller,
                                                    "min_bucket_reso": min(cfg.min_bucket_reso, 256)}))
    return fixes


def fixes_to_fit(cfg: TrainConfig, config_dir: str | Path, gpu_total_bytes: int) -> list[str]:
    """The single setting changes that make `cfg` fit in `gpu_total_bytes`, each as
    "<change>: about N GiB" (re-estimated with that change); empty if it already fits. When no single
    change is enough, the changes are combined in order until it fits (the last entry says "all of ...")."""
    if estimate_training_memory(cfg, config_dir).fits(gpu_total_bytes):
        return []
    found, combined, names = [], {}, []
    for name, change in _candidate_fixes(cfg):
        try:
            changed = cfg.replace(**change)
        except Exception:  # a change this config's other settings refuse (ConfigError)
            continue
        estimate = estimate_training_memory(changed, config_dir)
        if estimate.fits(gpu_total_bytes):
            found.append(f"{name}: about {_gib(estimate.total_bytes)} GiB")
        combined.update(change)
        names.append(name)
    if found:
        return found
    try:
        together = estimate_training_memory(cfg.replace(**combined), config_dir)
    except Exception:
        return []
    verdict = "fits"
    if not together.fits(gpu_total_bytes):
        verdict = "still does not fit"
        if together.setup_bytes > gpu_total_bytes:
            verdict += f": {together.setup_note} needs about {_gib(together.setup_bytes)} GiB before the first step"
    return [f"all of {', '.join(names)}: about {_gib(together.total_bytes)} GiB ({verdict})"]


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


# --- dtypes as the trainer sets them --------------------------------------------------------------

def _weight_dtype(cfg: TrainConfig) -> torch.dtype:
    """The frozen weights' and the activations' dtype (trainer._weight_dtype)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)


def _lora_dtype(cfg: TrainConfig) -> torch.dtype:
    """The adapters' dtype (trainer._lora_dtype)."""
    return torch.bfloat16 if cfg.full_bf16 else torch.float16 if cfg.full_fp16 else torch.float32


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --- optimizer state ------------------------------------------------------------------------------

def _optimizer_bytes(cfg: TrainConfig, trainable: Sequence[tuple[int, ...]]) -> tuple[int, int]:
    """(state kept between steps, temporaries during a step) for the trainable shapes. The state is in
    the weights' dtype except where noted; AdamW and the others step all tensors at once (foreach, as on
    CUDA), which makes one temporary the size of all the weights."""
    itemsize = _itemsize(_lora_dtype(cfg))
    numel = sum(_numel(s) for s in trainable)
    ema = numel * 4 if cfg.ema_decay else 0  # LoraEMA's fp32 shadow copy
    largest = max((_numel(s) for s in trainable), default=0) * 4
    if cfg.optimizer == "Adafactor":
        # transformers' Adafactor: a row and a column average per matrix (the gradient's shape without
        # its last, and without its second-to-last, dimension), a full second moment for vectors (DoRA's
        # magnitudes), a first moment only with beta1; fp32 copies of one tensor inside its step.
        def state(s):
            if len(s) < 2:
                return _numel(s)
            return _numel(s[:-1]) + _numel(s[:-2] + s[-1:])
        first = numel if cfg.optimizer_kwargs.get("beta1") is not None else 0
        return sum(state(s) for s in trainable) * itemsize + first * itemsize + ema, 3 * largest
    if cfg.optimizer == "AdamW8bit":
        # bitsandbytes: two 8-bit states with an fp32 scale per 2048 values; tensors under 4096 values
        # keep fp32 states.
        small = sum(_numel(s) for s in trainable if _numel(s) < 4096)
        return (numel - small) * 2 + (numel - small) // 2048 * 8 + small * 8 + ema, largest
    # Prodigy keeps four (its copy of the starting weights is a scalar for zero-initialised ones, so a
    # little less); schedule-free AdamW its z sequence and second moment.
    states = {"AdamW": 2, "Prodigy": 4, "AdamWScheduleFree": 2}[cfg.optimizer]
    return states * numel * itemsize + ema, numel * itemsize


# --- models on the meta device, per config folder ---------------------------------------------------

@dataclass
class _Models:
    unet: torch.nn.Module
    te1: torch.nn.Module
    te2: torch.nn.Module
    vae: torch.nn.Module
    unet_params: int
    unet_fp8_params: int  # the Linear / Conv2d weights fp8_base stores in float8
    unet_other_params: int
    te_params: int
    vae_params: int


@functools.lru_cache(maxsize=4)
def _models(config_dir: str) -> _Models:
    from lora_trainer.train.model import check_config_dir, meta_sdxl

    unet, vae, te1, te2 = meta_sdxl(check_config_dir(config_dir))
    fp8 = sum(m.weight.numel() for m in unet.modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d))
    total = sum(p.numel() for p in unet.parameters())
    return _Models(unet=unet, te1=te1, te2=te2, vae=vae, unet_params=total, unet_fp8_params=fp8,
                   unet_other_params=total - fp8,
                   te_params=sum(p.numel() for m in (te1, te2) for p in m.parameters()),
                   vae_params=sum(p.numel() for p in vae.parameters()))


# --- counting bytes on fake tensors -------------------------------------------------------------------

class LiveBytes(TorchDispatchMode):
    """The bytes of every storage an op makes, from its creation until it is freed (a weakref finaliser
    on the storage), and their peak. Views share their base's storage and are counted once. Works on real
    and fake tensors; storages made before the mode was entered (weights, inputs) are not counted unless
    passed to `track`; views of storages listed in `existing` are not counted."""

    def __init__(self, existing: Sequence[torch.Tensor] = ()):
        super().__init__()
        self.live = 0
        self.peak = 0
        # Storages that were there before (weights, inputs): a view of one (a weight's transpose in
        # F.linear) is not a new allocation.
        self._existing = [t.untyped_storage() for t in existing]  # kept alive, so their ids stay unique
        self._alive: set[int] = {id(s) for s in self._existing}

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._alive:
            return
        size = storage.nbytes()
        self._alive.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._alive.discard(key)
        self.live -= size

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


# torch.autocast("cuda")'s op lists (PyTorch's AMP reference, "CUDA Ops that can autocast to ..."), for
# the functions the U-Net, peft's layers and CLIP call. The CPU build cannot enter CUDA autocast, and CPU
# autocast keeps the norms in bf16, so the casts are made here, above autograd as autocast makes them:
# a cast's copy is what the next op saves for backward.
_LOWER_PRECISION = {F.linear, torch.conv2d, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
                    torch.baddbmm, torch.mm, torch.addmm, F.scaled_dot_product_attention, torch.einsum}
_FLOAT32 = {F.group_norm, F.layer_norm, F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.exp,
            torch.Tensor.exp, torch.pow, torch.Tensor.pow, F.mse_loss}
_PROMOTE = {torch.cat, torch.stack}


class CudaAutocast(TorchFunctionMode):
    """CUDA's autocast to `dtype`, on any device: matmuls and convolutions in `dtype`, norms and softmax
    in fp32, concatenations in the widest input dtype."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = None
        if func in _LOWER_PRECISION:
            target = self.dtype
        elif func in _FLOAT32:
            target = torch.float32
        elif func in _PROMOTE:
            floats = [t.dtype for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor) and t.is_floating_point()]
            target = max(floats, key=_itemsize) if floats else None
        if target is not None:
            def cast(t):
                eligible = isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
                return t.to(target) if eligible and t.dtype != target else t
            args, kwargs = tree_map(cast, (args, kwargs))
        return func(*args, **kwargs)


def _autocast_for(cfg: TrainConfig):
    dtype = _weight_dtype(cfg)
    return CudaAutocast(dtype) if dtype != torch.float32 else _nothing()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _ShapeOnlyBackward(TorchDispatchMode):
    """On fake tensors, a few backward ops (the norms', SiLU's, GELU's) have no fake kernel and run
    PyTorch's Python decomposition, op by op: most of a trace's time. Their results have the inputs'
    shapes and dtypes, which is all a fake tensor holds, so they are made directly."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        if func is aten.native_group_norm_backward.default:
            grad_out, x, _mean, _rstd, weight, _n, channels = args[:7]
            mask = args[9]
            like = weight if weight is not None else x.new_empty(channels)
            return (torch.empty_like(x) if mask[0] else None, torch.empty_like(like) if mask[1] else None,
                    torch.empty_like(like) if mask[2] else None)
        if func is aten.native_layer_norm_backward.default:
            grad_out, x, _shape, _mean, _rstd, weight, bias, mask = args[:8]
            return (torch.empty_like(x) if mask[0] else None,
                    torch.empty_like(weight) if mask[1] and weight is not None else None,
                    torch.empty_like(bias) if mask[2] and bias is not None else None)
        if func in (aten.silu_backward.default, aten.gelu_backward.default):
            return torch.empty_like(args[0])
        return func(*args, **(kwargs or {}))


def _recompute_context(cfg: TrainConfig):
    return _nothing(), _autocast_for(cfg)


class _patched:
    def __init__(self, owner, name: str, value):
        self.owner, self.name, self.value = owner, name, value

    def __enter__(self):
        self.old = getattr(self.owner, self.name)
        setattr(self.owner, self.name, self.value)

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.old)
        return False


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=False)


def _fakeify(module: torch.nn.Module, mode) -> None:
    """Replace the module's meta parameters and buffers by fake CPU tensors of the same shape and dtype
    (fake CUDA tensors cannot run autograd on a CPU-only build: it asks for a CUDA stream)."""
    converter, cpu = mode.fake_tensor_converter, torch.device("cpu")
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                fake = converter.from_meta_and_device(mode, p.detach(), cpu)
                m._parameters[name] = torch.nn.Parameter(fake, requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = converter.from_meta_and_device(mode, b, cpu)


# --- one block's cost ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Spec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


@dataclass(frozen=True)
class _Cost:
    fwd_peak: int  # the most its forward holds at once, above what was there before
    fwd_peak_unsaved: int  # the same when nothing is saved for backward (a checkpointed block's forward)
    internal: int  # what its forward leaves saved for backward, besides its inputs and its output
    keeps: tuple[bool, ...]  # which inputs its forward saves for backward
    out: _Spec
    bwd_peak: int  # the most its backward holds at once above `internal` + output (incl. the output's grad)
    grads: int  # the parameter gradients its backward leaves
    trainable: tuple[tuple[int, ...], ...]  # the shapes of its trainable parameters


class _Holder(torch.nn.Module):
    """A block nested under its path in the U-Net, so that the adapters' name patterns
    ("downsamplers.0.conv") match it as they match it in the whole model."""

    def add_adapter(self, config, adapter_name: str = "default") -> None:  # what diffusers' add_adapter does
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, self, adapter_name)


def _nested(path: str, module: torch.nn.Module) -> _Holder:
    names = path.split(".")
    root = node = _Holder()
    for name in names[:-1]:
        child = _Holder()
        node.add_module(name, child)
        node = child
    node.add_module(names[-1], module)
    return root


def _prepared(cfg: TrainConfig, module: torch.nn.Module, path: str, mode, targets=UNET_LORA_TARGETS,
              conv_targets=UNET_CONV_TARGETS) -> torch.nn.Module:
    """A copy of `module` (meta) set up as `trainer._run` sets up the model: frozen weights in the
    mixed-precision dtype, the adapters, their dtype, fp8_base, the attention; then fake."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    block = copy.deepcopy(module)
    block.requires_grad_(False).to(_weight_dtype(cfg))
    if _has_target(cfg, block, path, targets, conv_targets):  # peft refuses a model without any target
        add_network(_nested(path, block) if path else block, cfg, targets, conv_targets)
    for p in block.parameters():
        if p.requires_grad:
            p.data = p.data.to(_lora_dtype(cfg))
    if cfg.fp8_base and targets is UNET_LORA_TARGETS:
        store_frozen_weights_in_fp8(block)
    if cfg.xformers == "none":
        for m in block.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor())
    _fakeify(block, mode)
    block.train()
    # peft's LoHa / LoKr draw torch.rand(1) per call for their module dropout, in training mode only; a
    # fake tensor has no value to compare. With the dropout at 0 (as add_network sets it) evaluation mode
    # runs the same computation.
    from peft.tuners.loha import LoHaLayer
    from peft.tuners.lokr import LoKrLayer

    for m in block.modules():
        if isinstance(m, (LoHaLayer, LoKrLayer)):
            m.training = False
    return block


def _trace(cfg: TrainConfig, mode, block: torch.nn.Module, run: Callable, inputs: Sequence[_Spec]) -> _Cost:
    """Run `run(block, *inputs)` forward and backward on fake tensors and measure what it holds."""
    saved: set[int] = set()

    def pack(t):
        saved.add(id(t.untyped_storage()))
        return t

    with mode:
        xs = [torch.empty(s.shape, dtype=s.dtype).requires_grad_(s.requires_grad) for s in inputs]
        weights = [*block.parameters(), *block.buffers()] if block is not None else []
        tracker = LiveBytes([*weights, *xs])
        with _ShapeOnlyBackward(), _autocast_for(cfg), tracker:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = run(block, *xs)
            fwd_peak, kept = tracker.peak, tracker.live
            out_bytes = out.untyped_storage().nbytes()
            with torch.no_grad():  # what gradient checkpointing's forward holds (it saves nothing)
                base = tracker.live
                tracker.reset_peak()
                run(block, *xs)
                fwd_peak_unsaved = tracker.peak - base
            keeps = tuple(id(x.untyped_storage()) in saved for x in xs)
            bwd_peak = grads = 0
            if out.requires_grad:
                tracker.reset_peak()
                out.backward(torch.ones_like(out))
                bwd_peak = tracker.peak - kept
                params = block.parameters() if block is not None else ()
                grads = sum(p.grad.untyped_storage().nbytes() for p in params if p.grad is not None)
        spec = _Spec(tuple(out.shape), out.dtype, out.requires_grad)
    params = block.parameters() if block is not None else ()
    trainable = tuple(tuple(p.shape) for p in params if p.requires_grad)
    return _Cost(fwd_peak=fwd_peak, fwd_peak_unsaved=fwd_peak_unsaved, internal=max(0, kept - out_bytes), keeps=keeps, out=spec, bwd_peak=bwd_peak,
                 grads=grads, trainable=trainable)


# --- the U-Net, block by block -------------------------------------------------------------------------

@dataclass(frozen=True)
class _UNetKey:
    """The settings a U-Net step's activations depend on (the cache key)."""
    latent_w: int
    latent_h: int
    batch: int
    tokens: int
    weight_dtype: str
    lora_dtype: str
    network: tuple
    fp8: bool
    checkpointing: bool
    attention: str
    grad_into_text: bool

    @classmethod
    def of(cls, cfg: TrainConfig, latent_w: int, latent_h: int) -> _UNetKey:
        network = (cfg.LoRA_type, cfg.network_dim, cfg.network_alpha, cfg.conv_dim, cfg.conv_alpha, cfg.dora_wd,
                   cfg.factor)
        return cls(latent_w, latent_h, cfg.train_batch_size, 77 * (cfg.max_token_length // 75),
                   str(_weight_dtype(cfg)), str(_lora_dtype(cfg)), network, cfg.fp8_base,
                   cfg.gradient_checkpointing, "none" if cfg.xformers == "none" else "sdpa", cfg.train_text_encoder)

    def config(self) -> TrainConfig:
        """A TrainConfig with these settings (what `_prepared` needs)."""
        kind, dim, alpha, conv_dim, conv_alpha, dora, factor = self.network
        precision = {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(self.weight_dtype, "no")
        return TrainConfig(LoRA_type=kind, network_dim=dim, network_alpha=alpha, conv_dim=conv_dim,
                           conv_alpha=conv_alpha, dora_wd=dora, factor=factor, mixed_precision=precision,
                           full_bf16=self.lora_dtype == "torch.bfloat16",
                           full_fp16=self.lora_dtype == "torch.float16",
                           optimizer="Adafactor" if self.lora_dtype == "torch.float16" else "AdamW",
                           fp8_base=self.fp8, xformers=self.attention)


@dataclass(frozen=True)
class _Step:
    activations: int  # the step's peak above the weights, the optimizer state and the gradients held then
    grads_at_peak: int  # the parameter gradients already made at that moment
    trainable: tuple[tuple[int, ...], ...]


@dataclass
class _Node:
    """One block in the U-Net's order: its cost, its input and output tensors (names), checkpointed?"""
    cost: _Cost
    inputs: list[str]
    output: str
    checkpointed: bool
    owns_params: bool = True  # False for a second node of the same module (a transformer's output half)


class _UNetPlan:
    """Walks UNet2DConditionModel.forward's order (diffusers 0.31, the SDXL block types), tracing each
    distinct block once."""

    def __init__(self, cfg: TrainConfig, key: _UNetKey, config_dir: str):
        self.cfg, self.key, self.config_dir = cfg, key, config_dir
        self.unet = _models(config_dir).unet
        self.mode = _fake_mode()
        self.nodes: list[_Node] = []
        self.tensors: dict[str, _Spec] = {}
        self._count = 0
        self.held_until: dict[str, int] = {}  # tensors the forward's Python variables hold past their use

    def tensor(self, spec: _Spec) -> str:
        self._count += 1
        name = f"t{self._count}"
        self.tensors[name] = spec
        return name

    def block(self, path: str, module, run: Callable, inputs: list[str], checkpointed: bool = False,
              signature: tuple = (), owns_params: bool = True) -> str:
        specs = [self.tensors[i] for i in inputs]
        key = (self.config_dir, signature, tuple(specs)) + _block_identity(self.cfg, path, module)
        cost = _BLOCK_COSTS.get(key)
        if cost is None:
            block = _prepared(self.cfg, module, path, self.mode) if module is not None else None
            cost = _BLOCK_COSTS[key] = _trace(self.cfg, self.mode, block, run, specs)
        output = self.tensor(cost.out)
        self.nodes.append(_Node(cost, inputs, output, checkpointed and self.key.checkpointing, owns_params))
        return output

    def transformer(self, path: str, t2d, hidden: str) -> str:
        batch, _, height, width = self.tensors[hidden].shape
        glue = copy.copy(t2d)
        glue._modules = {k: v for k, v in t2d._modules.items() if k != "transformer_blocks"}
        tokens = self.block(path, glue, lambda m, x: m._operate_on_continuous_inputs(x)[0], [hidden],
                            signature=("in",))
        for k, block in enumerate(t2d.transformer_blocks):
            tokens = self.block(f"{path}.transformer_blocks.{k}", block,
                                lambda m, x, c: m(x, encoder_hidden_states=c), [tokens, "ctx"], checkpointed=True)
        inner = self.tensors[tokens].shape[-1]
        return self.block(path, glue, lambda m, x, r: m._get_output_for_continuous_inputs(
            x, r, batch, height, width, inner), [tokens, hidden], signature=("out",), owns_params=False)

    def build(self) -> None:
        unet, key = self.unet, self.key
        act = getattr(torch, key.weight_dtype.removeprefix("torch."))
        grad_in = key.grad_into_text  # trained text encoders: the prompt and pooled embeddings carry grads
        self.tensors["latents"] = _Spec((key.batch, unet.config.in_channels, key.latent_h, key.latent_w), act, False)
        temb_dim = unet.time_embedding.linear_2.out_features
        self.tensors["temb"] = _Spec((key.batch, temb_dim), act, grad_in)
        self.tensors["ctx"] = _Spec((key.batch, key.tokens, unet.config.cross_attention_dim), act, grad_in)

        def resnet(m, x, t):
            return m(x, t)

        h = self.block("conv_in", unet.conv_in, lambda m, x: m(x), ["latents"])
        skips = [h]
        for i, down in enumerate(unet.down_blocks):
            for j, res in enumerate(down.resnets):
                h = self.block(f"down_blocks.{i}.resnets.{j}", res, resnet, [h, "temb"], checkpointed=True)
                if getattr(down, "attentions", None):
                    h = self.transformer(f"down_blocks.{i}.attentions.{j}", down.attentions[j], h)
                skips.append(h)
            for k, sampler in enumerate(down.downsamplers or []):
                h = self.block(f"down_blocks.{i}.downsamplers.{k}", sampler, lambda m, x: m(x), [h])
                skips.append(h)
        mid = unet.mid_block
        # diffusers checkpoints the mid block's later ResNet blocks, not its first
        h = self.block("mid_block.resnets.0", mid.resnets[0], resnet, [h, "temb"])
        for j, attn in enumerate(mid.attentions):
            h = self.transformer(f"mid_block.attentions.{j}", attn, h)
            h = self.block(f"mid_block.resnets.{j + 1}", mid.resnets[j + 1], resnet, [h, "temb"], checkpointed=True)
        for i, up in enumerate(unet.up_blocks):
            # The U-Net's forward hands each up block its skip tensors as one tuple, which holds them
            # all until the block returns (the last block's until the end).
            block_skips = skips[-len(up.resnets):]
            for j, res in enumerate(up.resnets):
                h = self.block("cat", None, lambda m, x, s: torch.cat([x, s], dim=1), [h, skips.pop()])
                h = self.block(f"up_blocks.{i}.resnets.{j}", res, resnet, [h, "temb"], checkpointed=True)
                if getattr(up, "attentions", None):
                    h = self.transformer(f"up_blocks.{i}.attentions.{j}", up.attentions[j], h)
            for k, sampler in enumerate(up.upsamplers or []):
                h = self.block(f"up_blocks.{i}.upsamplers.{k}", sampler, lambda m, x: m(x), [h])
            for skip in block_skips:
                self.held_until[skip] = len(self.nodes) - 1
        out = torch.nn.Module()
        out.conv_norm_out, out.conv_act, out.conv_out = unet.conv_norm_out, unet.conv_act, unet.conv_out
        self.block("out", out, lambda m, x: m.conv_out(m.conv_act(m.conv_norm_out(x))), [h])
        for skip in block_skips:
            self.held_until[skip] = len(self.nodes) - 1

    def simulate(self) -> _Step:
        """Walk the forward, then the backward in reverse, holding each tensor as long as autograd does,
        and return the peak above the weights (with the parameter gradients made by then)."""
        nodes, tensors = self.nodes, self.tensors
        keepers: dict[str, list[int]] = {}
        consumers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for pos, name in enumerate(n.inputs):
                consumers.setdefault(name, []).append(i)
                if n.checkpointed or n.cost.keeps[pos]:
                    # a checkpointed block keeps its inputs (its recomputation needs them) only when it
                    # has something to recompute
                    if not n.checkpointed or n.cost.internal or n.cost.out.requires_grad:
                        keepers.setdefault(name, []).append(i)
        shared = {"temb", "ctx", "latents"}
        live = sum(tensors[s].nbytes for s in shared)
        peak, grads = live, 0
        held = set(shared)
        # a tensor nothing keeps for backward is freed after its last use in the forward
        released: dict[int, list[str]] = {}
        for name, users in consumers.items():
            if name not in shared and name not in keepers:
                released.setdefault(max(users[-1], self.held_until.get(name, -1)), []).append(name)
        for i, n in enumerate(nodes):
            peak = max(peak, live + (n.cost.fwd_peak_unsaved if n.checkpointed else n.cost.fwd_peak))
            if not n.checkpointed:
                live += n.cost.internal
            live += n.cost.out.nbytes
            held.add(n.output)
            for name in released.get(i, []):
                held.discard(name)
                live -= tensors[name].nbytes
        # Backward, last block first. A block's backward holds its saved tensors (recomputed now if it
        # is checkpointed), its output's gradient and what it computes; the gradients for tensors used
        # twice (the skips) wait until their producer's turn.
        last = nodes[-1].output  # the prediction: held by the loss
        producer = {n.output: i for i, n in enumerate(nodes)}
        pending: dict[str, int] = {}
        peak_grads = 0
        for i in range(len(nodes) - 1, -1, -1):
            n = nodes[i]
            if not n.cost.out.requires_grad:
                continue
            pending.pop(n.output, None)  # its own output's gradient is in bwd_peak
            extra = n.cost.bwd_peak
            if n.checkpointed:
                extra = max(n.cost.fwd_peak + n.cost.out.nbytes, n.cost.internal + n.cost.bwd_peak)
            current = live + sum(pending.values()) + extra + grads
            if current > peak:
                peak, peak_grads = current, grads
            if not n.checkpointed:
                live -= n.cost.internal
            grads += n.cost.grads
            for name in n.inputs:
                done = all(k >= i for k in keepers.get(name, [i]))  # its last keeper has run
                if name in held and name not in shared and name != last and done:
                    held.discard(name)
                    live -= tensors[name].nbytes
                if tensors[name].requires_grad and name in producer:
                    pending[name] = tensors[name].nbytes
        trainable = tuple(s for n in nodes if n.owns_params for s in n.cost.trainable)
        return _Step(activations=peak - peak_grads, grads_at_peak=peak_grads, trainable=trainable)


@functools.lru_cache(maxsize=64)
def _unet_step(config_dir: str, key: _UNetKey) -> _Step:
    plan = _UNetPlan(key.config(), key, config_dir)
    plan.build()
    return plan.simulate()


# Block costs by what they depend on, shared by every estimate: gradient checkpointing changes only what
# is kept between blocks, and a block without adapters does not depend on the network settings, so most
# setting changes re-trace a few blocks or none.
_BLOCK_COSTS: dict[tuple, _Cost] = {}


def _block_identity(cfg: TrainConfig, path: str, module) -> tuple:
    """What a block's cost depends on besides its inputs: its class and weights' shapes, and the settings
    that reach it (the adapters only if a target matches it, the attention only if it has one)."""
    if len(_BLOCK_COSTS) > 4000:
        _BLOCK_COSTS.clear()
    if module is None:
        return ("op",)
    from diffusers.models.attention_processor import Attention

    params = tuple((n, tuple(p.shape)) for n, p in module.named_parameters())
    settings: tuple = (str(_weight_dtype(cfg)), cfg.fp8_base)
    if _has_target(cfg, module, path):
        settings += (str(_lora_dtype(cfg)), cfg.LoRA_type, cfg.network_dim, cfg.network_alpha, cfg.conv_dim,
                     cfg.conv_alpha, cfg.dora_wd, cfg.factor)
    if any(isinstance(m, Attention) for m in module.modules()):
        settings += (cfg.xformers == "none",)
    sampler = path.rsplit(".", 2)[-2] if "sampler" in path else ""  # which conv targets match depends on it
    return (type(module).__name__, sampler, params, settings)


def _has_target(cfg: TrainConfig, module, path: str, targets=UNET_LORA_TARGETS, conv_targets=UNET_CONV_TARGETS) -> bool:
    names = list(targets) + (list(conv_targets) if cfg.conv_dim else [])
    full = [f"{path}.{n}" if path and n else (path or n) for n, _ in module.named_modules()]
    return any(n == t or n.endswith("." + t) for n in full for t in names)


def trace_unet_step(cfg: TrainConfig, config_dir: str | Path, latent_w: int, latent_h: int) -> int:
    """The whole U-Net's forward and backward on fake tensors, as the trainer runs it: the most it holds
    at once above its weights (activations and gradients). Slow on the full-size model (seconds per
    setting); the tests compare `estimate_training_memory`'s block-by-block figure with it."""
    models = _models(str(Path(config_dir).expanduser().resolve()))
    mode = _fake_mode()
    unet = _prepared(cfg, models.unet, "", mode)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    key = _UNetKey.of(cfg, latent_w, latent_h)
    dtype, config = _weight_dtype(cfg), unet.config
    pooled_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    with mode:
        grad = cfg.train_text_encoder
        latents = torch.empty(key.batch, config.in_channels, latent_h, latent_w, dtype=dtype)
        timesteps = torch.zeros(key.batch, dtype=torch.long)
        ctx = torch.empty(key.batch, key.tokens, config.cross_attention_dim, dtype=dtype).requires_grad_(grad)
        pooled = torch.empty(key.batch, pooled_dim, dtype=dtype).requires_grad_(grad)
        time_ids = torch.empty(key.batch, 6, dtype=dtype)
        tracker = LiveBytes([*unet.parameters(), *unet.buffers(), latents, ctx, pooled, time_ids])
        # Checkpointed blocks are recomputed during the backward, where torch.utils.checkpoint restores
        # the real autocast but not a TorchFunctionMode: it is handed over as the recompute context.
        checkpoint = torch.utils.checkpoint.checkpoint
        context = functools.partial(_recompute_context, cfg)
        with _autocast_for(cfg), tracker, _patched(torch.utils.checkpoint, "checkpoint",
                                                   functools.partial(checkpoint, context_fn=context)):
            prediction = unet(latents, timesteps, ctx, added_cond_kwargs={"text_embeds": pooled,
                                                                         "time_ids": time_ids}).sample
            loss = F.mse_loss(prediction.float(), latents.float())
            del prediction
            loss.backward()
    return tracker.peak


# --- the text encoders, when they are trained -------------------------------------------------------------

@dataclass(frozen=True)
class _TEKey:
    batch: int
    chunks: int
    weight_dtype: str
    lora_dtype: str
    network: tuple
    checkpointing: bool

    @classmethod
    def of(cls, cfg: TrainConfig) -> _TEKey:
        u = _UNetKey.of(cfg, 8, 8)
        return cls(cfg.train_batch_size, cfg.max_token_length // 75, u.weight_dtype, u.lora_dtype, u.network,
                   cfg.gradient_checkpointing)


@dataclass(frozen=True)
class _TEStep:
    activations: int  # what both encoders keep for backward, held through the U-Net's backward
    grads: int
    trainable: tuple[tuple[int, ...], ...]


@functools.lru_cache(maxsize=16)
def _text_encoder_step(config_dir: str, key: _TEKey) -> _TEStep:
    """Both CLIP encoders run on batch x chunks sequences of 77 tokens. Their layers are alike, so one
    layer of each is traced and counted once per layer; with gradient checkpointing (per layer, as
    transformers does it) a layer keeps only its input. What counts is what they hold while the U-Net's
    backward runs (their own backward comes after it, when the U-Net's activations are gone)."""
    models = _models(config_dir)
    cfg = _UNetKey(8, 8, key.batch, 77, key.weight_dtype, key.lora_dtype, key.network, False, False, "sdpa",
                   True).config()
    mode = _fake_mode()
    act = getattr(torch, key.weight_dtype.removeprefix("torch."))
    activations = grads = 0
    trainable: list[tuple[int, ...]] = []
    for encoder in (models.te1, models.te2):
        layers = encoder.text_model.encoder.layers
        width = encoder.config.hidden_size
        sequences = key.batch * key.chunks
        block = _prepared(cfg, layers[0], "text_model.encoder.layers.0", mode, TEXT_ENCODER_LORA_TARGETS, ())
        hidden = _Spec((sequences, 77, width), act, True)
        causal = _Spec((sequences, 1, 77, 77), act, False)
        cost = _trace(cfg, mode, block, lambda m, x, c: m(x, None, c)[0], [hidden, causal])
        kept_input = hidden.nbytes if cost.keeps[0] else 0
        if key.checkpointing:  # the recomputation comes after the U-Net's backward, with far less held
            activations += len(layers) * hidden.nbytes
        else:
            activations += len(layers) * (cost.internal + kept_input)
        grads += len(layers) * cost.grads
        trainable += list(cost.trainable) * len(layers)
    return _TEStep(activations=activations, grads=grads, trainable=tuple(trainable))


# --- before the first step: caching latents and text-encoder outputs --------------------------------------

@functools.lru_cache(maxsize=16)
def _vae_encode_peak(config_dir: str, width: int, height: int, dtype: torch.dtype) -> int:
    """The most the VAE's encoder holds at once (no grad) for one image of width x height."""
    mode = _fake_mode()
    vae = copy.deepcopy(_models(config_dir).vae).to(dtype)
    _fakeify(vae, mode)
    with mode, torch.no_grad():
        pixels = torch.empty(1, 3, height, width, dtype=dtype)
        tracker = LiveBytes([*vae.parameters(), *vae.buffers(), pixels])
        with tracker, _ShapeOnlyBackward():
            latents = vae.encode(pixels).latent_dist.mean  # as LatentCache._encode
            del latents
    return tracker.peak


def _setup_bytes(cfg: TrainConfig, config_dir: str, models: _Models, width: int, height: int,
                 lora_bytes: int) -> tuple[int, str]:
    """(peak, what holds it) of the set-up (trainer._run): the latents are encoded with only the VAE on
    the GPU; then the captions with only the text encoders there (fp32 when frozen); the U-Net arrives
    after, with its adapters and in its final dtype (fp8_base converts it on the CPU), which the
    training step's own figure covers."""
    from lora_trainer.train.batches import vae_dtype

    vae_dt = vae_dtype(cfg)
    latents = models.vae_params * _itemsize(vae_dt) + _vae_encode_peak(config_dir, width, height, vae_dt)
    weight = _itemsize(_weight_dtype(cfg))
    encoders = models.te_params * (weight if cfg.train_text_encoder else 4)
    phases = [(latents, "caching latents (the VAE encodes one image)"),
              (encoders, "encoding the captions (both text encoders on the GPU)")]
    peak, note = max(phases)
    return peak + CUDA_CONTEXT_BYTES + int(FRAGMENTATION * peak), note
