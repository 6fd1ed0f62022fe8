"""UV triangles -> for each texel of the atlas, the face it shows and where on that face (plain torch).

No OpenGL: each face enumerates the texel centres in its UV bounding box, grown by `margin`, and
keeps those within `margin` texels of its edge lines (a little further just beyond a sharp corner);
a texel claimed by several faces goes to the one its centre lies deepest inside (then the highest
face index). So texels just outside a chart's edge still get the nearest surface point (barycentric
weights clamped onto the face), which is what bilinear filtering reads there. Depths are computed
in each face's own small frame (float32), weights in float64, each step a separate elementwise op,
so the CPU and a GPU give the same faces and the same points.

Texel (row i, column j) has its centre at UV ((j + 0.5) / size, (i + 0.5) / size): row 0 is the
image's top row, where glTF puts v = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MARGIN = 1.0  # texels: centres this close outside a face still take its colour
FACE_BITS = 25  # face index in the low bits of the per-texel key
SCORE_STEPS = 4096  # per texel of depth, in the key's high bits
CANDIDATE_CHUNK = 1 << 21  # (face, texel) pairs handled at once: about 250 MB of temporaries


@dataclass
class Raster:
    """The texels that show a face: their flat index (row * size + column), face and weights."""

    texels: torch.Tensor  # int64 (T,)
    faces: torch.Tensor  # int64 (T,)
    weights: torch.Tensor  # float64 (T, 3): barycentric, >= 0, summing to 1
    inside: torch.Tensor  # bool (T,): the centre lies on the face, not in the margin around it


def rasterise(uv: torch.Tensor, faces: torch.Tensor, size: int, margin: float = MARGIN) -> Raster:
    """UVs (U, 2) in 0..1 and faces (F, 3), counter-clockwise in (u, v) -> the atlas's Raster."""
    face_count = len(faces)
    if face_count >= 1 << FACE_BITS:
        raise ValueError(f"the rasteriser takes at most {(1 << FACE_BITS) - 1} faces (got {face_count})")
    device = uv.device
    corners = (uv.double() * size - 0.5)[faces.long()]  # (F, 3, 2) in texel-centre coordinates
    low = (corners.amin(dim=1) - margin).floor().clamp(0, size - 1).long()
    high = (corners.amax(dim=1) + margin).floor().clamp(0, size - 1).long()
    span = (high - low + 1).clamp_min(0)
    counts = span[:, 0] * span[:, 1]
    counts = torch.where(_twice_area(corners) > 0, counts, 0)  # faces of no area show nothing
    lines = _edge_lines(corners - low[:, None, :].double())

    best = torch.full((size * size,), -1, dtype=torch.int64, device=device)
    for first, last in _chunks(counts):
        face, texel, depth = _candidates(lines, low, span, counts, first, last, size)
        keep = depth >= -margin
        face, texel, depth = face[keep], texel[keep], depth[keep]
        score = ((depth + margin) * SCORE_STEPS).floor().long()
        best.scatter_reduce_(0, texel, (score << FACE_BITS) | face, reduce="amax")

    texels = (best >= 0).nonzero().squeeze(1)
    winners = best[texels] & ((1 << FACE_BITS) - 1)
    rows, columns = texels // size, texels % size
    centre = torch.stack((columns, rows), dim=1).double()
    edges = _edge_functions(corners[winners], centre)
    weights = edges.roll(-1, dims=1).clamp_min(0)  # the weight of corner k is the edge facing it
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-300)
    inside = (edges >= 0).all(dim=1)
    return Raster(texels=texels, faces=winners, weights=weights, inside=inside)


def _twice_area(corners: torch.Tensor) -> torch.Tensor:
    a, b, c = corners.unbind(1)
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _edge_functions(corners: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, 3): for edge k (corner k to k+1), twice the signed area of (corner k, corner k+1, point)."""
    start = corners
    end = corners.roll(-1, dims=1)
    along = end - start
    to_point = points[:, None, :] - start
    return along[..., 0] * to_point[..., 1] - along[..., 1] * to_point[..., 0]


def _edge_lines(corners: torch.Tensor) -> torch.Tensor:
    """(F, 3, 3) float32: per edge (a, b, c) with a x + b y + c = signed distance to the edge's line,
    positive inside, for points in the face's own frame (its box's lowest texel at 0, 0), where
    every number is small and float32 is exact enough."""
    along = corners.roll(-1, dims=1) - corners
    length = (along[..., 0] * along[..., 0] + along[..., 1] * along[..., 1]).sqrt().clamp_min(1e-300)
    a = -along[..., 1] / length
    b = along[..., 0] / length
    c = -(a * corners[..., 0] + b * corners[..., 1])
    return torch.stack((a, b, c), dim=2).float()


def _candidates(
    lines: torch.Tensor, low: torch.Tensor, span: torch.Tensor, counts: torch.Tensor, first: int, last: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Faces first..last-1's (face, flat texel, depth in texels) for every texel centre in their boxes.

    Depth is the distance from the centre to the nearest edge line, positive inside the face."""
    device = lines.device
    chunk_counts = counts[first:last]
    face = torch.repeat_interleave(torch.arange(first, last, device=device), chunk_counts)
    starts = torch.cumsum(chunk_counts, 0) - chunk_counts
    local = torch.arange(len(face), device=device) - starts.repeat_interleave(chunk_counts)
    width = span[face, 0]
    x = local % width
    y = local // width
    fx, fy = x.float(), y.float()
    face_lines = lines[face]
    depth = None
    for edge in range(3):
        a, b, c = face_lines[:, edge].unbind(1)
        distance = a * fx
        distance = distance + b * fy
        distance = distance + c
        depth = distance if depth is None else torch.minimum(depth, distance)
    assert depth is not None
    texel = (low[face, 1] + y) * size + low[face, 0] + x
    return face, texel, depth


def _chunks(counts: torch.Tensor) -> list[tuple[int, int]]:
    """Face ranges whose candidate texels add up to about CANDIDATE_CHUNK each (a larger face alone)."""
    ends = torch.cumsum(counts, 0).cpu()
    ranges: list[tuple[int, int]] = []
    first = 0
    while first < len(counts):
        before = int(ends[first - 1]) if first else 0
        last = max(int(torch.searchsorted(ends, before + CANDIDATE_CHUNK, right=True)), first + 1)
        ranges.append((first, last))
        first = last
    return ranges
