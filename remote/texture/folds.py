"""Faces whose projections overlap inside a chart: a box projection of a connected patch can fold
over itself (a spiral ramp, a lip at the cube's edge), and two faces on one texel cannot both show.

Exact up to a tolerance, not per texel, in two parts:

- Faces that share a vertex overlap exactly when their corners' angular sectors there overlap (each
  face lies inside its corner's sector), which in a fan of counter-clockwise faces means the angles
  around the vertex add up to more than a full turn: one sum per vertex.
- Faces that share no vertex: the pairs in one chart whose boxes share a cell of a grid (cells twice
  the median face size) and overlap, each given the separating-axis test.

Faces that only touch are not overlaps.
"""

from __future__ import annotations

import math

import torch

TOLERANCE = 1e-9  # model units: closer than this counts as touching


def folded_faces(uv: torch.Tensor, faces: torch.Tensor, face_chart: torch.Tensor) -> torch.Tensor:
    """(F,) bool: faces that overlap another face of their chart. `uv` (U, 2) float64, in model units."""
    triangles = uv[faces]  # (F, 3, 2)
    a, b, c = triangles.unbind(1)
    twice_area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    folded = torch.zeros(len(faces), dtype=torch.bool, device=uv.device)
    # Faces of no area show nothing. Charts of one or two faces cannot fold: every face keeps its
    # orientation (counter-clockwise), so two that share an edge lie on either side of it.
    chart_faces = torch.bincount(face_chart)
    index = ((twice_area.abs() > TOLERANCE**2) & (chart_faces[face_chart] > 2)).nonzero().squeeze(1)
    if len(index) < 2:
        return folded
    folded[index] = _wound_twice(triangles[index], faces[index], len(uv))
    pairs = _candidate_pairs(triangles[index], face_chart[index])
    corners = faces[index]
    shares_vertex = (corners[pairs[:, 0], :, None] == corners[pairs[:, 1], None, :]).flatten(1).any(dim=1)
    pairs = pairs[~shares_vertex]
    if len(pairs) == 0:
        return folded
    overlapping = ~_separated(triangles[index[pairs[:, 0]]], triangles[index[pairs[:, 1]]])
    folded[index[pairs[overlapping].flatten()]] = True
    return folded


def _wound_twice(triangles: torch.Tensor, faces: torch.Tensor, vertex_count: int) -> torch.Tensor:
    """(F,) bool: faces at a vertex whose corner angles add up to more than a full turn."""
    to_next = triangles.roll(-1, dims=1) - triangles
    to_previous = triangles.roll(1, dims=1) - triangles
    cross = to_next[..., 0] * to_previous[..., 1] - to_next[..., 1] * to_previous[..., 0]
    dot = to_next[..., 0] * to_previous[..., 0] + to_next[..., 1] * to_previous[..., 1]
    angles = torch.atan2(cross.abs(), dot)  # (F, 3), each in 0..pi
    total = torch.zeros(vertex_count, dtype=angles.dtype, device=angles.device)
    total.index_add_(0, faces.flatten(), angles.flatten())
    return (total[faces] > 2 * math.pi + 1e-6).any(dim=1)


def _candidate_pairs(triangles: torch.Tensor, chart: torch.Tensor) -> torch.Tensor:
    """(P, 2) index pairs (first < second) of faces in one chart whose boxes share a grid cell."""
    device = triangles.device
    low, high = triangles.amin(dim=1), triangles.amax(dim=1)
    cell = float((high - low).amax(dim=1).median()) * 2 or 1.0
    first = (low / cell).floor().long()
    last = (high / cell).floor().long()
    first_min = first.amin(dim=0)
    first, last = first - first_min, last - first_min
    spans = last - first + 1
    counts = spans[:, 0] * spans[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(triangles), device=device), counts)
    local = torch.arange(len(owner), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    column = first[owner, 0] + local % spans[owner, 0]
    row = first[owner, 1] + local // spans[owner, 0]
    columns = int(last[:, 0].max()) + 1
    rows = int(last[:, 1].max()) + 1
    keys = (chart[owner] * rows + row) * columns + column
    keys, order = torch.sort(keys, stable=True)
    owner = owner[order]
    # Every entry pairs with the entries after it in its cell: rank r of a cell of k gives k - 1 - r.
    _, cell_sizes = torch.unique_consecutive(keys, return_counts=True)
    cell_starts = torch.cumsum(cell_sizes, 0) - cell_sizes
    rank = torch.arange(len(keys), device=device) - torch.repeat_interleave(cell_starts, cell_sizes)
    later = torch.repeat_interleave(cell_sizes, cell_sizes) - 1 - rank
    if int(later.sum()) == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=device)
    entry = torch.repeat_interleave(torch.arange(len(keys), device=device), later)
    step = torch.arange(len(entry), device=device) - torch.repeat_interleave(torch.cumsum(later, 0) - later, later) + 1
    pairs = torch.stack((owner[entry], owner[entry + step]), dim=1).sort(dim=1).values
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    codes = torch.unique(pairs[:, 0] * len(triangles) + pairs[:, 1])
    pairs = torch.stack((codes // len(triangles), codes % len(triangles)), dim=1)
    boxes_meet = (
        (low[pairs[:, 0]] < high[pairs[:, 1]] - TOLERANCE) & (low[pairs[:, 1]] < high[pairs[:, 0]] - TOLERANCE)
    ).all(dim=1)
    return pairs[boxes_meet]


def _separated(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(P,) bool: a line along one of the six edges separates the two triangles (or they touch)."""
    separated = torch.zeros(len(first), dtype=torch.bool, device=first.device)
    for shape in (first, second):
        along = shape.roll(-1, dims=1) - shape  # (P, 3 edges, 2)
        normal = torch.stack((-along[..., 1], along[..., 0]), dim=2)
        length = (normal[..., 0] * normal[..., 0] + normal[..., 1] * normal[..., 1]).sqrt().clamp_min(1e-300)
        normal = normal / length[..., None]
        p = (first[:, None, :, :] * normal[:, :, None, :]).sum(dim=3)  # (P, edge, corner)
        q = (second[:, None, :, :] * normal[:, :, None, :]).sum(dim=3)
        apart = (p.amax(dim=2) <= q.amin(dim=2) + TOLERANCE) | (q.amax(dim=2) <= p.amin(dim=2) + TOLERANCE)
        separated |= apart.any(dim=1)
    return separated
