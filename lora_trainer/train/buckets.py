"""Aspect-ratio buckets (kohya-style), each image's resize + centre crop, and epoch batching.

SDXL trains on many shapes of the same pixel area. The bucket list is every (w, h) with sides in
[min_bucket_reso, max_bucket_reso], multiples of bucket_reso_steps, and w*h <= the max_resolution area;
each image goes to the bucket whose aspect ratio is closest to its own. It is resized to cover the
bucket, then centre-cropped. With bucket_no_upscale an image is never enlarged: its bucket is its own
size shrunk to the area if needed and rounded down to steps. Buckets off: one exact size for all.

The SDXL U-Net is told each image's geometry through its "time ids":
(original_h, original_w, crop_top, crop_left, target_h, target_w).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Size = tuple[int, int]  # (width, height) everywhere in this module, like Pillow


@dataclass(frozen=True)
class Geometry:
    """How one image becomes one training tensor."""

    original_size: Size   # after EXIF rotation
    resized_size: Size    # covers the bucket
    crop_left_top: tuple[int, int]
    bucket: Size          # the trained (target) size

    def time_ids(self, flipped: bool = False) -> tuple[int, int, int, int, int, int]:
        """SDXL add_time_ids. A flipped image's crop is mirrored, so its left edge moves."""
        left, top = self.crop_left_top
        if flipped:
            left = self.resized_size[0] - self.bucket[0] - left
        (ow, oh), (tw, th) = self.original_size, self.bucket
        return oh, ow, top, left, th, tw


class Bucketer:
    """Assigns a Geometry to each image size. `resolution` is max_resolution as (w, h)."""

    def __init__(self, resolution: Size, *, enable_bucket: bool = True, min_bucket_reso: int = 256,
                 max_bucket_reso: int = 2048, bucket_reso_steps: int = 64, bucket_no_upscale: bool = False):
        if bucket_reso_steps < 8 or bucket_reso_steps % 8:
            raise ValueError(f"bucket_reso_steps must be a multiple of 8 (the VAE's scale), "
                             f"got {bucket_reso_steps}")
        if any(side < 8 or side % 8 for side in resolution):
            raise ValueError(f"resolution sides must be multiples of 8, got {resolution}")
        if enable_bucket and not min_bucket_reso <= min(resolution) <= max(resolution) <= max_bucket_reso:
            raise ValueError(f"max_resolution {resolution} must lie within min_bucket_reso "
                             f"{min_bucket_reso} .. max_bucket_reso {max_bucket_reso}")
        self.resolution = tuple(resolution)
        self.enable_bucket = enable_bucket
        self.min_reso, self.max_reso = min_bucket_reso, max_bucket_reso
        self.steps = bucket_reso_steps
        self.no_upscale = bucket_no_upscale
        self.max_area = resolution[0] * resolution[1]
        self.buckets = self._make_buckets() if enable_bucket else [self.resolution]

    def _make_buckets(self) -> list[Size]:
        """For every width on the step grid, the tallest height that keeps the area; both orientations."""
        found = set()
        for width in range(self.min_reso, self.max_reso + 1, self.steps):
            height = min(self.max_reso, self.max_area // width // self.steps * self.steps)
            if height >= self.min_reso:
                found.update({(width, height), (height, width)})
        side = int(math.sqrt(self.max_area)) // self.steps * self.steps
        found.add((side, side))  # the square bucket, which the loop above may step past
        return sorted(found)

    def bucket_for(self, size: Size) -> Size:
        width, height = size
        if not self.enable_bucket:
            return self.resolution
        if self.no_upscale and width * height <= self.max_area:
            return self._shrink_to_steps(width, height, 1.0)
        if self.no_upscale:
            return self._shrink_to_steps(width, height, math.sqrt(self.max_area / (width * height)))
        ratio = width / height
        return min(self.buckets, key=lambda b: (abs(b[0] / b[1] - ratio), -b[0] * b[1]))

    def _shrink_to_steps(self, width: int, height: int, scale: float) -> Size:
        scale = min(scale, self.max_reso / width, self.max_reso / height)
        # Rounding down keeps the area within max and never enlarges; an image under one step gets one.
        return (max(self.steps, int(width * scale) // self.steps * self.steps),
                max(self.steps, int(height * scale) // self.steps * self.steps))

    def assign(self, size: Size) -> Geometry:
        """The bucket plus the resize that covers it and the centred crop."""
        bucket = self.bucket_for(size)
        width, height = size
        scale = max(bucket[0] / width, bucket[1] / height)
        resized = (max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale)))
        crop = ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)
        return Geometry(original_size=(width, height), resized_size=resized, crop_left_top=crop, bucket=bucket)


def bucket_report(geometries: Sequence[Geometry], repeats: Sequence[int],
                  truncated_captions: Sequence[tuple[str, int]] = (), max_token_length: int | None = None) -> str:
    """Human-readable: one line per bucket, images and samples (images x repeats) in it; with
    max_token_length, then the captions cut at that length, each with how many tokens it loses
    (`truncated_captions`: (caption file, tokens cut) pairs)."""
    images, samples = Counter(), Counter()
    for geometry, n in zip(geometries, repeats):
        images[geometry.bucket] += 1
        samples[geometry.bucket] += n
    lines = [f"{len(images)} bucket(s) for {sum(images.values())} image(s):"]
    for bucket in sorted(images, key=lambda b: (b[0] * b[1], b)):
        lines.append(f"  {bucket[0]:>5} x {bucket[1]:<5} {images[bucket]:>5} image(s), "
                     f"{samples[bucket]:>6} sample(s) per epoch")
    if max_token_length is not None:
        cut = f"{len(truncated_captions)} (cut):" if truncated_captions else "none"
        lines.append(f"captions longer than {max_token_length} tokens: {cut}")
        lines += [f"  {name} (+{tokens} tokens)" for name, tokens in truncated_captions]
    return "\n".join(lines)


def bucket_info_json(geometries: Sequence[Geometry], repeats: Sequence[int]) -> str:
    """kohya's `ss_bucket_info` metadata: buckets with resolution [w, h] and count (with repeats)."""
    samples = Counter()
    errors = []
    for geometry, n in zip(geometries, repeats):
        samples[geometry.bucket] += n
        (ow, oh), (bw, bh) = geometry.original_size, geometry.bucket
        errors.append(abs(ow / oh - bw / bh))
    buckets = {str(i): {"resolution": list(b), "count": samples[b]} for i, b in enumerate(sorted(samples))}
    mean_error = sum(errors) / len(errors) if errors else 0.0
    return json.dumps({"buckets": buckets, "mean_img_ar_error": mean_error})


def epoch_batches(bucket_of_each_sample: Sequence[Hashable], batch_size: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """The epoch's batches as lists of sample indices. A batch holds one bucket only; samples within a
    bucket and the batch order are shuffled from (seed, epoch) alone, so a resumed run replays it."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
    rng = random.Random(f"buckets-{seed}-{epoch}")  # a str seed is stable across processes
    by_bucket: dict[Hashable, list[int]] = {}
    for index, bucket in enumerate(bucket_of_each_sample):
        by_bucket.setdefault(bucket, []).append(index)
    batches = []
    for bucket in sorted(by_bucket, key=repr):  # a fixed order before shuffling
        members = by_bucket[bucket]
        rng.shuffle(members)
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def batches_per_epoch(bucket_of_each_sample: Sequence[Hashable], batch_size: int, world_size: int = 1) -> int:
    """How many batches each rank steps through per epoch (for the lr schedule's length)."""
    counts = Counter(bucket_of_each_sample).values()
    total = sum(math.ceil(n / batch_size) for n in counts)
    return math.ceil(total / world_size)


def rank_share(batches: Sequence[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank `rank`'s batches. Every rank gets the same number (distributed training steps in
    lockstep): when the count does not divide, the first batches are reused to fill up, as
    accelerate's even_batches does, so no sample is dropped."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if not batches:
        return []
    per_rank = math.ceil(len(batches) / world_size)
    padded = [batches[i % len(batches)] for i in range(per_rank * world_size)]
    return [list(b) for b in padded[rank::world_size]]
