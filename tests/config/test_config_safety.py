"""Values that used to fail late (an OverflowError, a TypeError at the first step, a UnicodeDecodeError)
are refused when the config is read, with a message naming the file or key."""

from __future__ import annotations

import codecs
import importlib
import inspect
import json

import pytest

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.kohya_import import import_kohya
from lora_trainer.config.settings import MAX_SEED, OPTIMIZER_ARGS


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70])
def test_seeds_outside_what_the_random_generators_take_are_refused(seed):
    with pytest.raises(ConfigError, match=rf"seed = {seed}: must be from 0 to 4294967295"):
        TrainConfig(seed=seed)
    assert TrainConfig(seed=MAX_SEED).seed == 2**32 - 1


@pytest.mark.parametrize(("optimizer", "args", "expected"), [
    ("AdamW", "foo=1", "AdamW has no argument 'foo'; it takes betas, eps"),
    ("AdamW", "relative_step=False", "AdamW has no argument 'relative_step'"),
    ("Adafactor", "betas=0.9,0.99", "Adafactor has no argument 'betas'"),
    ("Prodigy", "lr=1.0", "set the learning rate with learning_rate"),
])
def test_optimizer_args_are_checked_against_the_optimizer(optimizer, args, expected):
    with pytest.raises(ConfigError, match="optimizer_args = ") as error:
        TrainConfig(optimizer=optimizer, optimizer_args=args)
    assert expected in str(error.value)
    assert TrainConfig(optimizer="Prodigy", optimizer_args="d0=1e-5 decouple=True").optimizer_kwargs["d0"] == 1e-5


def test_kohya_import_drops_arguments_the_optimizer_does_not_take():
    result = import_kohya({"optimizer": "AdamW", "optimizer_args": "weight_decay=0.1 foo=2"})
    assert result.config.optimizer_args == "weight_decay=0.1" and "foo=2" in result.ignored["optimizer_args"]


_REAL = {  # optimizer -> (module, attribute) of the class the trainer builds (train/optim.py)
    "AdamW": ("torch.optim", "AdamW"),
    "Adafactor": ("transformers.optimization", "Adafactor"),
    "AdamW8bit": ("bitsandbytes.optim", "AdamW8bit"),
    "Prodigy": ("prodigyopt", "Prodigy"),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree"),
}
_SET_BY_THE_TRAINER = {"AdamWScheduleFree": {"warmup_steps"}}  # from lr_warmup / lr_warmup_steps


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_ARGS))
def test_the_argument_table_matches_the_installed_optimizers(optimizer):
    module, name = _REAL[optimizer]
    cls = getattr(pytest.importorskip(module), name)
    parameters = inspect.signature(cls).parameters
    real = {p for p, v in parameters.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}
    assert set(OPTIMIZER_ARGS[optimizer]) == real - {"params", "lr"} - _SET_BY_THE_TRAINER.get(optimizer, set())


def test_config_stays_torch_free_at_import():
    import subprocess
    import sys

    code = "import sys, lora_trainer.config.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    importlib.import_module("lora_trainer.config.settings")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom"])
def test_config_files_in_utf8_or_utf16_with_a_bom_are_read(tmp_path, encoding):
    text = json.dumps({"output_name": "café", "seed": 7})
    data = (codecs.BOM_UTF16_BE + text.encode("utf-16-be")) if encoding == "utf-16-be-bom" else text.encode(encoding)
    (tmp_path / "c.json").write_bytes(data)
    config = TrainConfig.from_json(tmp_path / "c.json")
    assert config.output_name == "café" and config.seed == 7


def test_a_config_in_another_encoding_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(json.dumps({"output_name": "café"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"cannot read config {path}: not UTF-8 text .*save it as UTF-8"):
        TrainConfig.from_json(path)
    path.write_bytes(json.dumps({"seed": 1}).encode("utf-16-le"))  # no BOM
    with pytest.raises(ConfigError, match=rf"cannot read config {path}: holds NUL bytes"):
        TrainConfig.from_json(path)


@pytest.mark.parametrize("name", ["abc\n", "a\tb", "a\x00b", "line\u2028sep"])
def test_output_names_with_control_characters_are_refused(name):
    with pytest.raises(ConfigError, match="output_name = .*control characters"):
        TrainConfig(output_name=name)
