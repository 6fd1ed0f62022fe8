"""A PNG's filtered scanlines turned into pixels on the GPU, by one Triton kernel.

Why: decoding a plain 8-bit RGBA PNG is two steps, inflating the compressed stream and undoing
each row's filter. libpng inflates with stock zlib, which takes most of its time; libdeflate
inflates the same stream several times faster on the host, and the rows are then unfiltered here,
on the device the preprocessing runs on, from the inflated bytes uploaded as they are (the figures:
docs/performance.md, "PNG rows unfiltered on the GPU").

PNG filters (ISO/IEC 15948, section 9): every row starts with a filter type, and each byte is
stored as its difference from a prediction made of the byte to its left (one pixel back), the byte
above and the byte above-left: none, left ("Sub"), above ("Up"), their average, or the Paeth
predictor. A byte depends on its left and upper neighbours, so rows cannot be undone one by one
in parallel; the kernel runs a wavefront instead: one lane per row, lane r working on column
`step - r`, so each row is one pixel behind the row above it. A lane keeps its last pixel in
registers (its left neighbour) and takes the row above's from the lane before it (`tl.gather`).
Rows come in blocks of ROWS lanes in one program; a block's first row reads the row above from the
output, written by the block before it.

The kernel is checked once per pipeline against `filter_rows` (`agrees`), on every filter type
and across a block boundary; the pipeline falls back to libpng when it does not agree.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from remote import environment
from remote.fast_png import FILTER_TYPES

try:
    import triton  # type: ignore[import-untyped]  # Triton ships no type information (no py.typed)
    import triton.language as tl  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton; others may not
    triton = None

logger = logging.getLogger(__name__)

ROWS = 256  # lanes of the program: rows unfiltered side by side (docs/performance.md says why 256)
NUM_WARPS = 4


def available() -> bool:
    return triton is not None


def runs_on(device: torch.device) -> bool:
    """Whether the kernel can run for tensors on `device`: CUDA, or the CPU under Triton's interpreter."""
    return available() and (device.type == "cuda" or environment.is_on(environment.TRITON_INTERPRET))


def unfilter(scanlines: torch.Tensor, channels: int, rows: int = ROWS) -> torch.Tensor:
    """(height, 1 + width * channels) uint8 filtered scanlines on the device -> (height, width, channels)
    uint8 pixels there. The filter types must be checked first (all below FILTER_TYPES)."""
    if scanlines.dtype != torch.uint8 or scanlines.ndim != 2 or (scanlines.shape[1] - 1) % channels:
        raise ValueError(f"expected uint8 (height, 1 + width * {channels}) scanlines, got {tuple(scanlines.shape)}")
    height, width = scanlines.shape[0], (scanlines.shape[1] - 1) // channels
    out = torch.empty((height, width, channels), dtype=torch.uint8, device=scanlines.device)
    if height and width:
        _unfilter_kernel[(1,)](
            scanlines.contiguous(), out, height, width, scanlines.shape[1],
            CHANNELS=channels, ROWS=rows, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out


def filter_rows(pixels: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """The PNG encoder's side: (height, width, channels) uint8 pixels and a filter type per row ->
    the filtered scanlines, (height, 1 + width * channels) uint8. For the self-check and the tests."""
    height, width, channels = pixels.shape
    values = pixels.reshape(height, width * channels).astype(np.int32)
    above = np.vstack([np.zeros((1, width * channels), np.int32), values[:-1]])
    left = np.hstack([np.zeros((height, channels), np.int32), values[:, :-channels]])
    upper_left = np.hstack([np.zeros((height, channels), np.int32), above[:, :-channels]])
    guesses = np.stack([np.zeros_like(values), left, above, (left + above) >> 1, _paeth(left, above, upper_left)])
    predicted = guesses[np.asarray(kinds), np.arange(height)]
    scanlines = np.empty((height, 1 + width * channels), np.uint8)
    scanlines[:, 0] = kinds
    scanlines[:, 1:] = (values - predicted) & 255
    return scanlines


def _paeth(left: np.ndarray, above: np.ndarray, upper_left: np.ndarray) -> np.ndarray:
    """The Paeth predictor: whichever neighbour is closest to left + above - upper_left (ties: left, above)."""
    to_left, to_above, to_upper_left = (
        np.abs(above - upper_left),
        np.abs(left - upper_left),
        np.abs(left + above - 2 * upper_left),
    )
    return np.where(
        (to_left <= to_above) & (to_left <= to_upper_left),
        left,
        np.where(to_above <= to_upper_left, above, upper_left),
    )


def agrees(device: torch.device) -> bool:
    """Run the kernel once on noisy pixels filtered with every type, taller than one block, and
    say whether it gives the pixels back; a kernel that fails or differs is logged, not raised."""
    generator = np.random.default_rng(0)
    pixels = generator.integers(0, 256, (ROWS + 7, 9, 4), dtype=np.uint8)
    pixels[::3] //= 5  # some smooth rows, where the predictors' ties happen
    kinds = np.arange(len(pixels)) % FILTER_TYPES
    try:
        scanlines = torch.from_numpy(filter_rows(pixels, kinds)).to(device)
        same = np.array_equal(unfilter(scanlines, 4).cpu().numpy(), pixels)
    except Exception as error:  # a compiler or driver that cannot run it: libpng decodes instead
        logger.warning("PNG rows are unfiltered by libpng: the Triton kernel failed its check (%s)", error)
        return False
    if not same:
        logger.warning("PNG rows are unfiltered by libpng: the Triton kernel's pixels differ on its check")
    return same


if triton is not None:

    @triton.jit
    def _predict(kind, raw, left, up, upper_left):
        """The byte from its stored difference and its row's filter type (0-4)."""
        up_minus = up - upper_left
        left_minus = left - upper_left
        to_left = tl.abs(up_minus)
        to_above = tl.abs(left_minus)
        to_upper_left = tl.abs(up_minus + left_minus)
        paeth = tl.where(
            (to_left <= to_above) & (to_left <= to_upper_left),
            left,
            tl.where(to_above <= to_upper_left, up, upper_left),
        )
        guess = tl.where(kind == 1, left, tl.where(kind == 2, up, tl.where(kind == 3, (left + up) >> 1, paeth)))
        return (raw + tl.where(kind == 0, 0, guess)) & 255

    @triton.jit
    def _unfilter_kernel(
        scanlines, out, height, width, row_bytes, CHANNELS: tl.constexpr, ROWS: tl.constexpr
    ):  # fmt: skip
        lanes = tl.arange(0, ROWS)
        pixel_bytes = tl.arange(0, 4)  # four byte slots a pixel; the fourth is unused for RGB
        byte_ok = (pixel_bytes < CHANNELS)[None, :]
        lane_before = tl.broadcast_to(tl.maximum(lanes - 1, 0)[:, None], (ROWS, 4))
        first_lane = (lanes == 0)[:, None]
        for first in range(0, height, ROWS):
            rows = (first + lanes).to(tl.int64)
            row_ok = rows < height
            kind = tl.load(scanlines + rows * row_bytes, mask=row_ok, other=0).to(tl.int32)[:, None]
            source = scanlines + (rows * row_bytes + 1)[:, None] + pixel_bytes[None, :]
            target = out + (rows * width * CHANNELS)[:, None] + pixel_bytes[None, :]
            row_above = rows - lanes - 1  # the row before the block, for its first lane
            above = out + (row_above * width * CHANNELS)[:, None] + pixel_bytes[None, :]
            from_above = first_lane & byte_ok & (first > 0)
            column = -lanes
            inside = (row_ok & (column >= 0) & (column < width))[:, None] & byte_ok
            raw = tl.load(source + (column * CHANNELS)[:, None], mask=inside, other=0).to(tl.int32)
            above_next = tl.load(above + (column * CHANNELS)[:, None], mask=from_above & inside, other=0).to(tl.int32)
            left = tl.zeros((ROWS, 4), tl.int32)  # this lane's last pixel: the left neighbour
            up = tl.zeros((ROWS, 4), tl.int32)  # the row above at this lane's last column
            steps = tl.minimum(height - first, ROWS) + width - 1
            for step in range(0, steps):
                # Next step's loads first, so their latency overlaps this step's work.
                column_next = step + 1 - lanes
                inside_next = (row_ok & (column_next >= 0) & (column_next < width))[:, None] & byte_ok
                raw_next = tl.load(source + (column_next * CHANNELS)[:, None], mask=inside_next, other=0)
                above_after = tl.load(above + (column_next * CHANNELS)[:, None], mask=from_above & inside_next, other=0)

                column = step - lanes
                started = (column > 0)[:, None]
                upper_left = tl.where(started, up, 0)  # the row above one column back: last step's `up`
                up = tl.where(first_lane, above_next, tl.gather(left, lane_before, axis=0))
                value = _predict(kind, raw, tl.where(started, left, 0), up, upper_left)
                tl.store(target + (column * CHANNELS)[:, None], value.to(tl.uint8), mask=inside)

                left = value
                raw = raw_next.to(tl.int32)
                above_next = above_after.to(tl.int32)
                inside = inside_next
            tl.debug_barrier()  # the block's last row is in `out` before the next block's first lane reads it
