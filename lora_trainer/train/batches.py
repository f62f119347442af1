"""Everything the loop needs from the dataset: the scanned images, their buckets, cached latents and
text embeddings, and each epoch's batches, reproducible from (seed, epoch) so a resumed run replays
exactly the same order."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from lora_trainer.config import TrainConfig
from lora_trainer.config.settings import MAX_TOKEN_LENGTHS
from lora_trainer.project import project_root_of
from lora_trainer.runs import layout
from lora_trainer.train.buckets import (
    Bucketer,
    Geometry,
    batches_per_epoch,
    bucket_info_json,
    bucket_report,
    epoch_batches,
    rank_share,
)
from lora_trainer.train.cache import LatentCache
from lora_trainer.train.data import (
    DatasetError,
    ImageItem,
    TrainingSet,
    hold_out,
    process_caption,
    scan_training_folder,
)
from lora_trainer.train.events import EventLog
from lora_trainer.train.loss_masks import LossMasks
from lora_trainer.train.model import SDXLModel
from lora_trainer.train.text import TextEmbeddingCache, count_cut_tokens, encode_prompts


@dataclass
class Batch:
    latents: torch.Tensor  # [B, 4, h/8, w/8]
    captions: list[str]
    time_ids: torch.Tensor  # [B, 6]
    weights: torch.Tensor | None = None  # [B, 1, h/8, w/8] with masked_loss / alpha_mask


def vae_dtype(cfg: TrainConfig) -> torch.dtype:
    """fp32 with sdxl_no_half_vae (the default: the SDXL VAE can overflow to NaN in fp16), else the
    mixed-precision dtype (fp32 when mixed_precision is "no")."""
    if cfg.sdxl_no_half_vae:
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)


def truncated_captions(cfg: TrainConfig, training_set: TrainingSet, tokenizer) -> list[list]:
    """[caption file (relative to train_data_dir), tokens cut] for every caption longer than
    max_token_length, longest cut first."""
    cuts = count_cut_tokens(tokenizer, [item.caption for item in training_set.items], cfg.max_token_length)
    root = Path(cfg.train_data_dir)
    found = []
    for item, cut in zip(training_set.items, cuts):
        if cut:
            caption_file = item.path.with_suffix(cfg.caption_extension)
            name = caption_file if caption_file.is_file() else item.path
            found.append([name.relative_to(root).as_posix() if name.is_relative_to(root) else name.name, cut])
    return sorted(found, key=lambda entry: (-entry[1], entry[0]))


def model_identity(path: str) -> str:
    """Names a model file's exact contents cheaply (path, size, modification time): hashing a 7 GB
    checkpoint on every run would cost more than the latents it protects."""
    p = Path(path)
    if p.is_file():
        stat = p.stat()
        return f"{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if p.is_dir():
        weights = sorted((p / "vae").glob("*.safetensors")) or sorted((p / "vae").glob("*.bin"))
        return "|".join(model_identity(str(w)) for w in weights) or str(p.resolve())
    return path  # a hub id: the hub's files are immutable per revision


class TrainingBatches:
    def __init__(self, cfg: TrainConfig, training_set: TrainingSet, geometries: list[Geometry],
                 latents: LatentCache, model_name: str, world_size: int, truncated: list[list] | None = None,
                 validation: list[tuple[ImageItem, Geometry]] = ()):
        self.cfg = cfg
        self.items = training_set.items
        self.geometries = geometries
        self.validation = list(validation)  # held-out images: never in a training batch
        self.latents = latents
        self.model_name = model_name
        self.sample_items = training_set.sample_indices()  # one entry per sample: its item index
        self.sample_buckets = [geometries[i].bucket for i in self.sample_items]
        self.num_images = training_set.num_images
        self.num_samples = training_set.num_samples
        self.tag_frequency = training_set.tag_frequency()
        repeats = [item.repeats for item in self.items]
        self.bucket_info = json.loads(bucket_info_json(geometries, repeats))
        self.truncated_captions = truncated or []  # [caption file, tokens cut]
        self.bucket_report = bucket_report(geometries, repeats, self.truncated_captions, cfg.max_token_length)
        self.batches_per_epoch = batches_per_epoch(self.sample_buckets, cfg.train_batch_size, world_size)
        self.text_cache: TextEmbeddingCache | None = None
        self.loss_masks = LossMasks(project_root_of(cfg.train_data_dir).masks if cfg.train_data_dir else None,
                                    cfg.alpha_mask, cfg.masked_loss_background) \
            if cfg.masked_loss or cfg.alpha_mask else None

    @classmethod
    def prepare(cls, cfg: TrainConfig, model: SDXLModel, accelerator: Accelerator,
                events: EventLog) -> TrainingBatches:
        """Scan and check the images, assign buckets, and encode every missing latent ahead of training."""
        training_set = scan_training_folder(cfg.train_data_dir, cfg.caption_extension)
        for warning in training_set.warnings:
            events.emit(layout.WARNING, message=warning)
        held_out = _validation_items(cfg, training_set)
        bucketer = Bucketer(cfg.resolution, enable_bucket=cfg.enable_bucket, min_bucket_reso=cfg.min_bucket_reso,
                            max_bucket_reso=cfg.max_bucket_reso, bucket_reso_steps=cfg.bucket_reso_steps,
                            bucket_no_upscale=cfg.bucket_no_upscale)
        geometries = [bucketer.assign(item.size) for item in training_set.items]
        validation = [(item, bucketer.assign(item.size)) for item in held_out]
        use_disk = cfg.cache_latents and cfg.cache_latents_to_disk
        vae_id = model_identity(cfg.vae or cfg.pretrained_model_name_or_path)
        dtype = vae_dtype(cfg)
        model.vae.to(accelerator.device, dtype)
        cache = LatentCache(model.vae, vae_id, project_root_of(cfg.train_data_dir).latent_cache if use_disk else None,
                            flip_aug=cfg.flip_aug, dtype=dtype)
        truncated = truncated_captions(cfg, training_set, model.tokenizer_1)
        batches = cls(cfg, training_set, geometries, cache, Path(cfg.pretrained_model_name_or_path).name,
                      accelerator.num_processes, truncated, validation)
        events.emit(layout.BUCKETS, report=batches.bucket_report, buckets=batches.bucket_info["buckets"],
                    truncated_captions=truncated)
        if truncated:
            events.emit(layout.WARNING, message=_truncation_warning(cfg, truncated))
        jobs = [(item.path, geometry) for item, geometry in [*zip(training_set.items, geometries), *validation]]
        # With a disk cache rank 0 encodes and the others then read its files.
        with accelerator.main_process_first() if use_disk else contextlib.nullcontext():
            encoded = cache.prepare(jobs, lambda done, total: events.emit(layout.CACHING, done=done, total=total))
        batches.prepare_loss_masks(events)
        events.emit(layout.LATENTS, encoded=encoded, reused=cache.hits,
                    cache_dir=str(cache.cache_dir) if cache.cache_dir else None)
        model.vae.to("cpu")  # every latent is cached: free the accelerator for training
        return batches

    def prepare_loss_masks(self, events: EventLog) -> None:
        """Every image's latent-grid loss weights, made before training; images without a mask are named."""
        if self.loss_masks is None:
            return
        for item, geometry in zip(self.items, self.geometries):
            for flipped in ((False, True) if self.cfg.flip_aug else (False,)):
                self.loss_masks.weights(item.path, geometry, flipped)
        missing = sorted(dict.fromkeys(p.name for p in self.loss_masks.missing))
        if missing:
            where = "no alpha channel" if self.cfg.alpha_mask else f"no mask in {self.loss_masks.masks_dir}"
            events.emit(layout.WARNING, message=f"masked loss: {len(missing)} image(s) have {where} and train "
                                                f"whole: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))

    def build_text_cache(self, model: SDXLModel, train_text_encoder: bool) -> None:
        """Frozen text encoders: encode every caption once; without caption shuffling no new caption
        can appear, so the encoders leave the accelerator."""
        if train_text_encoder:
            return
        encoders = [model.text_encoder_1, model.text_encoder_2]
        self.text_cache = TextEmbeddingCache([model.tokenizer_1, model.tokenizer_2], encoders,
                                             self.cfg.max_token_length)
        dropped = [""] if self.cfg.caption_dropout_rate or self.cfg.caption_dropout_every_n_epochs else []
        held_out = [item.caption for item, _ in self.validation]
        self.text_cache.prepare([item.caption for item in self.items] + held_out + dropped)
        if self.captions_vary:
            self.text_cache.keep_new = False  # a new tag order or subset each step: encoded, not kept
        else:
            for encoder in encoders:
                encoder.to("cpu")

    @property
    def captions_vary(self) -> bool:
        """Whether a step can bring a caption never seen before (shuffled or dropped tags)."""
        return self.cfg.shuffle_caption or bool(self.cfg.caption_tag_dropout_rate)

    def for_epoch(self, epoch: int, rank: int, world_size: int) -> list[list[int]]:
        """This rank's batches for `epoch`, as lists of item indices."""
        batches = epoch_batches(self.sample_buckets, self.cfg.train_batch_size, self.cfg.seed, epoch)
        return [[self.sample_items[s] for s in batch] for batch in rank_share(batches, rank, world_size)]

    def load(self, item_indices: list[int], rng, device: torch.device, epoch: int = 0) -> Batch:
        """The batch's latents, captions (shuffled, with tags or whole captions dropped, as set) and
        SDXL size conditioning; `epoch` counts from 0 (caption_dropout_every_n_epochs counts from 1)."""
        cfg = self.cfg
        every = cfg.caption_dropout_every_n_epochs
        drop_all = bool(every) and (epoch + 1) % every == 0
        latents, captions, time_ids, weights = [], [], [], []
        for index in item_indices:
            item, geometry = self.items[index], self.geometries[index]
            flipped = cfg.flip_aug and rng.random() < 0.5
            latents.append(self.latents.get(item.path, geometry, flipped))
            if self.loss_masks is not None:
                weights.append(self.loss_masks.weights(item.path, geometry, flipped))
            captions.append(process_caption(item.caption, cfg.shuffle_caption, cfg.keep_tokens, rng,
                                            dropout=cfg.caption_dropout_rate, tag_dropout=cfg.caption_tag_dropout_rate,
                                            drop=drop_all))
            time_ids.append(geometry.time_ids(flipped))
        return Batch(latents=torch.stack(latents).to(device), captions=captions,
                     time_ids=torch.tensor(time_ids, dtype=torch.float32, device=device),
                     weights=torch.stack(weights).to(device) if weights else None)

    def embed(self, captions: list[str], model: SDXLModel, text_encoders) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled): from the cache, or through the (trained) encoders with grad."""
        if self.text_cache is not None:
            return self.text_cache.get(captions, device=model.unet.device)
        return encode_prompts([model.tokenizer_1, model.tokenizer_2], text_encoders, captions,
                              self.cfg.max_token_length)


def _validation_items(cfg: TrainConfig, training_set: TrainingSet) -> list[ImageItem]:
    """The held-out images: a folder of them, or a split of the training folder (taken out of
    `training_set`, so they are never trained on)."""
    if cfg.validation_data_dir:
        try:
            return scan_training_folder(cfg.validation_data_dir, cfg.caption_extension).items
        except DatasetError as e:
            raise DatasetError(f"validation_data_dir: {e}") from None
    seed = cfg.seed if cfg.validation_seed is None else cfg.validation_seed
    training_set.items, held_out = hold_out(training_set.items, cfg.validation_split, seed)
    return held_out


def _truncation_warning(cfg: TrainConfig, truncated: list[list]) -> str:
    shown = ", ".join(f"{name} (+{cut})" for name, cut in truncated[:10])
    more = f" and {len(truncated) - 10} more" if len(truncated) > 10 else ""
    longer = [str(n) for n in MAX_TOKEN_LENGTHS if n > cfg.max_token_length]
    advice = f"Set max_token_length to {' or '.join(longer)}, or shorten them." if longer else "Shorten them."
    shuffled = " With shuffle_caption the tags that are cut change from step to step." if cfg.shuffle_caption else ""
    return (f"{len(truncated)} caption(s) are longer than max_token_length {cfg.max_token_length} and lose "
            f"their last tokens in training, while the WebUI reads the whole prompt: {shown}{more}. "
            f"{advice}{shuffled}")
