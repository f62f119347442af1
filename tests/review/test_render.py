"""Rendering a review grid: the standalone renderer (diffusers, tiny model, CPU) is deterministic per
seed, a LoRA changes the image and a weight-0 LoRA does not; a cell that fails shows its error while
the others render; a stop keeps the finished cells."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from lora_trainer.demo.tiny_lora import write_tiny_lora
from lora_trainer.host import StandaloneHost
from lora_trainer.review.render import render_grid
from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderError, RenderJob, RenderSettings, Row


@pytest.fixture(scope="module")
def loras(tiny_sdxl, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return [make_lora(tiny_sdxl, folder / f"hero-{n:06d}.safetensors", seed=n) for n in (1, 2)]


@pytest.fixture(scope="module")
def host(tiny_sdxl, tmp_path_factory):
    return StandaloneHost(workspace_dir=tmp_path_factory.mktemp("ws"), config_dir=tiny_sdxl.config_dir)


def settings(tiny_sdxl, **changes) -> RenderSettings:
    values = dict(steps=2, width=64, height=64, cfg_scale=5.0, checkpoint=str(tiny_sdxl.single_file))
    values.update(changes)
    return RenderSettings(**values)


def pixels(image) -> np.ndarray:
    return np.asarray(image)


def test_same_seed_same_bytes_a_lora_changes_the_image_and_weight_zero_does_not(tiny_sdxl, host, loras):
    lora = LoraRef(loras[0], "hero-000001")
    spec = GridSpec(columns=[Column("no LoRA", None), Column("epoch 1", lora, epoch=1)],
                    rows=[Row("a photo", "a photo of a woman"), Row("weight 0", "a photo of a woman", 0.0)],
                    seeds=[7], settings=settings(tiny_sdxl))
    progress = []
    result = render_grid(spec, host, on_cell=lambda done, total, key, cell: progress.append((done, total, key)))

    assert progress == [(1, 4, (0, 0, 0)), (2, 4, (0, 0, 1)), (3, 4, (0, 1, 0)), (4, 4, (0, 1, 1))]
    assert result.complete and not result.errors
    baseline, with_lora = pixels(result.cells[0, 0, 0]), pixels(result.cells[0, 0, 1])
    assert baseline.shape == (64, 64, 3)
    assert np.abs(baseline.astype(int) - with_lora.astype(int)).max() > 0, "the LoRA must change the image"
    assert np.array_equal(pixels(result.cells[0, 1, 0]), baseline)  # the baseline ignores the row's weight
    assert np.array_equal(pixels(result.cells[0, 1, 1]), baseline), "a weight-0 LoRA is the baseline"
    # The same job again, after other cells: the same bytes.
    again = host.render(RenderJob("a photo of a woman", 7, spec.settings, lora))
    assert again.tobytes() == result.cells[0, 0, 1].tobytes()
    other_seed = host.render(RenderJob("a photo of a woman", 8, spec.settings, lora))
    assert other_seed.tobytes() != again.tobytes()
    assert len(result.cell_seconds) == 4 and result.overhead_seconds < result.total_seconds


def test_a_missing_or_unreadable_lora_is_an_error_in_its_cell_and_the_others_render(tiny_sdxl, host, loras,
                                                                                    tmp_path):
    missing = tmp_path / "gone-000003.safetensors"
    broken = tmp_path / "broken-000004.safetensors"
    broken.write_bytes(b"not a safetensors file")
    spec = GridSpec(columns=[Column("epoch 3", LoraRef(missing, missing.stem)),
                             Column("epoch 4", LoraRef(broken, broken.stem)),
                             Column("epoch 2", LoraRef(loras[1], loras[1].stem))],
                    rows=[Row("p", "a photo")], seeds=[1], settings=settings(tiny_sdxl, sampler="Euler a"))
    result = render_grid(spec, host)
    assert set(result.errors) == {(0, 0, 0), (0, 0, 1)}
    assert str(missing) in result.cells[0, 0, 0] and "not found" in result.cells[0, 0, 0]
    assert str(broken) in result.cells[0, 0, 1]
    assert pixels(result.cells[0, 0, 2]).shape == (64, 64, 3)


def test_the_renderer_refuses_an_unknown_sampler_naming_the_known_ones(tiny_sdxl, host):
    with pytest.raises(RenderError, match=r"'Euler b'.*Euler, Euler a, DPM\+\+ 2M"):
        host.render(RenderJob("a photo", 1, settings(tiny_sdxl, sampler="Euler b")))


def test_standalone_host_needs_a_base_model_that_loads(tmp_path, tiny_sdxl, monkeypatch):
    host = StandaloneHost(workspace_dir=tmp_path, config_dir=tiny_sdxl.config_dir)
    with pytest.raises(RenderError, match="choose a base model"):
        host.render(RenderJob("a photo", 1, RenderSettings()))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    job = RenderJob("a photo", 1, RenderSettings(checkpoint=str(broken)))
    with pytest.raises(RenderError, match="broken.safetensors") as first:
        host.render(job)
    import lora_trainer.review.diffusers_render as renderer

    monkeypatch.setattr(renderer, "DiffusersRenderer", None)  # the next cell does not load it again
    with pytest.raises(RenderError) as again:
        host.render(job)
    assert str(again.value) == str(first.value)


class FakeHost:
    """Renders a string per job; stops the grid or fails where told."""

    def __init__(self, stop_after: int = 0, stop: threading.Event | None = None, fail_at: int = 0):
        self.jobs: list[RenderJob] = []
        self.stop_after, self.stop, self.fail_at = stop_after, stop, fail_at

    def render(self, job: RenderJob):
        self.jobs.append(job)
        if len(self.jobs) == self.fail_at:
            raise ValueError("out of memory")
        if len(self.jobs) == self.stop_after and self.stop is not None:
            self.stop.set()  # the user presses Stop while this cell renders
        return f"image {job.seed} {job.prompt} {job.lora and job.lora.weight}"


def small_spec(tmp_path) -> GridSpec:
    lora = tmp_path / "hero-000001.safetensors"
    lora.write_bytes(b"x")
    return GridSpec(columns=[Column("no LoRA", None), Column("epoch 1", LoraRef(lora, lora.stem, 0.8))],
                    rows=[Row("cat", "a cat"), Row("dog", "a dog")], seeds=[1, 2])


def test_a_stopped_grid_keeps_its_finished_cells(tmp_path):
    stop = threading.Event()
    host = FakeHost(stop_after=3, stop=stop)
    result = render_grid(small_spec(tmp_path), host, stop=stop)
    assert result.stopped and not result.complete
    assert result.cells == {(0, 0, 0): "image 1 a cat None", (0, 0, 1): "image 1 a cat 0.8",
                            (0, 1, 0): "image 1 a dog None"}
    assert len(host.jobs) == 3


def test_an_unexpected_failure_ends_the_grid_naming_the_cell(tmp_path):
    with pytest.raises(RenderError, match=r"seed 1, row 'dog', column 'epoch 1'.*ValueError: out of memory"):
        render_grid(small_spec(tmp_path), FakeHost(fail_at=4))


def test_cells_render_in_order_with_row_weights_applied(tmp_path):
    spec = small_spec(tmp_path)
    host = FakeHost()
    result = render_grid(spec, host)
    assert result.complete and len(result.cells) == 8
    assert [(j.seed, j.prompt, j.lora and j.lora.weight) for j in host.jobs[:4]] == [
        (1, "a cat", None), (1, "a cat", 0.8), (1, "a dog", None), (1, "a dog", 0.8)]


def make_lora(tiny_sdxl, path: Path, seed: int, scale: float = 0.5) -> Path:
    """A kohya LoRA file with random non-zero U-Net weights, made without training."""
    return write_tiny_lora(tiny_sdxl.diffusers_dir, path, seed=seed, scale=scale)


def _lycoris_file(tiny_sdxl, path: Path, **network) -> Path:
    """A LoHa / DoRA file for the tiny model with random (trained-looking) values."""
    import torch

    from lora_trainer.config import TrainConfig
    from lora_trainer.train.export import save_lora
    from lora_trainer.train.model import load_sdxl
    from lora_trainer.train.network import UNET_CONV_TARGETS, add_network, collect_network_tensors
    from lora_trainer.train.sgm_names import UNET_LORA_TARGETS, UNetLayout

    unet = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir)).unet
    add_network(unet, TrainConfig(network_dim=4, network_alpha=4.0, **network), UNET_LORA_TARGETS, UNET_CONV_TARGETS)
    generator = torch.Generator().manual_seed(5)
    for name, p in unet.named_parameters():
        if p.requires_grad:
            noise = torch.randn(p.shape, generator=generator)
            p.data = p.data * (1 + 0.3 * noise) if "dora" in name else 0.3 * noise
    tensors = collect_network_tensors({"unet": unet}, UNetLayout.from_config(unet.config))
    return save_lora(path, tensors, {"ss_network_module": "lycoris.kohya"})


def test_loha_and_dora_files_render_merged_and_leave_no_trace(tiny_sdxl, host, loras, tmp_path):
    """diffusers cannot apply LoHa / LoKr / DoRA: the renderer merges them into the weights at the job's
    weight and puts the weights back before the next cell."""
    loha = LoraRef(_lycoris_file(tiny_sdxl, tmp_path / "hero-loha.safetensors", LoRA_type="LyCORIS/LoHa",
                                 conv_dim=2, conv_alpha=2.0), "hero-loha")
    dora_file = LoraRef(_lycoris_file(tiny_sdxl, tmp_path / "hero-dora.safetensors", dora_wd=True), "hero-dora")
    plain = LoraRef(loras[0], "hero-000001")
    s = settings(tiny_sdxl)

    def image(lora, weight=1.0, seed=7):
        ref = None if lora is None else LoraRef(lora.path, lora.name, weight)
        return pixels(host.render(RenderJob("a photo of a woman", seed, s, ref)))

    baseline, plain_before = image(None), image(plain)
    with_loha, half_loha, zero_loha = image(loha), image(loha, 0.5), image(loha, 0.0)
    with_dora = image(dora_file)
    assert np.abs(with_loha.astype(int) - baseline.astype(int)).max() > 0, "the LoHa changes the image"
    assert np.abs(half_loha.astype(int) - with_loha.astype(int)).max() > 0, "its weight is applied"
    assert np.array_equal(zero_loha, baseline)
    assert np.abs(with_dora.astype(int) - baseline.astype(int)).max() > 0, "the DoRA file changes the image"
    assert np.array_equal(image(None), baseline), "the merged weights were put back"
    assert np.array_equal(image(plain), plain_before), "a plain LoRA renders as before"
    assert np.array_equal(image(loha), with_loha)
