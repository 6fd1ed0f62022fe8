"""Mesh extraction on an analytic scene whose shape is known exactly."""

from __future__ import annotations

import mcubes  # type: ignore[import-untyped]
import numpy as np
import pytest
import torch

import remote.marching_cubes as mc
from image_to_3d_dev.analytic_field import BLUE, FIN_TOP, NOSE_CENTRE, NOSE_RADIUS, RED, AnalyticField
from remote.errors import InvalidOptionError, NoForegroundError
from remote.extraction import band_density, coarse_size_for, extract_mesh, weld
from remote.precision import BAND_LOG_MARGIN, COARSE_STRIDE

RESOLUTION = 128
VOXEL = 2 * 0.87 / (RESOLUTION - 1)
CUDA_MCUBES = torch.cuda.is_available() and mc._torchmcubes is not None
needs_cuda_mcubes = pytest.mark.skipif(not CUDA_MCUBES, reason="needs CUDA and torchmcubes")


@pytest.fixture(scope="module")
def field() -> AnalyticField:
    return AnalyticField()


@pytest.fixture(scope="module", params=["dense", "band"])
def mesh(request, field):
    return extract_mesh(field, resolution=RESOLUTION, method=request.param)


def _edges(faces: np.ndarray) -> np.ndarray:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(edges, axis=1)


def _signed_volume(vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor) -> float:
    vertices, faces = np.asarray(vertices, dtype=np.float64), np.asarray(faces)
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def _assert_closed(faces: np.ndarray) -> None:
    _, counts = np.unique(_edges(faces), axis=0, return_counts=True)
    assert np.all(counts == 2), f"{np.sum(counts != 2)} edges are not shared by exactly two faces"


def _ball_volume(size: int, centre_x: float = 0.4) -> torch.Tensor:
    """High inside a ball off-centre along axis 0: tells the axes and the inside apart."""
    axis = torch.linspace(-1, 1, size)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return 1.0 - ((x - centre_x) ** 2 + y**2 + (z + 0.1) ** 2).sqrt() / 0.3


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
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32 and mesh.colors.dtype == np.float32
    assert len(np.unique(mesh.vertices, axis=0)) == len(mesh.vertices)
    _assert_closed(mesh.faces)
    assert mesh.faces.min() == 0 and mesh.faces.max() == len(mesh.vertices) - 1


def test_faces_point_outward(mesh):
    assert _signed_volume(mesh.vertices, mesh.faces) > 0
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    normals = np.cross(b - a, c - a)
    centres = (a + b + c) / 3
    body = np.linalg.norm(centres, axis=1) < 0.5
    outward = np.einsum("ij,ij->i", normals[body], centres[body]) > 0
    assert outward.mean() > 0.99
    # Vertex normals too: unit length, away from the centre on the ball (off the nose and the fin).
    assert mesh.normals is not None and mesh.normals.shape == mesh.vertices.shape
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-5)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    on_ball = (np.abs(radius - 0.45) < 0.01) & (mesh.vertices[:, 0] < 0.2) & (mesh.vertices[:, 2] < 0.3)
    directions = mesh.vertices[on_ball] / radius[on_ball, None]
    assert on_ball.sum() > 100 and np.einsum("ij,ij->i", mesh.normals[on_ball], directions).min() > 0.95


def test_colours_follow_the_field(mesh):
    expected = np.where((mesh.vertices[:, 0] > 0.2)[:, None], RED, BLUE)
    np.testing.assert_allclose(mesh.colors, expected, atol=1e-6)


def test_band_and_dense_give_the_same_surface(field):
    dense = extract_mesh(field, resolution=96, method="dense")
    band = extract_mesh(field, resolution=96, method="band")
    np.testing.assert_array_equal(dense.faces, band.faces)
    np.testing.assert_allclose(dense.vertices, band.vertices, atol=1e-6)


class _FlatNoisyField(AnalyticField):
    """Density within a factor of two of the threshold everywhere (as random weights give): the
    band would cover the whole grid."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        wave = torch.sin(points[:, 0] * 40) * torch.cos(points[:, 1] * 37 + points[:, 2] * 23)
        return self.threshold * torch.exp(0.5 * wave)


@pytest.mark.slow  # a dense grid
def test_a_band_over_the_whole_grid_is_queried_as_the_dense_grid(caplog):
    field = _FlatNoisyField()
    with caplog.at_level("DEBUG", logger="remote.extraction"):
        band = extract_mesh(field, resolution=48, method="band")
    assert "querying the dense grid" in caplog.text
    dense = extract_mesh(field, resolution=48, method="dense")
    np.testing.assert_array_equal(dense.faces, band.faces)
    np.testing.assert_array_equal(dense.vertices, band.vertices)


def test_a_real_band_is_not_the_dense_grid(field, caplog):
    with caplog.at_level("DEBUG", logger="remote.extraction"):
        extract_mesh(field, resolution=96, method="band")
    assert "querying the dense grid" not in caplog.text and "grid points evaluated" in caplog.text


class _CountingField(AnalyticField):
    """The analytic field, counting the points it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.queried = 0

    def density(self, points: torch.Tensor) -> torch.Tensor:
        self.queried += len(points)
        return super().density(points)


def _points_queried(**band) -> int:
    field = _CountingField()
    band_density(field, 64, field.radius, field.threshold, 1 << 20, **band)
    return field.queried


def test_the_band_takes_its_stride_and_margin_as_parameters():
    """A narrower band evaluates fewer fine points, a finer coarse grid more coarse ones: the
    parameters reach the band (the pipeline passes its precision policy's)."""
    default = _points_queried()
    assert default == _points_queried(coarse_stride=COARSE_STRIDE, band_log_margin=BAND_LOG_MARGIN)
    assert _points_queried(band_log_margin=0.0) < default < _points_queried(band_log_margin=8.0)
    fine_coarse = _points_queried(coarse_stride=2, band_log_margin=0.0)
    assert fine_coarse != _points_queried(band_log_margin=0.0)
    assert fine_coarse >= coarse_size_for(64, 2) ** 3 == 33**3


@pytest.mark.slow  # a large mesh decimated
def test_decimation_reaches_about_the_target(field):
    full = extract_mesh(field, resolution=RESOLUTION)
    small = extract_mesh(field, resolution=RESOLUTION, target_faces=2000)
    assert len(small.faces) < len(full.faces) / 5
    assert 1800 <= len(small.faces) <= 2200
    assert len(small.colors) == len(small.vertices)
    assert small.faces.max() == len(small.vertices) - 1
    assert _signed_volume(small.vertices, small.faces) > 0
    # Colours are queried at the decimated vertices, not carried over from the full mesh.
    expected = np.where((small.vertices[:, 0] > 0.2)[:, None], RED, BLUE)
    np.testing.assert_allclose(small.colors, expected, atol=1e-6)


def test_pymcubes_convention_is_axis_ordered_and_outward():
    vertices, faces = mc.marching_cubes(_ball_volume(40), 0.0)
    assert mc.backend_for(torch.zeros(2, 2, 2)) == "pymcubes"
    centre = vertices.double().mean(0) * 2 / 39 - 1
    assert centre.tolist() == pytest.approx([0.4, 0.0, -0.1], abs=0.02)
    assert _signed_volume(vertices, faces) > 0
    assert bool(((vertices != vertices.round()).sum(1) == 1).all()), "every vertex on exactly one grid edge"


def test_meshing_the_surface_box_gives_the_whole_volumes_surface():
    volume = _ball_volume(48, centre_x=0.35)
    box = mc.surface_box(volume, 0.0)
    assert box is not None and any(stop - start < 48 for start, stop in box), "the ball leaves empty samples to skip"
    expected = weld(*mc._pymcubes(volume, 0.0))  # the whole volume, no box
    vertices, faces = weld(*mc.marching_cubes(volume, 0.0))
    torch.testing.assert_close(vertices, expected[0])
    assert torch.equal(faces, expected[1])


def test_surface_box_keeps_samples_equal_to_the_threshold():
    # Exactly at the threshold counts as reached: the libraries differ on which side it falls.
    volume = torch.full((12, 12, 12), -1.0)
    volume[5:7, 5:7, 5:7] = 1.0
    volume[9, 6, 6] = 0.0
    assert mc.surface_box(volume, 0.0) == [(4, 11), (4, 8), (4, 8)]
    expected = weld(*mc._pymcubes(volume, 0.0))
    vertices, faces = weld(*mc.marching_cubes(volume, 0.0))
    torch.testing.assert_close(vertices, expected[0])
    assert torch.equal(faces, expected[1])


def test_marching_cubes_without_a_crossing_is_empty():
    below = torch.full((8, 8, 8), -1.0)
    assert mc.surface_box(below, 0.0) is None
    vertices, faces = mc.marching_cubes(below, 0.0)
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
    above = torch.ones((8, 8, 8))
    assert mc.surface_box(above, 0.0) == [(0, 8), (0, 8), (0, 8)]
    assert len(mc.marching_cubes(above, 0.0)[1]) == 0


class _TorchmcubesConvention:
    """torchmcubes' CUDA output form, built from PyMCubes: vertices (dim2, dim1, dim0), three per face.

    Exercises our slab split, axis reorder and weld on the CPU; the real library's winding and
    axis order are checked against PyMCubes on a GPU by test_torchmcubes_matches_pymcubes.
    """

    def marching_cubes(self, volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        vertices, faces = mcubes.marching_cubes(volume.numpy(), threshold)
        soup = vertices[faces.reshape(-1)][:, ::-1].astype(np.float32)
        return torch.from_numpy(soup.copy()), torch.arange(len(soup), dtype=torch.int32).view(-1, 3)


@pytest.mark.slow  # large grids
def test_slabs_and_axis_reorder_give_the_pymcubes_surface(monkeypatch):
    volume = _ball_volume(48)
    expected_vertices, expected_faces = weld(*mc.marching_cubes(volume, 0.0))
    monkeypatch.setattr(mc, "_torchmcubes", _TorchmcubesConvention())
    monkeypatch.setattr(mc, "SLAB_BUDGET_BYTES", 144 * 48 * 48 * 7)  # 7 layers a slab: 8 slabs
    vertices, faces = weld(*mc._torchmcubes_cuda(volume, 0.0))
    assert len(vertices) == len(expected_vertices) and len(faces) == len(expected_faces)
    torch.testing.assert_close(vertices, expected_vertices)  # weld orders vertices by grid edge
    _assert_closed(faces.numpy())
    assert _signed_volume(vertices, faces) == pytest.approx(_signed_volume(expected_vertices, expected_faces))


def test_weld_merges_a_soup_whose_copies_differ_in_the_last_bit():
    vertices, faces = mc.marching_cubes(_ball_volume(64, centre_x=0.2), 0.0)
    soup = vertices[faces.flatten()].numpy()
    # Neighbouring cubes interpolate a shared edge from opposite ends: copies can differ by an ulp.
    step = np.random.default_rng(0).choice([-1.0, 0.0, 1.0], size=soup.shape).astype(np.float32)
    on_edge = soup != np.round(soup)
    nudged = np.where(on_edge, np.nextafter(soup, soup + step), soup)
    assert np.mean(nudged != soup) > 0.2
    welded_vertices, welded_faces = weld(torch.from_numpy(nudged), torch.arange(len(soup)).view(-1, 3))
    assert len(welded_vertices) == len(vertices)
    assert len(welded_faces) == len(faces)
    _assert_closed(welded_faces.numpy())


def test_weld_refuses_points_off_the_grid_edges():
    with pytest.raises(ValueError, match="grid edge"):
        weld(torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[0, 1, 2]]))


def test_weld_with_the_grid_size_gives_the_same_mesh():
    volume = _ball_volume(40, centre_x=0.2)
    soup = mc.marching_cubes(volume, 0.0)
    expected_vertices, expected_faces = weld(*soup)
    vertices, faces = weld(*soup, grid_points=40)
    torch.testing.assert_close(vertices, expected_vertices)
    assert torch.equal(faces, expected_faces)


@pytest.mark.parametrize("corner", [[39.0, 0.0, 0.5], [-1.0, 0.0, 0.5]])
def test_weld_refuses_points_outside_the_grid_it_was_told(corner):
    # 39 is past a 32-point grid's last index (31); a code out of range would alias another edge's key.
    vertices = torch.tensor([corner, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="grid edge"):
        weld(vertices, torch.tensor([[0, 1, 2]]), grid_points=32)


class _OverflowingField(AnalyticField):
    """The analytic field with overflow (inf) deep inside and NaN far outside, as a reduced-precision MLP can give."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        density = super().density(points)
        density = torch.where(density > 1e4, torch.inf, density)
        return torch.where(points.norm(dim=1) > 1.3, torch.nan, density)


@pytest.mark.parametrize("method", ["dense", "band"])
def test_infinite_and_nan_densities_still_give_the_shape(method):
    mesh = extract_mesh(_OverflowingField(), resolution=64, method=method)
    assert np.isfinite(mesh.vertices).all()
    _assert_closed(mesh.faces)
    assert mesh.vertices[:, 0].max() == pytest.approx(NOSE_CENTRE[0] + NOSE_RADIUS, abs=2 * 0.87 / 63)


def test_empty_scene_says_to_lower_the_threshold(field):
    with pytest.raises(NoForegroundError, match="lower the threshold"):
        extract_mesh(field, resolution=32, threshold=1e9)


def test_density_above_threshold_everywhere_says_to_raise_it(field):
    with pytest.raises(NoForegroundError, match="raise the threshold"):
        extract_mesh(field, resolution=32, threshold=1e-14)


class _FlatField(AnalyticField):
    """Density 1 everywhere, and a density query that refuses an empty batch as the model's does."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        assert len(points) > 0, "the field was queried with no points"
        return torch.ones(len(points), device=points.device)


@pytest.mark.parametrize("method", ["dense", "band"])
@pytest.mark.parametrize("threshold", [1e-300, 0.001, 1e6, 1e300])
def test_a_threshold_far_from_every_density_is_no_foreground(method, threshold):
    """Far from every density the band holds no cell at all; that is still just "no surface"."""
    with pytest.raises(NoForegroundError, match="threshold"):
        extract_mesh(_FlatField(), resolution=32, threshold=threshold, method=method)


@pytest.mark.parametrize(
    "options",
    [
        {"resolution": 31},
        {"resolution": 513},
        {"target_faces": 0},
        {"target_faces": 99},
        {"threshold": 0.0},
        {"threshold": float("nan")},
        {"method": "sparse"},
    ],
)
def test_bad_options_are_refused(field, options):
    with pytest.raises(InvalidOptionError, match=next(iter(options))):
        extract_mesh(field, **options)


@needs_cuda_mcubes
def test_torchmcubes_matches_pymcubes():
    volume = AnalyticField().density(torch.cartesian_prod(*[torch.linspace(-0.87, 0.87, 160)] * 3)).view((160,) * 3)
    assert mc.backend_for(volume.cuda()) == "torchmcubes-cuda"
    cpu_vertices, cpu_faces = weld(*mc.marching_cubes(volume, 25.0))
    gpu_vertices, gpu_faces = weld(*mc.marching_cubes(volume.cuda(), 25.0))
    assert gpu_vertices.is_cuda
    assert len(gpu_vertices) == len(cpu_vertices) and len(gpu_faces) == len(cpu_faces)
    torch.testing.assert_close(gpu_vertices.cpu(), cpu_vertices, atol=1e-4, rtol=0)
    _assert_closed(gpu_faces.cpu().numpy())
    gpu_volume = _signed_volume(gpu_vertices.cpu(), gpu_faces.cpu())
    assert gpu_volume > 0
    assert gpu_volume == pytest.approx(_signed_volume(cpu_vertices, cpu_faces), rel=1e-5)


@needs_cuda_mcubes
@pytest.mark.parametrize("method", ["dense", "band"])
def test_cuda_extraction_gives_the_cpu_mesh(method):
    cpu = extract_mesh(AnalyticField(), resolution=RESOLUTION, method=method)
    gpu = extract_mesh(AnalyticField(device="cuda"), resolution=RESOLUTION, method=method)
    assert len(gpu.vertices) == len(cpu.vertices) and len(gpu.faces) == len(cpu.faces)
    np.testing.assert_allclose(gpu.vertices, cpu.vertices, atol=1e-5)
    np.testing.assert_allclose(gpu.colors, cpu.colors, atol=1e-6)
    _assert_closed(gpu.faces)
    assert _signed_volume(gpu.vertices, gpu.faces) > 0
