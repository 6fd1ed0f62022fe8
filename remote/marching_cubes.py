"""Marching cubes with one output convention, whichever library runs it.

torchmcubes runs on the GPU when it is installed with CUDA (the Modal image builds it); elsewhere
PyMCubes runs on the CPU. Both answer here in the same form:

- vertices: float32 (V, 3) in index coordinates ordered (axis0, axis1, axis2) of the volume;
- faces: int64 (F, 3), counter-clockwise seen from the side where the volume is BELOW the threshold,
  so for a density that is high inside, normals point out of the object.

PyMCubes already returns that (checked in tests/test_extraction.py). torchmcubes returns its vertices
as (dim2, dim1, dim0) and a triangle soup; we reorder the axes, which mirrors the mesh, so the
winding is flipped back (checked on a GPU by benchmarks/pipeline.py --check-mc).
"""

from __future__ import annotations

import numpy as np
import torch

try:  # torchmcubes is optional: only CUDA builds of it are used.
    import torchmcubes as _torchmcubes
except ImportError:  # pragma: no cover - depends on the machine
    _torchmcubes = None


def backend_for(volume: torch.Tensor) -> str:
    """Name of the library that `marching_cubes` will use for this volume."""
    if _torchmcubes is not None and volume.is_cuda:
        return "torchmcubes-cuda"
    return "pymcubes"


def marching_cubes(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface where `volume` crosses `threshold`; results on the volume's device (see module doc)."""
    if backend_for(volume) == "torchmcubes-cuda":
        return _torchmcubes_cuda(volume, threshold)
    return _pymcubes(volume, threshold)


def _torchmcubes_cuda(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    assert _torchmcubes is not None
    vertices, faces = _torchmcubes.marching_cubes(volume.float().contiguous(), float(threshold))
    vertices = vertices[:, [2, 1, 0]]  # (dim2, dim1, dim0) -> (axis0, axis1, axis2): a mirror
    faces = faces.long()[:, [0, 2, 1]]  # the mirror flipped the winding; flip it back
    return vertices, faces


def _pymcubes(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    import mcubes

    array = volume.detach().float().cpu().numpy()
    vertices, faces = mcubes.marching_cubes(array, float(threshold))
    return (
        torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(volume.device),
        torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64)).to(volume.device),
    )
