"""Mesh -> charts: each face projected onto the box side its normal faces most, one chart per
connected patch of faces that share a side.

Why a box projection and not xatlas: xatlas (MIT) computes charts of a 50k-face mesh in seconds,
many times the budget of the whole textured request, where a box projection takes milliseconds
(docs/performance.md, benchmarks/investigations/xatlas_unwrap.py). Projecting a face onto the
side its normal points to keeps its orientation (counter-clockwise in UV, like its winding); sides
are chosen from the normals of a face's neighbourhood so that neighbours agree (fewer seams), but
never one more than about 70 degrees from the face's own normal (a third of its area at least).

A connected patch of such faces can still fold over itself in projection (a spiral ramp): folds.py
finds the faces that overlap, and `box_charts(alone=...)` gives them charts of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse  # type: ignore[import-untyped]
import scipy.sparse.csgraph  # type: ignore[import-untyped]


SMOOTHING_RINGS = 2  # rings of neighbours whose normals choose a face's side
MIN_FACING = 0.35  # a face may go to a side within about 70 degrees of its normal


@dataclass
class Charts:
    """The mesh cut into charts: UV vertices (a mesh vertex is copied once per chart it lies in).

    `uv` is in model units (each chart's own plane), not yet packed into the atlas.
    """

    uv: np.ndarray  # float64 (U, 2)
    vertex_map: np.ndarray  # int64 (U,): the mesh vertex each UV vertex copies
    faces: np.ndarray  # int64 (F, 3): the mesh's faces, indexing UV vertices
    face_chart: np.ndarray  # int64 (F,): the chart of each face, 0..count-1
    count: int
    # What does not change when faces are split off (box_charts(like=...) reuses it): each face's
    # box side, and the pairs of faces that share an edge.
    sides: np.ndarray | None = None  # int64 (F,)
    adjacent: tuple[np.ndarray, np.ndarray] | None = None


def face_sides(vertices: np.ndarray, faces: np.ndarray, smoothing: int = SMOOTHING_RINGS) -> np.ndarray:
    """The box side (0..5: +X, -X, +Y, -Y, +Z, -Z) each face is projected onto.

    The side is the one the face's neighbourhood (its normal averaged over `smoothing` rings of
    faces) points to most, among the sides its own normal is within ~70 degrees of: neighbours
    then agree more often (fewer, larger charts, so fewer seams and less gutter), and
    every face still keeps its orientation and at least a third of its area in projection."""
    a, b, c = (vertices[faces[:, corner]].astype(np.float64) for corner in range(3))
    normals = np.cross(b - a, c - a)  # length: twice the area, so larger faces weigh more
    smoothed = normals
    for _ in range(smoothing):
        at_vertex = np.stack(
            [
                np.bincount(faces.reshape(-1), np.repeat(smoothed[:, axis], 3), minlength=len(vertices))
                for axis in range(3)
            ],
            axis=1,
        )
        smoothed = at_vertex[faces].sum(axis=1)
    own = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    facing = np.concatenate([own, -own], axis=1)[:, [0, 3, 1, 4, 2, 5]]  # per side: +X, -X, +Y, ...
    around = np.concatenate([smoothed, -smoothed], axis=1)[:, [0, 3, 1, 4, 2, 5]]
    around /= np.maximum(np.linalg.norm(smoothed, axis=1, keepdims=True), 1e-300)
    allowed = facing >= MIN_FACING
    allowed[np.arange(len(faces)), facing.argmax(axis=1)] = True  # the dominant side is always >= 1/sqrt(3)
    return np.where(allowed, around, -np.inf).argmax(axis=1)


def project(points: np.ndarray, side: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N, 2) on box side `side` (per point), counter-clockwise for faces facing it.

    For axis a the plane's coordinates are (a+1, a+2) cyclically, which keeps the winding of a face
    whose normal points along +a; a face pointing along -a has its first coordinate mirrored."""
    axis = side // 2
    rows = np.arange(len(points))
    u = points[rows, (axis + 1) % 3]
    v = points[rows, (axis + 2) % 3]
    return np.stack((np.where(side % 2 == 1, -u, u), v), axis=1)


def face_adjacency(faces: np.ndarray, vertex_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of faces that share an edge (a closed mesh has two faces per edge; any more are chained)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edge_keys = edges[:, 0] * (vertex_count + 1) + edges[:, 1]
    edge_faces = np.tile(np.arange(len(faces)), 3)
    order = np.argsort(edge_keys, kind="stable")
    keys, owners = edge_keys[order], edge_faces[order]
    same_edge = keys[1:] == keys[:-1]
    return owners[:-1][same_edge], owners[1:][same_edge]


def box_charts(
    vertices: np.ndarray, faces: np.ndarray, alone: np.ndarray | None = None, like: Charts | None = None
) -> Charts:
    """Charts of faces that share an edge and a box side; faces marked in `alone` get their own.

    `like`: charts made before of the same mesh, whose sides and face adjacency are reused (the
    second pass after folds.py, which only splits faces off)."""
    faces = np.asarray(faces, dtype=np.int64)
    sides = like.sides if like is not None and like.sides is not None else face_sides(vertices, faces)
    count = len(faces)
    adjacent = like.adjacent if like is not None and like.adjacent is not None else face_adjacency(faces, len(vertices))
    first, second = adjacent
    joined = sides[first] == sides[second]
    if alone is not None:
        joined &= ~(alone[first] | alone[second])
    first, second = first[joined], second[joined]
    graph = scipy.sparse.coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(count, count))
    chart_count, face_chart = scipy.sparse.csgraph.connected_components(graph, directed=False)

    # One UV vertex per (chart, mesh vertex) pair.
    corner_keys = face_chart.astype(np.int64)[:, None] * len(vertices) + faces
    unique_keys, corner_uv = np.unique(corner_keys.reshape(-1), return_inverse=True)
    vertex_map = unique_keys % len(vertices)
    uv_faces = corner_uv.reshape(-1, 3)
    uv_side = np.empty(len(unique_keys), dtype=np.int64)
    uv_side[uv_faces.reshape(-1)] = np.repeat(sides, 3)
    uv = project(vertices[vertex_map].astype(np.float64), uv_side)
    return Charts(
        uv=uv,
        vertex_map=vertex_map,
        faces=uv_faces,
        face_chart=face_chart.astype(np.int64),
        count=chart_count,
        sides=sides,
        adjacent=adjacent,
    )
