"""Checks on a baked texture that tests and benchmarks/texture_bake.py share: reading the atlas the
way a glTF viewer does, and finding UV triangles that overlap (exactly, not per texel)."""

from __future__ import annotations

import numpy as np


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(H, W, C) image read at (N, 2) glTF UVs with bilinear filtering, clamped at the edges:
    texel (row i, column j) has its centre at ((j + 0.5) / W, (i + 0.5) / H)."""
    height, width = image.shape[:2]
    x = np.clip(uv[:, 0] * width - 0.5, 0, width - 1)
    y = np.clip(uv[:, 1] * height - 0.5, 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), width - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), height - 2)
    wx = (x - x0)[:, None]
    wy = (y - y0)[:, None]
    image = image.astype(np.float64)
    top = image[y0, x0] * (1 - wx) + image[y0, x0 + 1] * wx
    bottom = image[y0 + 1, x0] * (1 - wx) + image[y0 + 1, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


def surface_samples(faces: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (face index, barycentric weights (3,)) pairs, uniform inside each chosen face."""
    rng = np.random.default_rng(seed)
    face = rng.integers(0, len(faces), count)
    a, b = rng.random(count), rng.random(count)
    flip = a + b > 1
    a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
    return face, np.stack((1 - a - b, a, b), axis=1)


def overlapping_pairs(triangles: np.ndarray, tolerance: float = 1e-9, min_area: float = 1e-12) -> np.ndarray:
    """(P, 2) index pairs of 2D triangles (F, 3, 2) whose interiors overlap (separating-axis test on
    the pairs whose boxes share a cell of a grid). Triangles that only touch do not count; triangles
    of (almost) no area are left out."""
    triangles = np.asarray(triangles, dtype=np.float64)
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    area = np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])) / 2
    index = np.flatnonzero(area > min_area)
    low, high = triangles[index].min(axis=1), triangles[index].max(axis=1)
    cell = max(float(np.median((high - low).max(axis=1))) * 2, 1e-9)
    first, last = np.floor(low / cell).astype(np.int64), np.floor(high / cell).astype(np.int64)
    spans = last - first + 1
    counts = spans[:, 0] * spans[:, 1]
    owner = np.repeat(np.arange(len(index)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cx = first[owner, 0] + local % spans[owner, 0]
    cy = first[owner, 1] + local // spans[owner, 0]
    keys = (cx - cx.min()) * (cy.max() - cy.min() + 1) + (cy - cy.min())
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    pairs = []
    for step in range(1, len(keys)):
        same = keys[step:] == keys[:-step]
        if not same.any():
            break
        pairs.append(np.stack((owner[:-step][same], owner[step:][same]), axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    first_tri, second_tri = triangles[index[pairs[:, 0]]], triangles[index[pairs[:, 1]]]
    separated = np.zeros(len(pairs), dtype=bool)
    for shape in (first_tri, second_tri):
        for edge in range(3):
            along = shape[:, (edge + 1) % 3] - shape[:, edge]
            axis = np.stack((-along[:, 1], along[:, 0]), axis=1)
            axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-300)
            p = np.einsum("nkd,nd->nk", first_tri, axis)
            q = np.einsum("nkd,nd->nk", second_tri, axis)
            separated |= (p.max(axis=1) <= q.min(axis=1) + tolerance) | (q.max(axis=1) <= p.min(axis=1) + tolerance)
    return index[pairs[~separated]]
