"""Latent cache: encoded once, reused across runs, re-encoded exactly when the image, bucket or VAE change."""

import math

import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors import safe_open

from lora_trainer.train.buckets import Bucketer
from lora_trainer.train.cache import LatentCache, LatentError, file_identity, load_training_pixels
from lora_trainer.train.data import scan_training_folder


@pytest.fixture(scope="module")
def vae():
    """A tiny 4-level VAE: scale factor 8 like SDXL's, with SDXL's scaling factor."""
    torch.manual_seed(0)
    blocks = 4
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=(8, 16, 16, 16),
                         layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64,
                         scaling_factor=0.13025).eval()


@pytest.fixture
def planned(character_dataset):
    """(path, geometry) for the 8 synthetic 64 px images at one 64x64 bucket."""
    bucketer = Bucketer((64, 64), enable_bucket=False)
    items = scan_training_folder(character_dataset).items
    return [(item.path, bucketer.assign(item.size)) for item in items]


def test_pixels_are_resized_cropped_and_in_range(tmp_path):
    path = tmp_path / "wide.png"
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 100))  # a blue strip on the left edge
    image.save(path)
    geometry = Bucketer((64, 64), enable_bucket=False).assign((200, 100))
    assert geometry.resized_size == (128, 64) and geometry.crop_left_top == (32, 0)
    pixels = load_training_pixels(path, geometry)
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    # The centre crop cut the blue strip away: red everywhere.
    torch.testing.assert_close(pixels[:, 32, 32], torch.tensor([1.0, -1.0, -1.0]))
    assert (pixels[0] > 0.9).all()
    flipped = load_training_pixels(path, geometry, flip=True)
    torch.testing.assert_close(flipped, pixels.flip(-1))


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "cutout.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(path)
    geometry = Bucketer((64, 64), enable_bucket=False).assign((64, 64))
    assert torch.all(load_training_pixels(path, geometry) == 1.0)


def test_second_run_reads_the_disk_cache_and_a_changed_image_reencodes_once(vae, planned, tmp_path):
    cache_dir = tmp_path / "cache"
    first = LatentCache(vae, "tiny-vae-v1", cache_dir)
    progress = []
    assert first.prepare(planned, progress_callback=lambda done, total: progress.append((done, total))) == 8
    assert first.misses == 8 and progress[0] == (0, 8) and progress[-1] == (8, 8)
    assert len(list(cache_dir.glob("*.safetensors"))) == 8
    latent = first.get(*planned[0])
    assert latent.shape == (4, 8, 8) and latent.dtype == torch.float32 and torch.isfinite(latent).all()

    second = LatentCache(vae, "tiny-vae-v1", cache_dir)  # a new run
    assert second.prepare(planned) == 0
    assert second.misses == 0 and second.hits == 8
    for _epoch in range(2):  # two epochs
        for path, geometry in planned:
            second.get(path, geometry)
    assert second.misses == 0
    torch.testing.assert_close(second.get(*planned[0]), latent)

    changed_path, geometry = planned[3]
    Image.new("RGB", (64, 64), (0, 200, 0)).save(changed_path)
    third = LatentCache(vae, "tiny-vae-v1", cache_dir)
    assert third.prepare(planned) == 1
    assert third.misses == 1 and third.hits == 7
    third.get(changed_path, geometry)
    assert third.misses == 1


def test_cached_latents_equal_a_direct_encode(vae, planned, tmp_path):
    cache = LatentCache(vae, "tiny", tmp_path, vae_batch_size=3)
    cache.prepare(planned)
    path, geometry = planned[5]
    with torch.no_grad():
        direct = vae.encode(load_training_pixels(path, geometry)[None]).latent_dist.mean[0] * 0.13025
    torch.testing.assert_close(cache.get(path, geometry), direct, atol=1e-5, rtol=1e-4)


def test_another_bucket_or_vae_misses(vae, planned, tmp_path):
    LatentCache(vae, "vae-A", tmp_path).prepare(planned[:2])
    other_vae = LatentCache(vae, "vae-B", tmp_path)
    assert other_vae.prepare(planned[:2]) == 2
    wider = Bucketer((128, 64), enable_bucket=False)
    other_bucket = [(path, wider.assign(geometry.original_size)) for path, geometry in planned[:2]]
    same_vae = LatentCache(vae, "vae-A", tmp_path)
    assert same_vae.prepare(other_bucket) == 2
    assert same_vae.get(*other_bucket[0]).shape == (4, 8, 16)
    assert same_vae.prepare(planned[:2]) == 0


def test_flip_aug_caches_both_and_renamed_files_still_hit(vae, planned, tmp_path):
    cache = LatentCache(vae, "tiny", tmp_path / "c", flip_aug=True)
    assert cache.prepare(planned[:3]) == 6
    path, geometry = planned[0]
    plain, mirrored = cache.get(path, geometry), cache.get(path, geometry, flipped=True)
    assert cache.misses == 6 and not torch.equal(plain, mirrored)
    moved = tmp_path / "renamed.png"
    moved.write_bytes(path.read_bytes())
    assert LatentCache(vae, "tiny", tmp_path / "c", flip_aug=True).prepare([(moved, geometry)]) == 0


def test_memory_mode_and_a_damaged_file(vae, planned, tmp_path):
    memory = LatentCache(vae, "tiny", None)
    memory.prepare(planned[:2])
    memory.get(*planned[0])
    assert memory.misses == 2 and memory.hits == 1
    disk = LatentCache(vae, "tiny", tmp_path)
    disk.prepare(planned[:1])
    damaged = next(tmp_path.glob("*.safetensors"))
    damaged.write_bytes(b"half a file")
    again = LatentCache(vae, "tiny", tmp_path)
    assert again.prepare(planned[:1]) == 1
    with safe_open(damaged, framework="pt") as f:
        assert f.metadata()["bucket"] == "64x64"


def test_fp16_vae_runs_in_fp32_and_nan_names_the_image(vae, planned, tmp_path):
    cache = LatentCache(vae.to(torch.float16), "tiny", None)
    try:
        cache.prepare(planned[:1])
        assert next(vae.parameters()).dtype == torch.float16  # the caller's dtype is given back
        assert cache.get(*planned[0]).dtype == torch.float32
    finally:
        vae.to(torch.float32)

    class NaNVae(torch.nn.Module):
        config = vae.config

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, pixels):
            dist = type("Dist", (), {"mean": torch.full((len(pixels), 4, 8, 8), math.nan)})
            return type("Out", (), {"latent_dist": dist})

    with pytest.raises(LatentError, match=f"NaN/inf latents for {planned[0][0]}"):
        LatentCache(NaNVae(), "broken", None).prepare(planned[:1])


def test_file_identity_changes_when_the_model_file_is_replaced(tmp_path):
    model = tmp_path / "sdxl.safetensors"
    model.write_bytes(b"x" * 10)
    before = file_identity(model)
    assert before.startswith("sdxl.safetensors:10:") and file_identity(model) == before
    model.write_bytes(b"y" * 11)
    assert file_identity(model) != before
