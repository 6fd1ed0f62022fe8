"""A tiny ONNX stand-in for u2net, so tests run rembg's real custom-session path offline.

It has u2net's interface as rembg feeds it (input (1, 3, 320, 320), ImageNet-normalised; rembg reads
output 0's first channel and min-max normalises it) and computes a real, simple mask: how far each
pixel is from white, so a coloured object on a white background is cut out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


def build_tiny_u2net(path: Path) -> Path:
    """Write the model to `path` and return it: mask = clip(8 * (1 - min over channels of rgb)) ."""
    nodes = [
        helper.make_node("Mul", ["input.1", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["rgb"]),  # back to 0..1 colours
        helper.make_node("ReduceMin", ["rgb", "axes"], ["darkest"], keepdims=1),
        helper.make_node("Sub", ["one", "darkest"], ["distance"]),  # 0 on white, up to 1 on colour
        helper.make_node("Mul", ["distance", "gain"], ["boosted"]),
        helper.make_node("Clip", ["boosted", "zero", "one"], ["mask"]),
    ]
    initializers = [
        numpy_helper.from_array(STD, "std"),
        numpy_helper.from_array(MEAN, "mean"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(8.0, dtype=np.float32), "gain"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
