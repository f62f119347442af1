"""Test isolation: tools that write into the home folder (onnxruntime, huggingface-hub, rembg,
Chromium) get a private one, and nothing may reach the network."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    for var, sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("HF_HOME", ".cache/huggingface"),
                     ("U2NET_HOME", ".u2net")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    yield
