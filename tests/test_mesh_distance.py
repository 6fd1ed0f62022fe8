"""The benchmark's parity measure (image_to_3d_dev/mesh_distance.py) on shapes whose answer is known."""

from __future__ import annotations


import mcubes  # type: ignore[import-untyped]
import numpy as np
import pytest

from image_to_3d_dev.mesh_distance import compare_meshes, surface_distance

SIZE = 64
CENTRE = 32.0


def _ball_mesh(radius: float, speck_radius: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching-cubes ball of `radius` voxels, plus a small separate ball when speck_radius > 0."""
    x, y, z = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE].astype(np.float64)
    field = radius - np.sqrt((x - CENTRE) ** 2 + (y - CENTRE) ** 2 + (z - CENTRE) ** 2)
    if speck_radius:
        field = np.maximum(field, speck_radius - np.sqrt((x - 8) ** 2 + (y - 8) ** 2 + (z - 8) ** 2))
    vertices, faces = mcubes.marching_cubes(field, 0.0)
    colours = np.where((vertices[:, 0] > CENTRE)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    return vertices, faces.astype(np.int64), colours


def test_a_grown_ball_is_as_far_as_it_grew_not_as_far_as_its_vertices_moved():
    small, large = _ball_mesh(20.0), _ball_mesh(20.3)
    figures = compare_meshes(*small, *large, voxel=1.0)
    assert figures["mean_distance_voxels"] == pytest.approx(0.3, abs=0.01)
    assert figures["max_distance_voxels"] < 0.35
    assert figures["missing_parts"]["count"] == figures["extra_parts"]["count"] == 0


def test_identical_meshes_are_zero_apart():
    ball = _ball_mesh(15.0)
    figures = compare_meshes(*ball, *ball, voxel=1.0)
    assert figures["mean_distance_voxels"] == pytest.approx(0.0, abs=1e-12)
    assert figures["mean_colour_difference"] == 0.0


def test_a_separate_part_missing_in_the_candidate_is_reported_with_its_area():
    without, with_speck = _ball_mesh(15.0), _ball_mesh(15.0, speck_radius=3.0)
    figures = compare_meshes(*without, *with_speck, voxel=1.0)
    missing = figures["missing_parts"]
    assert missing["count"] == missing["visible"] == 1
    assert missing["largest_voxels2"][0] == pytest.approx(4 * np.pi * 3.0**2, rel=0.15)
    assert figures["extra_parts"]["count"] == 0
    assert figures["max_distance_voxels"] > 20


def test_point_to_triangle_distance_is_exact_off_vertices():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    faces = np.array([[0, 1, 2]])
    points = np.array([[0.25, 0.25, 0.5], [2.0, 0.0, 0.0], [0.6, 0.6, 0.0], [-1.0, -1.0, 0.0]])
    expected = [0.5, 1.0, np.sqrt(2) * 0.1, np.sqrt(2)]
    np.testing.assert_allclose(surface_distance(points, vertices, faces), expected, atol=1e-12)
