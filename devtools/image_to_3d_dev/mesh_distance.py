"""How far apart two meshes of the same scene are: surface distance, missing parts, colour.

Why not nearest vertices: two marching-cubes meshes of slightly different fields put their
vertices on the same grid edges at slightly different places; the distance between those vertices
is the shift along the edge, which overstates how far the surface moved wherever the surface is
tilted against the edge. So distances here are from each vertex of one mesh to the nearest point
of the other mesh's triangles (exact point-to-triangle distance, candidate triangles found with a
k-d tree of their centroids), both ways.

A part present in one mesh and missing in the other is a connected component (faces sharing
vertices) of one mesh whose vertices mostly lie farther than MISSING_DISTANCE voxels from the other
mesh. Specks that appear or vanish where a noisy field barely touches the threshold are counted
too, but apart from parts of at least VISIBLE_AREA (one voxel face), so a report tells a lost fin
from a lost speck.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

CANDIDATES = 16  # nearest triangle centroids tried per point (marching-cubes triangles are <= 1.5 voxel)
MISSING_DISTANCE = 1.0  # voxels: a vertex farther than this from the other surface is "not there"
CHUNK = 20_000
VISIBLE_AREA = 1.0  # voxel^2: a part smaller than one voxel's face is a speck below the grid's resolution


def surface_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Distance from each point (P, 3) to the nearest point of the triangle mesh (vertices, faces)."""
    triangles = vertices[faces].astype(np.float64)  # (F, 3, 3)
    tree = cKDTree(triangles.mean(axis=1))
    k = min(CANDIDATES, len(faces))
    result = np.empty(len(points))
    for start in range(0, len(points), CHUNK):
        chunk = points[start : start + CHUNK].astype(np.float64)
        _, candidates = tree.query(chunk, k=k)
        candidates = candidates.reshape(len(chunk), k)
        a, b, c = (triangles[candidates, i] for i in range(3))  # (n, k, 3) each
        distances = _point_triangle_distance(chunk[:, None, :], a, b, c)
        result[start : start + CHUNK] = distances.min(axis=1)
    return result


def _point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact distance from p to triangle abc (broadcast arrays ending in 3): the plane when the
    projection falls inside, else the nearest of the three edges (also for degenerate triangles)."""
    normal = np.cross(b - a, c - a)
    area2 = np.linalg.norm(normal, axis=-1)
    unit = normal / np.maximum(area2, 1e-300)[..., None]
    height = np.einsum("...i,...i->...", p - a, unit)
    projected = p - height[..., None] * unit
    # Inside when the projection is on the inner side of all three edges.
    inside = area2 > 0
    for start, end in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("...i,...i->...", np.cross(end - start, projected - start), unit) >= 0
    edges = np.minimum(
        np.minimum(_point_segment_distance(p, a, b), _point_segment_distance(p, b, c)),
        _point_segment_distance(p, c, a),
    )
    return np.where(inside, np.abs(height), edges)


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    segment = b - a
    length2 = np.einsum("...i,...i->...", segment, segment)
    t = np.clip(np.einsum("...i,...i->...", p - a, segment) / np.maximum(length2, 1e-300), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * segment), axis=-1)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def components(vertices: np.ndarray, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the mesh: (count, label per vertex)."""
    count = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(count, count))
    return connected_components(graph, directed=False)


def missing_parts(vertices: np.ndarray, faces: np.ndarray, distance_to_other: np.ndarray, voxel: float) -> list[float]:
    """Areas (voxel^2) of the components of this mesh that the other mesh lacks, largest first."""
    count, labels = components(vertices, faces)
    far = distance_to_other > MISSING_DISTANCE * voxel
    far_share = np.bincount(labels, weights=far, minlength=count) / np.maximum(np.bincount(labels, minlength=count), 1)
    area = np.bincount(labels[faces[:, 0]], weights=face_areas(vertices, faces), minlength=count) / voxel**2
    return sorted((float(area[i]) for i in np.flatnonzero(far_share > 0.5)), reverse=True)


def compare_meshes(
    candidate_vertices: np.ndarray,
    candidate_faces: np.ndarray,
    candidate_colors: np.ndarray,
    reference_vertices: np.ndarray,
    reference_faces: np.ndarray,
    reference_colors: np.ndarray,
    voxel: float,
) -> dict:
    """Surface distances both ways (voxels), parts missing either way, colour difference at the
    nearest reference vertex (mean absolute, 0..1)."""
    to_reference = surface_distance(candidate_vertices, reference_vertices, reference_faces)
    to_candidate = surface_distance(reference_vertices, candidate_vertices, candidate_faces)
    both = np.concatenate([to_reference, to_candidate]) / voxel
    _, nearest = cKDTree(reference_vertices).query(candidate_vertices)
    missing_in_candidate = missing_parts(reference_vertices, reference_faces, to_candidate, voxel)
    extra_in_candidate = missing_parts(candidate_vertices, candidate_faces, to_reference, voxel)
    return {
        "mean_distance_voxels": float(both.mean()),
        "p99_distance_voxels": float(np.percentile(both, 99)),
        "max_distance_voxels": float(both.max()),
        "mean_colour_difference": float(np.abs(candidate_colors - reference_colors[nearest]).mean()),
        "missing_parts": _parts_summary(missing_in_candidate),
        "extra_parts": _parts_summary(extra_in_candidate),
        "vertices": [len(candidate_vertices), len(reference_vertices)],
    }


def _parts_summary(areas: list[float]) -> dict:
    """Count, count of parts an artist could see (at least VISIBLE_AREA voxel^2), largest areas."""
    return {
        "count": len(areas),
        "visible": sum(area >= VISIBLE_AREA for area in areas),
        "largest_voxels2": areas[:5],
    }
