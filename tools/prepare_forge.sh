#!/usr/bin/env bash
# Prepare a real Stable Diffusion WebUI Forge that runs on the CPU, for tests/forge/test_forge.py
# (FORGE_DIR=<dir> pytest tests/forge) and for trying the extension by hand. Nothing here is
# committed to this repository; everything lands under the folder you name.
#
#   tools/prepare_forge.sh /path/to/forge        # about 2.5 minutes and 9 GB of disk
#
# What it makes, in that folder:
#   - a Forge work tree at FORGE_COMMIT, with repositories/huggingface_guess and
#     repositories/stable-diffusion-webui-assets at the commits Forge's launch_utils.py names
#     (Forge would clone them at start; the test starts it with --skip-prepare-environment);
#   - venv/: Python 3.11 or 3.10, torch (CPU) + Forge's requirements_versions.txt (without its
#     torch and setuptools lines) + joblib, under venv-constraints.txt (torch pinned,
#     setuptools>=77.0.3,<81: torch 2.13 needs >=77, and >=81 lacks pkg_resources);
#     PyPI's torchvision is a CUDA build that fails to import on CPU torch; Forge only uses its
#     transforms, so a .pth registers an empty torchvision._meta_registrations module;
#   - this extension's own requirements in that venv, installed by our install.py run the way
#     Forge runs an extension's installer at start (the test starts Forge with --skip-install);
#   - models/Stable-diffusion/random-sdxl.safetensors: full-size SDXL with random weights (6.9 GB),
#     built from Forge's own SDXL config folder (lora_trainer.demo.random_sdxl);
#   - config.json with live previews off (the first txt2img would otherwise download a preview
#     decoder and answer HTTP 500 offline).
#
#   - with ADETAILER_SOURCE set: the ADetailer extension in extensions/adetailer (ADETAILER_COMMIT) with
#     its requirements (ultralytics, mediapipe: mediapipe's face models come in its wheel, so nothing
#     is downloaded), then Forge's own httpx/httpcore pins again (ultralytics raises them); the test
#     then also renders a Review grid with ADetailer on.
#
# Sources (a URL or a local git directory, e.g. a mirror) and versions can be overridden:
#   FORGE_SOURCE, FORGE_COMMIT, HF_GUESS_SOURCE, ASSETS_SOURCE, ADETAILER_SOURCE, ADETAILER_COMMIT, PYTHON,
#   TORCH_REQUIREMENT
#   (e.g. TORCH_REQUIREMENT="torch==2.3.1 --index-url https://download.pytorch.org/whl/cpu").
# Re-running skips the steps already done.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
FORGE_DIR=$(realpath -m "$1")
REPO=$(cd "$(dirname "$0")/.." && pwd)

FORGE_SOURCE=${FORGE_SOURCE:-https://github.com/lllyasviel/stable-diffusion-webui-forge.git}
FORGE_COMMIT=${FORGE_COMMIT:-dfdcbab685e57677014f05a3309b48cc87383167}
HF_GUESS_SOURCE=${HF_GUESS_SOURCE:-https://github.com/lllyasviel/huggingface_guess.git}
ASSETS_SOURCE=${ASSETS_SOURCE:-https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git}
ADETAILER_SOURCE=${ADETAILER_SOURCE:-}  # https://github.com/Bing-su/adetailer.git to add it
ADETAILER_COMMIT=${ADETAILER_COMMIT:-36189cbea735b85fd01e98ac42002b8ce6f0e41d}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3.10 || command -v python3)}
TORCH_REQUIREMENT=${TORCH_REQUIREMENT:-torch==2.13.0}
SDXL_CONFIG=backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0
CHECKPOINT=models/Stable-diffusion/random-sdxl.safetensors

step() { printf '\n== %s\n' "$*"; }

checkout() {  # checkout SOURCE COMMIT DIR
  if [[ ! -d "$3/.git" ]]; then
    git clone --quiet --no-checkout "$1" "$3"
  fi
  git -C "$3" -c advice.detachedHead=false checkout --quiet "$2"
}

commit_named_by_forge() {  # the default commit hash launch_utils.py gives for an env variable
  sed -n "s/.*os.environ.get('$1', \"\([0-9a-f]\{40\}\)\").*/\1/p" "$FORGE_DIR/modules/launch_utils.py"
}

step "Forge $FORGE_COMMIT into $FORGE_DIR"
checkout "$FORGE_SOURCE" "$FORGE_COMMIT" "$FORGE_DIR"
checkout "$HF_GUESS_SOURCE" "$(commit_named_by_forge HUGGINGFACE_GUESS_HASH)" "$FORGE_DIR/repositories/huggingface_guess"
checkout "$ASSETS_SOURCE" "$(commit_named_by_forge ASSETS_COMMIT_HASH)" "$FORGE_DIR/repositories/stable-diffusion-webui-assets"

VENV=$FORGE_DIR/venv
PY=$VENV/bin/python
if [[ ! -f "$VENV/.prepared" ]]; then
  step "venv with $("$PYTHON" --version) in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$PY" -m pip install -q --upgrade "pip<25"
  # shellcheck disable=SC2086  # TORCH_REQUIREMENT may carry pip options
  "$PY" -m pip install -q $TORCH_REQUIREMENT "setuptools>=77.0.3,<81"
  {
    echo "torch==$("$PY" -W ignore -c 'import torch; print(torch.__version__)')"
    echo "setuptools>=77.0.3,<81"
  } > "$FORGE_DIR/venv-constraints.txt"
  grep -vE '^(torch|setuptools)([=<> ]|$)' "$FORGE_DIR/requirements_versions.txt" > "$FORGE_DIR/venv-requirements.txt"
  "$PY" -m pip install -q -c "$FORGE_DIR/venv-constraints.txt" -r "$FORGE_DIR/venv-requirements.txt" joblib
  if ! "$PY" -c 'import torchvision' 2>/dev/null; then
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo 'import sys, types; sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))' \
      > "$site/zz_torchvision_cpu_stub.pth"
    "$PY" -c 'import torchvision.transforms' || { echo "torchvision still fails to import" >&2; exit 1; }
  fi
  touch "$VENV/.prepared"
fi

step "the extension's requirements: install.py, as Forge runs it"
(cd "$FORGE_DIR" && "$PY" -c 'import sys; from modules import launch_utils; launch_utils.run_extension_installer(sys.argv[1])' "$REPO")

if [[ -n "$ADETAILER_SOURCE" ]]; then
  step "ADetailer $ADETAILER_COMMIT into extensions/adetailer, with its requirements"
  checkout "$ADETAILER_SOURCE" "$ADETAILER_COMMIT" "$FORGE_DIR/extensions/adetailer"
  "$PY" -m pip install -q "ultralytics>=8.3.75" "mediapipe>=0.10.13,<=0.10.15" "rich>=13.0.0"
  # shellcheck disable=SC2046  # one requirement a word
  "$PY" -m pip install -q $(grep -E '^(httpx|httpcore)==' "$FORGE_DIR/requirements_versions.txt") "h11<0.13"
fi

if [[ ! -f "$FORGE_DIR/$CHECKPOINT" ]]; then
  step "random-weight SDXL checkpoint $CHECKPOINT"
  (cd "$REPO" && "$PY" -m lora_trainer.demo.random_sdxl "$FORGE_DIR/$SDXL_CONFIG" "$FORGE_DIR/$CHECKPOINT")
fi

step "config.json: live previews off"
"$PY" - "$FORGE_DIR/config.json" <<'EOF'
import json, os, sys
path = sys.argv[1]
config = json.load(open(path)) if os.path.exists(path) else {}
config["live_previews_enable"] = False
with open(path, "w") as f:
    json.dump(config, f, indent=4)
EOF

step "done: FORGE_DIR=$FORGE_DIR .venv/bin/python -m pytest tests/forge -v"
