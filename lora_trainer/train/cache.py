"""Latents encoded once, reused across epochs and across runs.

A cached latent is named by what it depends on and nothing else: the sha256 of the image file's bytes,
its geometry (bucket, resize, crop), whether it is flipped, a VAE identity string from the caller, and
the dtype the VAE runs in (so latents of an fp16 VAE and an fp32 one are never mixed).
So a changed image, bucket or VAE misses and re-encodes, and an unchanged image never does, even after
it is renamed or moved. On disk each latent is one safetensors file in the caller's cache folder,
written atomically; without a folder the cache lives in memory for one run.

The VAE runs in `dtype`, fp32 unless the caller asks for a half one (sdxl_no_half_vae = false): the SDXL
VAE can make NaNs in fp16, so every latent is checked and a NaN one stops with the image's name.
Latents are the distribution's mean (deterministic, unlike a sample) times `vae.config.scaling_factor`,
stored as fp32 [4, h/8, w/8].
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import save_file

from ..fsutil import atomic_path
from .buckets import Geometry

CACHE_FORMAT = "1"  # bump when the pixels or the stored layout change: old files then simply miss
ProgressCallback = Callable[[int, int], None]  # (encoded so far, to encode)


class LatentError(RuntimeError):
    """The VAE could not produce usable latents for an image; the message names it."""


def load_training_pixels(path: str | Path, geometry: Geometry, flip: bool = False) -> torch.Tensor:
    """The image as the model trains on it: float32 [3, H, W] in [-1, 1] at the bucket size."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")  # transparent areas become white, not undefined colour
            img = Image.new("RGB", rgba.size, (255, 255, 255))
            img.paste(rgba, mask=rgba.getchannel("A"))
        else:
            img = img.convert("RGB")
    if img.size != geometry.original_size:
        raise LatentError(f"{path}: image is {img.size[0]}x{img.size[1]} but was planned as "
                          f"{geometry.original_size[0]}x{geometry.original_size[1]}; it changed since the scan")
    left, top = geometry.crop_left_top
    img = img.resize(geometry.resized_size, Image.Resampling.LANCZOS)
    img = img.crop((left, top, left + geometry.bucket[0], top + geometry.bucket[1]))
    if flip:
        img = ImageOps.mirror(img)
    array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str | Path) -> str:
    """A cheap VAE identity for a multi-GB model file: name, size and modification time (hashing it
    would take a minute). Replacing the file changes it, so the cache misses."""
    stat = Path(path).stat()
    return f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}"


class LatentCache:
    """`prepare(items)` encodes what is missing ahead of training; `get` returns a latent.

    `items` are (image path, Geometry) pairs; with `flip_aug` the mirrored latent is cached too.
    `hits` counts latents served from the cache, `misses` the VAE encodes, for tests and the log."""

    def __init__(self, vae: torch.nn.Module, vae_id: str, cache_dir: str | Path | None = None, *,
                 flip_aug: bool = False, vae_batch_size: int = 1, dtype: torch.dtype = torch.float32):
        self.vae = vae
        self.vae_id = vae_id
        self.dtype = dtype  # what the VAE runs in
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.flip_aug = flip_aug
        self.vae_batch_size = vae_batch_size
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, torch.Tensor] = {}
        self._hashes: dict[Path, str] = {}

    # ----- naming
    def key(self, path: str | Path, geometry: Geometry, flipped: bool = False) -> str:
        path = Path(path)
        if path not in self._hashes:  # hash each file once per run
            self._hashes[path] = file_sha256(path)
        parts = (CACHE_FORMAT, self._hashes[path], repr(geometry.bucket), repr(geometry.resized_size),
                 repr(geometry.crop_left_top), "flip" if flipped else "noflip", self.vae_id)
        if self.dtype != torch.float32:  # fp32 keys stay as they were, so existing caches still hit
            parts += (f"vae_dtype={self.dtype}",)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.cache_dir / f"{key}.safetensors"

    def _has(self, key: str) -> bool:
        if self.cache_dir is None:
            return key in self._memory
        return _readable(self._file(key))

    # ----- use
    def prepare(self, items: Iterable[tuple[str | Path, Geometry]],
                progress_callback: ProgressCallback | None = None) -> int:
        """Encode every latent the run will need that is not cached yet; returns how many were encoded."""
        todo, seen = [], set()
        for path, geometry in items:
            for flipped in ((False, True) if self.flip_aug else (False,)):
                key = self.key(path, geometry, flipped)
                if key in seen:
                    continue
                seen.add(key)
                if self._has(key):
                    self.hits += 1
                else:
                    todo.append((key, Path(path), geometry, flipped))
        # Batch only equal shapes together; sorting by bucket makes neighbours match.
        todo.sort(key=lambda job: (job[2].bucket, str(job[1]), job[3]))
        done = 0
        if progress_callback:
            progress_callback(0, len(todo))
        for start in range(0, len(todo), self.vae_batch_size):
            batch = todo[start:start + self.vae_batch_size]
            for group in _same_bucket_groups(batch):
                self._encode_and_store(group)
                done += len(group)
            if progress_callback:
                progress_callback(done, len(todo))
        return len(todo)

    def get(self, path: str | Path, geometry: Geometry, flipped: bool = False) -> torch.Tensor:
        """The latent [4, h/8, w/8] (fp32, CPU); encodes it now if `prepare` did not."""
        key = self.key(path, geometry, flipped)
        latent = self._load(key)
        if latent is None:
            self._encode_and_store([(key, Path(path), geometry, flipped)])
            latent = self._load(key)
        else:
            self.hits += 1
        return latent

    def _load(self, key: str) -> torch.Tensor | None:
        # Disk-backed latents are also kept in memory once read: the loop asks for each one every
        # epoch, and a latent is small (256 KiB at 1024 px).
        if key in self._memory or self.cache_dir is None:
            return self._memory.get(key)
        try:
            with safe_open(self._file(key), framework="pt") as f:
                self._memory[key] = f.get_tensor("latents")
        except Exception:  # missing or damaged file: encode again rather than fail the run
            return None
        return self._memory[key]

    # ----- encode
    def _encode_and_store(self, jobs: Sequence[tuple[str, Path, Geometry, bool]]) -> None:
        pixels = torch.stack([load_training_pixels(path, geometry, flipped) for _, path, geometry, flipped in jobs])
        latents = self._encode(pixels)
        self.misses += len(jobs)
        for (key, path, geometry, flipped), latent in zip(jobs, latents):
            if not torch.isfinite(latent).all() and self.dtype != torch.float32:
                raise LatentError(f"the VAE produced NaN/inf latents for {path} running in {self.dtype} "
                                  "(sdxl_no_half_vae = false): set sdxl_no_half_vae back to true to run it in "
                                  "fp32, or use the SDXL fp16-fix VAE")
            if not torch.isfinite(latent).all():
                raise LatentError(f"the VAE produced NaN/inf latents for {path}: use an fp32 VAE or the "
                                  "SDXL fp16-fix VAE, and check the image")
            self._store(key, latent.contiguous(), path, geometry, flipped)

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        dtype, device = param.dtype, param.device
        self.vae.to(self.dtype)  # the caller's dtype is restored below
        try:
            with torch.autocast(device.type, enabled=False):
                dist = self.vae.encode(pixels.to(device, self.dtype)).latent_dist
                latents = dist.mean
            config = self.vae.config
            shift = getattr(config, "shift_factor", None) or 0.0
            return ((latents - shift) * config.scaling_factor).float().cpu()
        finally:
            self.vae.to(dtype)

    def _store(self, key: str, latent: torch.Tensor, path: Path, geometry: Geometry, flipped: bool) -> None:
        if self.cache_dir is None:
            self._memory[key] = latent
            return
        info = {"image": str(path), "bucket": f"{geometry.bucket[0]}x{geometry.bucket[1]}",
                "flipped": str(flipped), "vae": self.vae_id, "vae_dtype": str(self.dtype).removeprefix("torch."),
                "format": CACHE_FORMAT}
        with atomic_path(self._file(key)) as tmp:
            save_file({"latents": latent}, str(tmp), metadata=info)


def _same_bucket_groups(jobs: Sequence[tuple[str, Path, Geometry, bool]]) -> list[list]:
    groups: dict[tuple[int, int], list] = {}
    for job in jobs:
        groups.setdefault(job[2].bucket, []).append(job)
    return list(groups.values())


def _readable(path: Path) -> bool:
    """A cache file counts only if its header opens and it holds the latents."""
    if not os.path.isfile(path):
        return False
    try:
        with safe_open(path, framework="pt") as f:
            return "latents" in f.keys()
    except Exception:
        return False
