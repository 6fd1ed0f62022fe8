"""Upstream TripoSR's preprocessing written out step by step, as its run.py and ImagePreprocessor do
it (shared/docs/triposr-facts.md), for an image that already has its alpha: the reference that
`remote.preprocess.prepare_image` must reproduce. It builds the whole padded square, as upstream
does, so it is only for tests and for making the stored fixtures."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from image_to_3d_dev.paths import FIXTURES


def upstream_square(rgba: np.ndarray, ratio: float) -> np.ndarray:
    """Crop to alpha > 0 (end exclusive), pad to a square, pad to int(side / ratio), composite
    on grey 0.5 and truncate to uint8: upstream's PIL image, as an (S, S, 3) uint8 array."""
    ys, xs = np.where(rgba[..., 3] > 0)
    y1, y2, x1, x2 = ys.min(), ys.max(), xs.min(), xs.max()
    fg = rgba[y1:y2, x1:x2]
    size = max(fg.shape[0], fg.shape[1])
    ph0, pw0 = (size - fg.shape[0]) // 2, (size - fg.shape[1]) // 2
    padded = np.pad(fg, ((ph0, size - fg.shape[0] - ph0), (pw0, size - fg.shape[1] - pw0), (0, 0)))
    new_size = int(padded.shape[0] / ratio)
    p0 = (new_size - size) // 2
    padded = np.pad(padded, ((p0, new_size - size - p0), (p0, new_size - size - p0), (0, 0)))
    values = padded.astype(np.float32) / 255.0
    composite = values[:, :, :3] * values[:, :, 3:4] + (1 - values[:, :, 3:4]) * 0.5
    return (composite * 255.0).astype(np.uint8)


def upstream_model_input(rgba: np.ndarray, ratio: float, size: int = 512) -> np.ndarray:
    """The float32 (size, size, 3) picture upstream's model encodes: uint8 / 255, resized with
    bilinear interpolation, antialias on, align_corners off."""
    square = torch.from_numpy(upstream_square(rgba, ratio).astype(np.float32) / 255.0)
    resized = F.interpolate(
        square.permute(2, 0, 1)[None], (size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].permute(1, 2, 0).numpy()


def load_rgba(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGBA"))


# The stored cut-outs and the input upstream's preprocessing gives for each (make_fixtures.py).
STORED = FIXTURES / "upstream_preprocess"
STORED_CASES = ["chair_1537x1201", "robot_333x777", "hamburger_soft_2049x1031", "chair_97x131"]


def stored_expected() -> dict[str, np.ndarray]:
    """The stored model inputs and foreground ratios, by case name (`<name>` and `<name>_ratio`)."""
    with np.load(STORED / "expected.npz") as stored:
        return {key: stored[key] for key in stored.files}
