"""Density field -> welded, outward-facing, vertex-coloured mesh.

The field is sampled on upstream TripoSR's grid (`linspace(-radius, radius, resolution)` per axis,
both ends included, first axis slowest), cut at `threshold` with marching cubes, welded, optionally
decimated, and coloured once per final vertex.

Two ways to fill the grid, giving the same surface:

- "dense": every grid point, in chunks (upstream's way; the exact reference).
- "band": a coarse grid first, then every fine point of the coarse cells that hold the surface or
  come close to it (a band in log-density, dilated by one cell, so thin parts are kept); the rest of
  the grid is filled by trilinear interpolation of the coarse grid, which stays on one side of the
  threshold there. It evaluates a few percent of the points, so it is the default. The band is
  wide (by default a factor e^4 either side of the threshold) because a narrower one lost sharp
  peaks that the coarse grid undersampled, where e^4 gives the dense grid's surface
  (docs/performance.md, "Figures behind the code"). Its coarse stride and width are parameters;
  the pipeline passes its precision policy's (remote/precision.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from remote.errors import InvalidOptionError, NoForegroundError
from remote.marching_cubes import backend_for, marching_cubes
from remote.precision import BAND_LOG_MARGIN, COARSE_STRIDE

logger = logging.getLogger(__name__)

RESOLUTION_RANGE = (32, 512)
TARGET_FACES_MIN = 100  # fewer faces than this is no longer a recognisable object (same floor as the pipeline)
METHODS = ("band", "dense")
DENSE_SHARE = 0.6  # a band over this share of the coarse cells is queried as the dense grid
DENSITY_CAP = 1e30  # overflowed (inf) densities become this, so interpolation never meets inf * 0


class Field(Protocol):
    """What extraction needs from a scene: densities and colours at points in model space, and the
    half-side of the cube the grid spans (TripoSR's config: renderer.radius)."""

    device: torch.device
    radius: float

    def density(self, points: torch.Tensor) -> torch.Tensor: ...

    def color(self, points: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Mesh:
    """Vertices in model space, faces counter-clockwise seen from outside, sRGB colours 0..1.

    `normals` (unit, area-weighted, model space) are optional: extract_mesh fills them on the
    field's device, and mesh_to_glb computes them when they are missing.
    """

    vertices: np.ndarray  # float32 (V, 3)
    faces: np.ndarray  # int32 (F, 3)
    colors: np.ndarray  # float32 (V, 3)
    normals: np.ndarray | None = None  # float32 (V, 3)


@dataclass
class Surface:
    """The extracted mesh still on the field's device: what the compact GLB is packed from there
    (remote/compact_glb.py) without a trip through host arrays."""

    vertices: torch.Tensor  # float32 (V, 3), model space
    faces: torch.Tensor  # integer (F, 3)
    colors: torch.Tensor  # float32 (V, 3), sRGB 0..1

    def to_host(self, normals: bool = False) -> Mesh:
        """The same mesh as host arrays, with vertex normals if asked."""
        return Mesh(
            vertices=self.vertices.cpu().numpy(),
            faces=self.faces.to(torch.int32).cpu().numpy(),
            colors=self.colors.cpu().numpy(),
            normals=vertex_normals(self.vertices, self.faces).cpu().numpy() if normals else None,
        )


def extract_mesh(field: Field, *, normals: bool = True, **options: Any) -> Mesh:
    """extract_surface(field, **options)'s mesh as host arrays, with vertex normals unless
    `normals=False`; the copy counts in "color" when `options` carries `timings`."""
    surface = extract_surface(field, **options)
    with _StageClock(options.get("timings"), options.get("sync"))("color"):
        return surface.to_host(normals)


def extract_surface(
    field: Field,
    *,
    resolution: int = 256,
    threshold: float = 25.0,
    target_faces: int | None = None,
    method: str = "band",
    chunk_points: int = 1 << 20,
    timings: dict[str, float] | None = None,
    sync: Callable[[], None] | None = None,
    check: Callable[[], None] | None = None,
    coarse_stride: int = COARSE_STRIDE,
    band_log_margin: float = BAND_LOG_MARGIN,
) -> Surface:
    """Mesh the surface `density == threshold` on the grid over the field's cube (`field.radius`),
    on the field's device; adds "extraction" and "color" seconds to `timings`.

    `check` is called between chunks of field queries and may raise to stop the work (a cancelled
    job). `coarse_stride` and `band_log_margin` shape the band method (`band_density`)."""
    _validate(resolution, threshold, target_faces, method)
    clock = _StageClock(timings, sync)
    radius = float(field.radius)
    check = check or _no_check
    with clock("extraction"):
        if method == "dense":
            volume = dense_density(field, resolution, radius, chunk_points, check)
        else:
            volume = band_density(
                field,
                resolution,
                radius,
                threshold,
                chunk_points,
                check,
                coarse_stride=coarse_stride,
                band_log_margin=band_log_margin,
            )
        check()
        logger.debug("marching cubes with %s at resolution %d", backend_for(volume), resolution)
        index_vertices, faces = marching_cubes(volume, threshold)
        if len(faces) == 0:
            raise _no_surface_error(volume, threshold)
        index_vertices, faces = weld(index_vertices, faces, grid_points=resolution)
        if len(faces) == 0:  # every face was a sliver that welding collapsed
            raise _no_surface_error(volume, threshold)
        vertices = (index_vertices * (2.0 * radius / (resolution - 1)) - radius).float()
        if target_faces is not None and len(faces) > target_faces:
            decimated, faces_np = decimate(vertices.cpu().numpy(), faces.cpu().numpy(), target_faces)
            if len(faces_np) == 0:
                raise _no_surface_error(volume, threshold)
            vertices = torch.from_numpy(decimated).to(field.device)
            faces = torch.from_numpy(faces_np).to(field.device)
    check()
    with clock("color"):
        colors = field_colors(field, vertices, chunk_points)
    return Surface(vertices=vertices, faces=faces, colors=colors)


def field_colors(field: Field, points: torch.Tensor, chunk_points: int = 1 << 20) -> torch.Tensor:
    """The field's sRGB colours (N, 3) at model-space points, float32 in 0..1 (NaN read as black),
    queried `chunk_points` at a time: the vertex colours and the baked texture both come from here."""
    if len(points) == 0:
        return torch.zeros((0, 3), dtype=torch.float32, device=points.device)
    colors = torch.cat([field.color(chunk).float() for chunk in points.split(chunk_points)])
    return colors.nan_to_num(0.0).clamp(0.0, 1.0)


def _validate(resolution: int, threshold: float, target_faces: int | None, method: str) -> None:
    low, high = RESOLUTION_RANGE
    if not low <= resolution <= high:
        raise InvalidOptionError(f"resolution must be between {low} and {high} (got {resolution}).")
    if not (math.isfinite(threshold) and threshold > 0):
        raise InvalidOptionError(f"threshold must be a positive number (got {threshold}).")
    if target_faces is not None and target_faces < TARGET_FACES_MIN:
        raise InvalidOptionError(
            f"target_faces must be at least {TARGET_FACES_MIN}, or left out to keep every face (got {target_faces})."
        )
    if method not in METHODS:
        raise InvalidOptionError(f"method must be one of {', '.join(METHODS)} (got {method!r}).")


def _no_surface_error(volume: torch.Tensor, threshold: float) -> NoForegroundError:
    """Nothing crosses the threshold: say which way to move it."""
    if bool((volume >= threshold).all()):
        return NoForegroundError(
            "The density is above the threshold everywhere in the cube, so there is no surface; raise the threshold."
        )
    return NoForegroundError(
        "The model found no object at this threshold; lower the threshold (for example 10) "
        "or use an image with a clearer subject."
    )


def grid_axis(resolution: int, radius: float, device: torch.device) -> torch.Tensor:
    """Upstream's sample positions along one axis: both ends included."""
    return torch.linspace(-radius, radius, resolution, device=device)


def _no_check() -> None:
    return None


def dense_density(
    field: Field, resolution: int, radius: float, chunk_points: int, check: Callable[[], None] = _no_check
) -> torch.Tensor:
    """Density at every grid point, `chunk_points` at a time so memory stays bounded."""
    axis = grid_axis(resolution, radius, field.device)
    total = resolution**3
    volume = torch.empty(total, dtype=torch.float32, device=field.device)
    for start in range(0, total, chunk_points):
        check()
        flat = torch.arange(start, min(start + chunk_points, total), device=field.device)
        volume[start : start + len(flat)] = _finite(field.density(_points_at(flat, axis, resolution)))
    return volume.view(resolution, resolution, resolution)


def band_density(
    field: Field,
    resolution: int,
    radius: float,
    threshold: float,
    chunk_points: int,
    check: Callable[[], None] = _no_check,
    *,
    coarse_stride: int = COARSE_STRIDE,
    band_log_margin: float = BAND_LOG_MARGIN,
) -> torch.Tensor:
    """Grid densities exact near the surface, interpolated from a coarse grid elsewhere.

    The coarse grid has a point every `coarse_stride` fine voxels; a coarse cell is near the
    surface when its corners come within `band_log_margin` of the threshold in log-density."""
    device = field.device
    coarse_size = coarse_size_for(resolution, coarse_stride)
    coarse = dense_density(field, coarse_size, radius, chunk_points, check)

    # A coarse cell is active when its corners straddle the threshold or come near it.
    log_density = coarse.clamp_min(1e-30).log() - math.log(threshold)
    corner_max = F.max_pool3d(log_density[None, None], kernel_size=2, stride=1)[0, 0]
    corner_min = -F.max_pool3d(-log_density[None, None], kernel_size=2, stride=1)[0, 0]
    near = (corner_max > -band_log_margin) & (corner_min < band_log_margin)
    active = F.max_pool3d(near[None, None].float(), kernel_size=3, stride=1, padding=1)[0, 0] > 0
    share = float(active.float().mean())
    if share >= DENSE_SHARE:
        # Near the threshold almost everywhere (a flat, noisy field): the same densities, without
        # the band's interpolation and index bookkeeping, which would then cost more than it saves.
        logger.debug("band: %.1f%% of the coarse cells active; querying the dense grid", 100 * share)
        return dense_density(field, resolution, radius, chunk_points, check)
    volume = F.interpolate(coarse[None, None], size=(resolution,) * 3, mode="trilinear", align_corners=True)[0, 0]

    # Every fine grid point belongs to the coarse cell below it (the last point to the last cell).
    cells = coarse_size - 1
    fine_to_cell = (
        (torch.arange(resolution, device=device, dtype=torch.float64) * cells / (resolution - 1))
        .floor()
        .long()
        .clamp_max(cells - 1)
    )
    mask = active[fine_to_cell][:, fine_to_cell][:, :, fine_to_cell]
    flat = mask.flatten().nonzero().squeeze(1)
    logger.debug(
        "band: %d of %d grid points evaluated (%.1f%%)", len(flat), mask.numel(), 100 * len(flat) / mask.numel()
    )
    axis = grid_axis(resolution, radius, device)
    volume = volume.flatten()
    for chunk in flat.split(chunk_points):
        check()
        if len(chunk):  # no active cell at all (the threshold is far from every density): nothing to query
            volume[chunk] = _finite(field.density(_points_at(chunk, axis, resolution)))
    return volume.view(resolution, resolution, resolution)


def coarse_size_for(resolution: int, coarse_stride: int = COARSE_STRIDE) -> int:
    """Points per axis of the band's coarse grid over a fine grid of `resolution` points."""
    return math.ceil((resolution - 1) / coarse_stride) + 1


def _finite(density: torch.Tensor) -> torch.Tensor:
    """float32 densities with NaN read as empty space and overflow capped at DENSITY_CAP."""
    return torch.nan_to_num(density.float(), nan=0.0, posinf=DENSITY_CAP, neginf=0.0)


def _points_at(flat: torch.Tensor, axis: torch.Tensor, resolution: int) -> torch.Tensor:
    """Model-space points of flat grid indices (first axis slowest)."""
    i = flat // (resolution * resolution)
    j = (flat // resolution) % resolution
    k = flat % resolution
    return torch.stack((axis[i], axis[j], axis[k]), dim=1)


def weld(
    vertices: torch.Tensor, faces: torch.Tensor, grid_points: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the copies of each marching-cubes vertex, drop faces that collapse and unused vertices.

    Every marching-cubes vertex lies on one grid edge (at most one coordinate is fractional), so
    the edge it lies on names it exactly: floor + ceil per axis is 2i+1 inside the edge from i to
    i+1 and 2i at a grid point. Keying on that, not on rounded positions, also merges copies that
    two cubes computed from opposite ends of the edge and that differ in the last bit.

    `grid_points` (per axis, when the caller knows the grid) bounds those codes, so the key needs
    no read-back of the largest one; the input's checks are read after the first unique, which waits
    for the device anyway, so on the GPU they cost no synchronisation of their own.
    """
    fractional = (vertices != vertices.round()).sum(dim=1)
    codes = (vertices.floor() + vertices.ceil()).long()
    if grid_points is not None:
        span = 2 * grid_points - 1
    else:
        span = int(codes.max().item()) + 1 if len(codes) else 1
    misfit = (fractional > 1).any()
    if len(codes):
        misfit = misfit | (codes.min() < 0) | (codes.max() >= span)
    keys = (codes[:, 0] * span + codes[:, 1]) * span + codes[:, 2]
    unique_keys, inverse = torch.unique(keys, return_inverse=True)
    if bool(misfit):
        raise ValueError("weld expects marching-cubes vertices: each on a grid edge, in index coordinates of the grid")
    merged = torch.zeros((len(unique_keys), 3), dtype=vertices.dtype, device=vertices.device)
    merged.index_copy_(0, inverse, vertices)
    faces = inverse[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    used, remap = torch.unique(faces, return_inverse=True)
    return merged[used], remap.view(-1, 3)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals, float32 (+Y where a vertex only touches zero-area faces)."""
    faces = faces.long()
    a, b, c = vertices.float()[faces].unbind(1)
    face_normals = torch.linalg.cross(b - a, c - a)  # length = twice the area: larger faces weigh more
    normals = a.new_zeros((len(vertices), 3))
    normals.index_add_(0, faces.reshape(-1), face_normals.repeat_interleave(3, dim=0))
    length = normals.norm(dim=1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], device=normals.device)
    return torch.where(length > 0, normals / length.clamp_min(1e-30), up)


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about `target_faces` (fast-simplification), before colours are queried."""
    import fast_simplification  # type: ignore[import-untyped]

    reduction = 1.0 - target_faces / len(faces)
    points, triangles = fast_simplification.simplify(
        vertices.astype(np.float32), faces.astype(np.int32), target_reduction=reduction
    )
    return points.astype(np.float32), triangles.astype(np.int32)


class _StageClock:
    """Adds wall time per stage to a timings dict, syncing the device first so times are honest."""

    def __init__(self, timings: dict[str, float] | None, sync: Callable[[], None] | None) -> None:
        self.timings = timings
        self.sync = sync

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                if self.sync is not None:
                    self.sync()
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
