"""Build tests/assets/tiny_segmenter.onnx: a U2-Net-shaped stand-in for rembg's "u2net_custom" session.

Input `input.1` [1, 3, 320, 320] (ImageNet-normalised RGB, as rembg feeds U2-Net); output [1, 1, 320, 320].
It calls "foreground" whatever is red: sigmoid(4 * (R - (G + B) / 2)), a 1x1 convolution. That is enough
to test sessions, masks, subject boxes and background replacement without a real 170 MB model.

The `onnx` package does not install beside Forge's protobuf 3.20.0, so run this in a throwaway venv:
    python3 -m venv /tmp/onnx-venv && /tmp/onnx-venv/bin/pip install onnx numpy
    /tmp/onnx-venv/bin/python tests/assets/make_tiny_segmenter.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).with_name("tiny_segmenter.onnx")


def build() -> onnx.ModelProto:
    weight = np.array([4.0, -2.0, -2.0], dtype=np.float32).reshape(1, 3, 1, 1)
    bias = np.zeros(1, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w", "b"], ["logits"], kernel_shape=[1, 1]),
         helper.make_node("Sigmoid", ["logits"], ["mask"])],
        "tiny_segmenter",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="lora_trainer tests")
    model.ir_version = 8  # loadable by older onnxruntime builds too
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    OUT.write_bytes(build().SerializeToString())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
