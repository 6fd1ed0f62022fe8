"""Mesh extraction on an analytic scene whose shape is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_field import BLUE, FIN_TOP, NOSE_CENTRE, NOSE_RADIUS, RED, AnalyticField
from remote.errors import InvalidOptionError, NoForegroundError
from remote.extraction import extract_mesh, weld
from remote.marching_cubes import marching_cubes

RESOLUTION = 128
VOXEL = 2 * 0.87 / (RESOLUTION - 1)


@pytest.fixture(scope="module")
def field() -> AnalyticField:
    return AnalyticField()


@pytest.fixture(scope="module", params=["dense", "band"])
def mesh(request, field):
    return extract_mesh(field, resolution=RESOLUTION, method=request.param)


def _edges(faces: np.ndarray) -> np.ndarray:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(edges, axis=1)


def test_surface_lies_on_the_analytic_shape(mesh, field):
    distance = field.signed_distance(torch.from_numpy(mesh.vertices)).abs()
    assert distance.mean() < 0.1 * VOXEL
    assert distance.max() < 0.5 * VOXEL


def test_nose_points_to_plus_x_and_fin_stands_up(mesh):
    top = NOSE_CENTRE[0] + NOSE_RADIUS
    assert mesh.vertices[:, 0].max() == pytest.approx(top, abs=VOXEL)
    assert mesh.vertices[:, 0].min() == pytest.approx(-0.45, abs=VOXEL)
    # The thin fin (under one coarse cell thick) must survive the band method.
    assert mesh.vertices[:, 2].max() == pytest.approx(FIN_TOP, abs=VOXEL)


def test_mesh_is_welded_and_closed(mesh):
    assert len(np.unique(mesh.vertices, axis=0)) == len(mesh.vertices)
    _, counts = np.unique(_edges(mesh.faces), axis=0, return_counts=True)
    assert np.all(counts == 2), "every edge of a closed welded surface has exactly two faces"
    assert mesh.faces.min() == 0 and mesh.faces.max() == len(mesh.vertices) - 1


def test_faces_point_outward(mesh):
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    signed_volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert signed_volume > 0
    normals = np.cross(b - a, c - a)
    centres = (a + b + c) / 3
    body = np.linalg.norm(centres, axis=1) < 0.5
    outward = np.einsum("ij,ij->i", normals[body], centres[body]) > 0
    assert outward.mean() > 0.99


def test_colours_follow_the_field(mesh):
    expected = np.where((mesh.vertices[:, 0] > 0.2)[:, None], RED, BLUE)
    np.testing.assert_allclose(mesh.colors, expected, atol=1e-6)


def test_band_and_dense_give_the_same_surface(field):
    dense = extract_mesh(field, resolution=96, method="dense")
    band = extract_mesh(field, resolution=96, method="band")
    np.testing.assert_array_equal(dense.faces, band.faces)
    np.testing.assert_allclose(dense.vertices, band.vertices, atol=1e-6)


def test_decimation_reaches_about_the_target(field):
    full = extract_mesh(field, resolution=RESOLUTION)
    small = extract_mesh(field, resolution=RESOLUTION, target_faces=2000)
    assert len(small.faces) < len(full.faces) / 5
    assert 1500 <= len(small.faces) <= 2500
    assert len(small.colors) == len(small.vertices)
    expected = np.where((small.vertices[:, 0] > 0.2)[:, None], RED, BLUE)
    np.testing.assert_allclose(small.colors, expected, atol=1e-6)


def test_pymcubes_convention_is_axis_ordered_and_outward():
    axis = torch.linspace(-1, 1, 40)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    volume = 1.0 - ((x - 0.4) ** 2 + y**2 + z**2).sqrt() / 0.3  # high inside a ball off-centre in x
    vertices, faces = marching_cubes(volume, 0.0)
    centre = vertices.mean(0) * 2 / 39 - 1
    assert centre[0] == pytest.approx(0.4, abs=0.02) and centre[1:].abs().max() < 0.02
    a, b, c = (vertices[faces[:, i]].double() for i in range(3))
    assert torch.einsum("ij,ij->i", a, torch.cross(b, c, dim=1)).sum() > 0


def test_weld_merges_a_triangle_soup():
    axis = torch.linspace(-1, 1, 24)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    vertices, faces = marching_cubes(1.0 - (x**2 + y**2 + z**2).sqrt() / 0.6, 0.0)
    soup = vertices[faces.flatten()]
    welded_vertices, welded_faces = weld(soup, torch.arange(len(soup)).view(-1, 3))
    assert len(welded_vertices) == len(vertices)
    assert len(welded_faces) == len(faces)


def test_empty_scene_says_to_lower_the_threshold(field):
    with pytest.raises(NoForegroundError, match="lower the threshold"):
        extract_mesh(field, resolution=32, threshold=1e9)


@pytest.mark.parametrize(
    "options", [{"resolution": 31}, {"resolution": 513}, {"target_faces": 0}, {"method": "sparse"}]
)
def test_bad_options_are_refused(field, options):
    with pytest.raises(InvalidOptionError):
        extract_mesh(field, **options)
