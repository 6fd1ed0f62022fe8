"""`prepare_image` on the model's device: the same crop, padding, grey composite and antialiased
resize, from the uint8 picture uploaded as it is (4 bytes a pixel instead of the float32 input's 12
at 512², and none of the CPU's float work).

Steps, all on `device` once the uint8 RGBA is there: find the rows and columns with alpha > 0 (one
host synchronisation, for the five numbers that decide the crop: it has to be known to slice, and an
empty image must be refused), crop, composite over grey in float32 with upstream's truncation to
uint8 (elementwise, one operation a kernel, so no fused multiply-add changes a rounding: the bytes
are the CPU path's), then resample the crop's difference from grey with the resize's own weight
matrices (`antialias_weights`, built on the host from the framing, dense, cropped to the crop's rows
and columns) as two matrix products, a band of 4M pixels at a time (so a 16 MP photo does not
need a gigabyte of float copies on the GPU). The products run in float32 with TF32 off (the CPU path
accumulates in float64): the input matches the CPU path's to about 1e-6 (tests/test_preprocess_torch.py).
Background removal, when needed, stays rembg's on the CPU (`_cut_out`), as upstream.

`prepare_inflated_png_tensor` starts one step earlier, from a plain RGBA PNG's inflated rows
(remote/fast_png.py): they are uploaded as stored and unfiltered on the device
(remote/png_unfilter.py), so the host only inflates.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from remote.fast_png import InflatedPng
from remote.png_unfilter import unfilter
from remote.preprocess import (
    MODEL_INPUT_SIDE,
    BackgroundRemover,
    Framing,
    _check_options,
    _cut_out,
    antialias_weights,
    frame_bounds,
    load_image,
    normalise_mode,
)
from remote.true_span import true_span

BAND_PIXELS = 1 << 22  # crop pixels composited at a time: bounds the float copies (64 MB) of a large photo
# upstream's transparent pixel (0.5 composited and truncated to uint8 127), the float32 the CPU path uses
GREY = float(np.float32(127) / np.float32(255))


def prepare_image_tensor(
    image: PIL.Image.Image,
    *,
    device: torch.device | str,
    remove_background: str = "auto",
    foreground_ratio: float = 0.85,
    remover: BackgroundRemover | None = None,
    size: int = MODEL_INPUT_SIDE,
) -> torch.Tensor:
    """`prepare_image`'s float32 (size, size, 3) model input, computed on `device` (same options)."""
    _check_options(remove_background, foreground_ratio)
    cut = _cut_out(normalise_mode(image), remove_background, remover)
    rgba = _upload(np.asarray(cut), device)
    return prepare_rgba_tensor(rgba, foreground_ratio=foreground_ratio, size=size)


@dataclass(frozen=True)
class DevicePng:
    """A plain RGBA PNG's pixels already unfiltered on the device (`unfilter_png`), with its file
    for the host's path (rembg)."""

    data: bytes
    rgba: torch.Tensor  # uint8 (height, width, 4)


def unfilter_png(png: InflatedPng, device: torch.device | str) -> DevicePng:
    """Upload a PNG's inflated rows as stored and unfilter them on `device` (remote/png_unfilter.py)."""
    return DevicePng(png.data, unfilter(_upload(png.scanlines, device), png.channels))


def prepare_inflated_png_tensor(
    png: InflatedPng | DevicePng,
    *,
    device: torch.device | str,
    remove_background: str = "auto",
    foreground_ratio: float = 0.85,
    remover: BackgroundRemover | None = None,
    size: int = MODEL_INPUT_SIDE,
) -> torch.Tensor:
    """`prepare_image_tensor` for a plain RGBA PNG's inflated rows (`load_for_device`): the rows
    are unfiltered on `device` (remote/png_unfilter.py) unless that is done already (a DevicePng),
    then cropped, composited and resized as above. A picture that needs rembg ("always", or
    "auto" with every alpha 255) is brought back to the host for it."""
    _check_options(remove_background, foreground_ratio)
    host = functools.partial(
        prepare_image_tensor,
        device=device,
        remove_background=remove_background,
        foreground_ratio=foreground_ratio,
        remover=remover,
        size=size,
    )
    if remove_background == "always":
        return host(load_image(png.data, None))
    rgba = (png if isinstance(png, DevicePng) else unfilter_png(png, device)).rgba
    lowest, bounds = alpha_extent(rgba[:, :, 3])
    if remove_background == "auto" and lowest == 255:  # opaque: not cut out yet
        return host(PIL.Image.fromarray(rgba.cpu().numpy()))
    return resize_framed_tensor(rgba, frame_bounds(bounds, foreground_ratio), size)


def _upload(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    with warnings.catch_warnings():  # Pillow's and the inflated rows' arrays are read-only; only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device, non_blocking=True)


def prepare_rgba_tensor(
    rgba: torch.Tensor, *, foreground_ratio: float = 0.85, size: int = MODEL_INPUT_SIDE
) -> torch.Tensor:
    """uint8 (H, W, 4) cut-out on any device -> float32 (size, size, 3) model input on that device."""
    if rgba.dtype != torch.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected uint8 (H, W, 4), got {rgba.dtype} {tuple(rgba.shape)}")
    framing = frame_bounds(alpha_bounds(rgba[:, :, 3]), foreground_ratio)
    return resize_framed_tensor(rgba, framing, size)


def alpha_bounds(alpha: torch.Tensor) -> tuple[int, int, int, int] | None:
    """First and last rows and columns with alpha > 0 (top, bottom, left, right), or None: one sync."""
    return alpha_extent(alpha)[1]


def alpha_extent(alpha: torch.Tensor) -> tuple[int, tuple[int, int, int, int] | None]:
    """The lowest alpha and `alpha_bounds`, read back together: one sync."""
    mask = alpha > 0
    rows, cols = mask.any(dim=1), mask.any(dim=0)
    numbers = torch.stack([alpha.min().long(), rows.any().long(), *true_span(rows), *true_span(cols)]).tolist()
    if not numbers[1]:
        return numbers[0], None
    return numbers[0], (numbers[2], numbers[3], numbers[4], numbers[5])


@functools.lru_cache(maxsize=64)
def _weights(side: int, size: int, start: int, length: int) -> np.ndarray:
    """Rows start..start+length of the (size, side) resize matrix, dense float32 (size, length)."""
    matrix = antialias_weights(side, size)[:, start : start + length]
    return np.asarray(matrix.todense(), dtype=np.float32)


def resize_framed_tensor(rgba: torch.Tensor, framing: Framing, size: int) -> torch.Tensor:
    """`resize_framed` on rgba's device: float32 (size, size, 3)."""
    device = rgba.device
    height = framing.bottom_row - framing.top_row
    width = framing.right_col - framing.left_col
    rows = torch.from_numpy(_weights(framing.side, size, framing.top, height)).to(device, non_blocking=True)
    cols = torch.from_numpy(_weights(framing.side, size, framing.left, width)).to(device, non_blocking=True)
    partial = torch.empty((3, height, size), dtype=torch.float32, device=device)  # crop rows resampled along x
    band = max(1, BAND_PIXELS // width)
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would move the input by ~1e-3
    # A divisor on the device: PyTorch's CUDA kernel turns division by a Python number into a
    # multiplication by its reciprocal, which rounds differently from numpy's division and flips
    # some truncated bytes by one.
    byte_scale = torch.tensor(255.0, dtype=torch.float32, device=device)
    try:
        for start in range(0, height, band):
            stop = min(start + band, height)
            crop = rgba[framing.top_row + start : framing.top_row + stop, framing.left_col : framing.right_col]
            # Upstream's composite, operation by operation as numpy does it in float32, then truncated.
            values = crop.to(torch.float32) / byte_scale
            alpha = values[:, :, 3:4]
            composite = values[:, :, :3] * alpha + (1 - alpha) * 0.5
            grey_bytes = (composite * 255.0).to(torch.uint8)
            offset = grey_bytes.to(torch.float32) / byte_scale - GREY  # (band, w, 3)
            torch.matmul(offset.permute(2, 0, 1), cols.T, out=partial[:, start:stop])
        resized = rows @ partial  # (3, size, size)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    # Every row of the weights sums to 1 (up to rounding): the grey base is grey.
    return (resized + GREY).permute(1, 2, 0).contiguous()
