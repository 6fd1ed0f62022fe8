"""A tiny ONNX stand-in for u2net, so tests run rembg's real custom-session path offline.

It has u2net's interface as rembg 2.0.69 feeds it (sessions/base.py `normalize`, sessions/
u2net_custom.py `predict`): one float input (1, 3, 320, 320), the picture resized to 320x320,
divided by its own maximum, then ImageNet-normalised; rembg reads channel 0 of the first output,
min-max normalises it and scales it back to the picture's size as the mask.

The mask it computes is real and simple: how far each pixel's colour is from the background colour,
taken as the mean of the top and bottom two rows. So a coloured object on a plain background (white,
grey, anything uniform) is cut out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 320
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
GAIN = 6.0  # a colour difference of 1/6 (about 40 of 255) already counts as fully foreground


def build_tiny_u2net(path: Path) -> Path:
    """Write the model to `path` (parents created) and return `path`.

    mask = clip(GAIN * max over channels |rgb - background|, 0, 1), shape (1, 1, 320, 320).
    """
    path = Path(path)

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    def ints(*values: int) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    nodes = [
        # Undo rembg's normalisation: back to colours in 0..1.
        helper.make_node("Mul", ["input.1", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["rgb"]),
        # Background colour: mean of the top two and bottom two rows.
        helper.make_node("Slice", ["rgb", "top_start", "top_end", "height_axis"], ["top_rows"]),
        helper.make_node("Slice", ["rgb", "bottom_start", "bottom_end", "height_axis"], ["bottom_rows"]),
        helper.make_node("Concat", ["top_rows", "bottom_rows"], ["border"], axis=2),
        helper.make_node("ReduceMean", ["border", "spatial_axes"], ["background"], keepdims=1),
        # Distance from it: the largest per-channel difference, scaled and clipped to 0..1.
        helper.make_node("Sub", ["rgb", "background"], ["difference"]),
        helper.make_node("Abs", ["difference"], ["magnitude"]),
        helper.make_node("ReduceMax", ["magnitude", "channel_axis"], ["distance"], keepdims=1),
        helper.make_node("Mul", ["distance", "gain"], ["boosted"]),
        helper.make_node("Clip", ["boosted", "zero", "one"], ["mask"]),
    ]
    initializers = [
        const("std", STD),
        const("mean", MEAN),
        const("top_start", ints(0)),
        const("top_end", ints(2)),
        const("bottom_start", ints(SIZE - 2)),
        const("bottom_end", ints(SIZE)),
        const("height_axis", ints(2)),
        const("spatial_axes", ints(2, 3)),
        const("channel_axis", ints(1)),
        const("gain", np.array(GAIN, dtype=np.float32)),
        const("zero", np.array(0.0, dtype=np.float32)),
        const("one", np.array(1.0, dtype=np.float32)),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by every onnxruntime the project pins
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
