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
SCALE_TOLERANCE = 1e-4  # the bisection stops once the scale is known to this share (1/10 texel per 1024)
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
    by_chart = np.argsort(chart, kind="stable")  # already sorted for box_charts' UV vertices: linear
    uv = charts.uv.copy()
    low, high = _bounds(uv, chart, charts.count, by_chart)
    extent = high - low
    turn = extent[:, 1] > extent[:, 0]
    turned = turn[chart]
    uv[turned] = np.stack((-uv[turned, 1], uv[turned, 0]), axis=1)  # a quarter turn counter-clockwise
    low, high = _bounds(uv, chart, charts.count, by_chart)
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


def _bounds(uv: np.ndarray, chart: np.ndarray, count: int, by_chart: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each chart's UV box, by reductions over the vertices sorted by chart (`by_chart`): numpy's
    ufunc.at is many times slower with thousands of charts."""
    ordered = chart[by_chart]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    if len(starts) != count:  # a chart without vertices (never from box_charts): the slow, general way
        low, high = np.full((count, 2), np.inf), np.full((count, 2), -np.inf)
        np.minimum.at(low, chart, uv)
        np.maximum.at(high, chart, uv)
        return low, high
    points = uv[by_chart]
    return np.minimum.reduceat(points, starts, axis=0), np.maximum.reduceat(points, starts, axis=0)


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
        if high - low <= SCALE_TOLERANCE * low:  # boxes are whole texels: closer changes nothing visible
            break
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _shelves(widths: np.ndarray, heights: np.ndarray, size: int) -> np.ndarray | None:
    """Lower-left corners of boxes (sorted tallest first) laid in rows of `size`; None if they overflow."""
    count = len(widths)
    corners = np.empty((count, 2), dtype=np.int64)
    ends = np.cumsum(widths)  # one running sum; each shelf is a search in it
    start, top = 0, 0
    while start < count:
        if top + heights[start] > size:
            return None
        before = ends[start] - widths[start]
        stop = int(np.searchsorted(ends, before + size, side="right"))  # the boxes that end within the row
        if stop == start:
            return None
        corners[start:stop, 0] = ends[start:stop] - widths[start:stop] - before
        corners[start:stop, 1] = top
        top += int(heights[start])
        start = stop
    return corners
