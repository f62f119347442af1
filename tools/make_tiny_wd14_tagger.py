"""Build the tiny WD14-shaped tagger used by the tests and the built-in demo.

It has the interface of SmilingWolf's taggers (`model.onnx` + `selected_tags.csv`): one NHWC float32
input of BGR pixels 0-255 and one output of per-tag probabilities, tag categories 9 (rating),
0 (general) and 4 (character). Its scores are predictable from the image's mean colour:

    logit[tag] = w_r * R + w_g * G + w_b * B + bias     (R, G, B = channel means / 255, in 0..1)
    score[tag] = sigmoid(logit[tag])

so a pure red image gets "red shirt" and the character "demo girl (tiny)", a green one "green hair" and
the kaomoji "^_^", and a model fed RGB instead of BGR gives visibly wrong tags. The weights are in
`TAGS` below (nothing random); tests/captions/ asserts the tags they give for known images.

The `onnx` package does not install beside Forge's protobuf 3.20.0, so this runs in a throwaway venv:

    python3 -m venv /tmp/onnx-venv && /tmp/onnx-venv/bin/pip install onnx numpy
    /tmp/onnx-venv/bin/python tools/make_tiny_wd14_tagger.py

It writes lora_trainer/demo/assets/tiny-wd14-tagger/{model.onnx,selected_tags.csv} (dynamic batch),
tests/assets/captions/tiny-wd14-fixed-batch.onnx (the same model with its batch dimension fixed at 1,
as some exported taggers have), and benchmarks/assets/bench-wd14-tagger/ (same interface and tags at the
real 448 px input, with three seeded random convolutions so that a call costs real work: for
benchmarks/bench_tagging.py; its scores mean nothing).
"""

from __future__ import annotations

import csv
from pathlib import Path

SIZE = 32  # the input side; real taggers use 448

# (name, category, (w_r, w_g, w_b), bias)
TAGS = [
    ("general", 9, (0, 0, 0), 2.0),
    ("sensitive", 9, (0, 0, 0), -2.0),
    ("questionable", 9, (0, 0, 0), -4.0),
    ("explicit", 9, (0, 0, 0), -6.0),
    ("1girl", 0, (0, 0, 0), 4.0),
    ("solo", 0, (0, 0, 0), 3.0),
    ("simple_background", 0, (0, 0, 0), 1.0),
    ("white_background", 0, (6, 6, 6), -15.0),
    ("red_shirt", 0, (10, 0, 0), -5.0),
    ("green_hair", 0, (0, 10, 0), -5.0),
    ("blue_eyes", 0, (0, 0, 10), -5.0),
    ("looking_at_viewer", 0, (0, 0, 0), -0.2),
    ("upper_body", 0, (0, 0, 0), -1.0),
    ("^_^", 0, (0, 10, 0), -5.0),
    ("short_hair", 0, (0, 0, 0), 0.5),
    ("demo_girl_(tiny)", 4, (10, 0, 0), -5.0),
    ("aqua_girl_(tiny)", 4, (0, 10, 10), -15.0),
]


def build(batch: int | str, path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # The model sees BGR: row 0 of the weight matrix is blue, row 2 is red.
    weights = np.array([[w[2], w[1], w[0]] for _, _, w, _ in TAGS], dtype=np.float32).T  # (3, T)
    bias = np.array([b for *_, b in TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Mul", ["mean", "scale"], ["unit"]),
            helper.make_node("MatMul", ["unit", "weights"], ["logits0"]),
            helper.make_node("Add", ["logits0", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ],
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, len(TAGS)])],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lora_trainer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_bench(path: Path, size: int = 448) -> None:
    """NHWC input -> NCHW -> conv 3->16 /4 -> conv 16->32 /2 -> conv 32->64 /2 -> mean -> tags."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    convs = [(3, 16, 4, 4, 0), (16, 32, 3, 2, 1), (32, 64, 3, 2, 1)]  # in, out, kernel, stride, pad
    nodes = [helper.make_node("Transpose", ["input"], ["x0"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["x0", "scale"], ["c0"])]
    inits = [numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale")]
    for i, (cin, cout, k, stride, pad) in enumerate(convs):
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [f"c{i}", f"w{i}"], [f"r{i}"], kernel_shape=[k, k],
                                   strides=[stride, stride], pads=[pad] * 4),
                  helper.make_node("Relu", [f"r{i}"], [f"c{i + 1}"])]
    head = (rng.standard_normal((64, len(TAGS))) / 8).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head"))
    n = len(convs)
    nodes += [helper.make_node("ReduceMean", [f"c{n}"], ["pooled"], axes=[2, 3], keepdims=0),
              helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
              helper.make_node("Sigmoid", ["logits"], ["output"])]
    graph = helper.make_graph(
        nodes, "bench_wd14_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(TAGS)])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lora_trainer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_tags(path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, _, _) in enumerate(TAGS):
            writer.writerow([100000 + i, name, category, 1000 - i])


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    folder = root / "lora_trainer" / "demo" / "assets" / "tiny-wd14-tagger"
    build("batch", folder / "model.onnx")
    write_tags(folder / "selected_tags.csv")
    build(1, root / "tests" / "assets" / "captions" / "tiny-wd14-fixed-batch.onnx")
    bench = root / "benchmarks" / "assets" / "bench-wd14-tagger"
    build_bench(bench / "model.onnx")
    write_tags(bench / "selected_tags.csv")
    print(f"wrote {folder}, tests/assets/captions/tiny-wd14-fixed-batch.onnx and {bench}")


if __name__ == "__main__":
    main()
