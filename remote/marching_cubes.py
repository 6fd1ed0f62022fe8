"""Marching cubes with one output convention, whichever library runs it.

torchmcubes runs on the GPU when it is installed with CUDA (the Modal image builds it); elsewhere
PyMCubes runs on the CPU. Both answer here in the same form:

- vertices: float32 (V, 3) in index coordinates ordered (axis0, axis1, axis2) of the volume, each
  on a grid edge (at most one coordinate fractional), which is what the weld keys on;
- faces: int64 (F, 3), counter-clockwise seen from the side where the volume is BELOW the threshold,
  so for a density that is high inside, normals point out of the object.

PyMCubes already returns that (checked in tests/test_extraction.py). torchmcubes' CUDA kernel
(cxx/mcubes_cuda.cu) builds each cube's corners as make_float3(jx, jy, jz) from vol[jz][jy][jx], so
its vertices come as (dim2, dim1, dim0), three per face (a triangle soup, welded by the caller);
it marks a corner "in" when vol < threshold, as in Paul Bourke's tables. After reordering the axes
its corner order [0, 1, 2] already points out: checked on an H100 by the CUDA test in
tests/test_extraction.py (same surface, vertex count after the weld and signed volume as PyMCubes).
"""

from __future__ import annotations

import numpy as np
import torch

from remote.true_span import true_span

try:  # torchmcubes is optional: only CUDA builds of it are used.
    import torchmcubes as _torchmcubes  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the machine
    _torchmcubes = None


SLAB_BUDGET_BYTES = 512 * 2**20
# Corner order of torchmcubes' faces that points normals out, after our axis reorder
# (checked on a GPU with benchmarks/check_marching_cubes.py).
TORCHMCUBES_WINDING = [0, 1, 2]


def backend_for(volume: torch.Tensor) -> str:
    """Name of the library that `marching_cubes` will use for this volume."""
    if _torchmcubes is not None and volume.is_cuda:
        return "torchmcubes-cuda"
    return "pymcubes"


def marching_cubes(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface where `volume` crosses `threshold`; results on the volume's device (see module doc).

    Only the box of cells that can hold the surface is meshed (`surface_box`): the cells outside it
    give no triangle in either library, so the surface is the whole volume's, while torchmcubes'
    candidate buffer, its slabs and their synchronisations shrink with the box (and PyMCubes'
    copy to the host with it)."""
    box = surface_box(volume, threshold)
    if box is None:  # no sample reaches the threshold: nothing to mesh
        return volume.new_zeros((0, 3)), torch.zeros((0, 3), dtype=torch.long, device=volume.device)
    crop = volume[tuple(slice(start, stop) for start, stop in box)]
    if backend_for(volume) == "torchmcubes-cuda":
        vertices, faces = _torchmcubes_cuda(crop, threshold)
    else:
        vertices, faces = _pymcubes(crop, threshold)
    starts = [start for start, _ in box]
    if any(starts) and len(vertices):
        vertices = vertices + torch.tensor(starts, dtype=vertices.dtype, device=vertices.device)
    return vertices, faces


def surface_box(volume: torch.Tensor, threshold: float) -> list[tuple[int, int]] | None:
    """Per axis, the (start, stop) slice of the samples whose cells can hold the surface, or None
    when no sample reaches `threshold`.

    A cell gives triangles only when one of its corners is at or above the threshold (at or above,
    not above: the libraries disagree on which side equality falls). Such corners lie inside the
    bounding box of the samples >= threshold, so the cells touching that box, one sample more on
    each side, hold the whole surface. One synchronisation, for the six numbers."""
    size = volume.shape
    numbers: list[torch.Tensor] = []
    for axis in range(3):
        others = tuple(other for other in range(3) if other != axis)
        numbers += true_span(volume.amax(dim=others) >= threshold)
    bounds = torch.stack(numbers).tolist()
    if bounds[1] < 0:
        return None
    return [(max(bounds[2 * axis] - 1, 0), min(bounds[2 * axis + 1] + 2, size[axis])) for axis in range(3)]


def _torchmcubes_cuda(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torchmcubes in slabs along axis 0: it allocates 144 bytes per cell of its input for vertex
    candidates (2.4 GB at 256^3), so slabs keep that under SLAB_BUDGET_BYTES. Slabs share one
    layer of samples; the duplicate vertices there are merged by the caller's weld."""
    assert _torchmcubes is not None
    volume = volume.float().contiguous()
    cells_per_layer = volume.shape[1] * volume.shape[2]
    layers = max(2, SLAB_BUDGET_BYTES // (144 * cells_per_layer))
    all_vertices, all_faces, offset = [], [], 0
    for start in range(0, volume.shape[0] - 1, layers - 1):
        slab = volume[start : start + layers]
        vertices, faces = _torchmcubes.marching_cubes(slab, float(threshold))
        if len(faces) == 0:
            continue
        vertices = vertices[:, [2, 1, 0]]  # (dim2, dim1, dim0) -> (axis0, axis1, axis2)
        vertices[:, 0] += start
        all_vertices.append(vertices)
        all_faces.append(faces.long()[:, TORCHMCUBES_WINDING] + offset)
        offset += len(vertices)
    if not all_faces:
        return volume.new_zeros((0, 3)), torch.zeros((0, 3), dtype=torch.long, device=volume.device)
    return torch.cat(all_vertices), torch.cat(all_faces)


def _pymcubes(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    import mcubes  # type: ignore[import-untyped]

    array = volume.detach().float().cpu().numpy()
    vertices, faces = mcubes.marching_cubes(array, float(threshold))
    return (
        torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(volume.device),
        torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64)).to(volume.device),
    )
