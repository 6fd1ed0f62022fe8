"""Charts -> one square atlas: each chart's box on shelves, scaled as large as the atlas allows.

Shelf packing (boxes sorted by height, laid left to right in rows) is simple and takes
milliseconds for thousands of charts; the scale is found by bisection so that everything fits in
exactly one `size` x `size` atlas with `padding` texels of gutter around every chart. Charts taller
than wide are turned a quarter (a rotation, so faces stay counter-clockwise) to keep shelves low.
"""

from __future__ import annotations

import numpy as np

from remote.texture.unwrap import Charts

BISECTION_STEPS = 30
PADDING = 2  # texels of gutter on every side of a chart: bilinear reads and the first mip levels
NARROW_PADDING = 1  # for meshes of very many small charts, whose gutters would take the atlas
GUTTER_SHARE = 0.25  # the most of the atlas that the smallest possible boxes may take at PADDING


class AtlasTooSmallError(ValueError):
    """The charts do not fit the atlas even at the smallest scale."""


def chart_of_uv_vertices(charts: Charts) -> np.ndarray:
    """The chart of each UV vertex (all faces around a UV vertex lie in its chart)."""
    chart = np.empty(len(charts.uv), dtype=np.int64)
    chart[charts.faces.reshape(-1)] = np.repeat(charts.face_chart, 3)
    return chart


def choose_padding(count: int, size: int) -> int:
    """PADDING, or NARROW_PADDING where `count` charts' gutters alone would fill much of the atlas
    (a froth of small pieces, as random weights give)."""
    return PADDING if count * (2 * PADDING + 1) ** 2 <= GUTTER_SHARE * size * size else NARROW_PADDING


def pack(charts: Charts, size: int, padding: int | None = None) -> np.ndarray:
    """(U, 2) float32 UVs in 0..1 (v down, as glTF reads images) for the charts in one atlas."""
    if padding is None:
        padding = choose_padding(charts.count, size)
    chart = chart_of_uv_vertices(charts)
    uv = charts.uv.copy()
    low, high = _bounds(uv, chart, charts.count)
    extent = high - low
    turn = extent[:, 1] > extent[:, 0]
    turned = turn[chart]
    uv[turned] = np.stack((-uv[turned, 1], uv[turned, 0]), axis=1)  # a quarter turn counter-clockwise
    low, high = _bounds(uv, chart, charts.count)
    extent = high - low

    order = np.lexsort((-extent[:, 0], -extent[:, 1]))  # tallest first, then widest
    scale = _largest_scale(extent[order], size, padding)
    boxes = np.ceil(extent[order] * scale).astype(np.int64) + 2 * padding
    corners = _shelves(boxes[:, 0], boxes[:, 1], size)
    assert corners is not None  # _largest_scale checked that this scale fits
    origin = np.empty((charts.count, 2), dtype=np.float64)
    origin[order] = corners + padding
    texels = (uv - low[chart]) * scale + origin[chart]
    return (texels / size).astype(np.float32)


def _bounds(uv: np.ndarray, chart: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    low = np.full((count, 2), np.inf)
    high = np.full((count, 2), -np.inf)
    np.minimum.at(low, chart, uv)
    np.maximum.at(high, chart, uv)
    return low, high


def _largest_scale(extent: np.ndarray, size: int, padding: int) -> float:
    """Bisection for the largest texels-per-unit at which the padded boxes fit on shelves."""

    def fits(scale: float) -> bool:
        boxes = np.ceil(extent * scale).astype(np.int64) + 2 * padding
        return _shelves(boxes[:, 0], boxes[:, 1], size) is not None

    if not fits(0.0):
        raise AtlasTooSmallError(
            f"{len(extent)} charts do not fit a {size}x{size} texture; use a larger texture size "
            "or fewer faces (target_faces)."
        )
    area = float((extent[:, 0] * extent[:, 1]).sum())
    low, high = 0.0, size / max(float(np.sqrt(area)), float(extent.max()), 1e-12)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _shelves(widths: np.ndarray, heights: np.ndarray, size: int) -> np.ndarray | None:
    """Lower-left corners of boxes (sorted tallest first) laid in rows of `size`; None if they overflow."""
    count = len(widths)
    corners = np.empty((count, 2), dtype=np.int64)
    start, top = 0, 0
    while start < count:
        if top + heights[start] > size:
            return None
        ends = np.cumsum(widths[start : start + size])  # every box is at least one texel wide
        fitting = int(np.searchsorted(ends, size, side="right"))
        if fitting == 0:
            return None
        corners[start : start + fitting, 0] = ends[:fitting] - widths[start : start + fitting]
        corners[start : start + fitting, 1] = top
        top += int(heights[start])
        start += fitting
    return corners
