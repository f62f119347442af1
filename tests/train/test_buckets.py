"""Aspect buckets: known assignments, no-upscale, crops and time ids, reports, epoch batches."""

import json
from collections import Counter

import pytest

from lora_trainer.train.buckets import (
    Bucketer,
    batches_per_epoch,
    bucket_info_json,
    bucket_report,
    epoch_batches,
    rank_share,
)

SDXL = dict(min_bucket_reso=256, max_bucket_reso=2048, bucket_reso_steps=64)


def test_bucket_list_is_on_the_grid_and_within_the_area():
    bucketer = Bucketer((1024, 1024), **SDXL)
    assert (1024, 1024) in bucketer.buckets
    assert {(1344, 768), (768, 1344), (1152, 896), (896, 1152)} <= set(bucketer.buckets)
    for w, h in bucketer.buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 2048 and 256 <= h <= 2048
        assert w * h <= 1024 * 1024


def test_full_hd_goes_to_the_sdxl_widescreen_bucket():
    geometry = Bucketer((1024, 1024), **SDXL).assign((1920, 1080))
    assert geometry.bucket == (1344, 768)
    # Resized to cover 1344x768 (width decides: 1920/1080 > 1344/768), then centre-cropped in height.
    assert geometry.resized_size == (1365, 768)
    assert geometry.crop_left_top == (10, 0)
    assert geometry.time_ids() == (1080, 1920, 0, 10, 768, 1344)


def test_portrait_and_square():
    bucketer = Bucketer((1024, 1024), **SDXL)
    assert bucketer.assign((1080, 1920)).bucket == (768, 1344)
    assert bucketer.assign((3000, 3000)).bucket == (1024, 1024)
    small = bucketer.assign((800, 600))  # upscaled into the closest 4:3-ish bucket
    assert small.bucket == (1152, 896) and small.resized_size[0] >= 1152


def test_no_upscale_keeps_small_images_small():
    bucketer = Bucketer((1024, 1024), bucket_no_upscale=True, **SDXL)
    small = bucketer.assign((800, 600))
    assert small.bucket == (768, 576)  # rounded down to steps, never enlarged
    assert small.resized_size[0] <= 800 and small.resized_size[1] <= 600
    big = bucketer.assign((1920, 1080))
    assert big.bucket == (1344, 768)
    assert bucketer.assign((40, 30)).bucket == (64, 64)  # under one step: one step


def test_buckets_off_gives_one_exact_size():
    bucketer = Bucketer((512, 768), enable_bucket=False)
    geometry = bucketer.assign((1000, 1000))
    assert bucketer.buckets == [(512, 768)]
    assert geometry.bucket == (512, 768)
    assert geometry.resized_size == (768, 768) and geometry.crop_left_top == (128, 0)


def test_flipped_crop_is_mirrored():
    geometry = Bucketer((1024, 1024), **SDXL).assign((2000, 1000))  # bucket 1408x704, resized 1408x704
    wide = Bucketer((64, 64), enable_bucket=False).assign((101, 64))
    assert wide.crop_left_top == (18, 0) and wide.resized_size == (101, 64)
    assert wide.time_ids(flipped=True)[3] == 101 - 64 - 18
    assert geometry.time_ids(flipped=True) == geometry.time_ids()  # nothing cropped sideways


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        Bucketer((1024, 1024), bucket_reso_steps=12)
    with pytest.raises(ValueError, match="within min_bucket_reso"):
        Bucketer((1024, 1024), min_bucket_reso=256, max_bucket_reso=512)


def test_report_and_metadata():
    bucketer = Bucketer((1024, 1024), **SDXL)
    geometries = [bucketer.assign(s) for s in ((1920, 1080), (1280, 720), (1000, 1000))]
    report = bucket_report(geometries, repeats=[10, 10, 5])
    assert "2 bucket(s) for 3 image(s)" in report
    assert "1344 x 768       2 image(s),     20 sample(s)" in report
    info = json.loads(bucket_info_json(geometries, repeats=[10, 10, 5]))
    assert {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()} == {
        (1024, 1024): 5, (1344, 768): 20}
    assert 0 < info["mean_img_ar_error"] < 0.05


def test_epoch_batches_never_mix_buckets_and_replay():
    buckets = [(64, 64)] * 7 + [(128, 64)] * 5 + [(64, 128)] * 3
    batches = epoch_batches(buckets, batch_size=2, seed=42, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(15))  # every sample exactly once
    for batch in batches:
        assert len({buckets[i] for i in batch}) == 1
        assert 1 <= len(batch) <= 2
    assert len(batches) == 4 + 3 + 2 == batches_per_epoch(buckets, 2)
    assert epoch_batches(buckets, 2, seed=42, epoch=0) == batches  # a resumed run sees the same order
    assert epoch_batches(buckets, 2, seed=42, epoch=1) != batches
    assert epoch_batches(buckets, 2, seed=7, epoch=0) != batches


def test_rank_shares_are_equal_and_cover_the_epoch():
    buckets = ["a"] * 9 + ["b"] * 4
    batches = epoch_batches(buckets, batch_size=2, seed=1, epoch=3)  # 5 + 2 = 7 batches
    shares = [rank_share(batches, rank, 2) for rank in range(2)]
    assert [len(s) for s in shares] == [4, 4] == [batches_per_epoch(buckets, 2, world_size=2)] * 2
    covered = Counter(i for share in shares for batch in share for i in batch)
    assert set(covered) == set(range(13))
    assert shares[0] != shares[1]
    assert rank_share(batches, 0, 1) == batches
    with pytest.raises(ValueError):
        rank_share(batches, 2, 2)
