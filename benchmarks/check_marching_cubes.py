"""Check, on a CUDA machine with torchmcubes, that both marching-cubes backends agree.

    python benchmarks/check_marching_cubes.py

Runs torchmcubes (CUDA, in slabs) and PyMCubes (CPU) on the same asymmetric volume and prints the
surface distance between them, their vertex centroids and signed volumes (positive = outward).
Exits non-zero if they disagree.
"""

from __future__ import annotations

import sys

import torch

from remote import marching_cubes as mc
from remote.extraction import weld


def signed_volume(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    a, b, c = (vertices[faces[:, i]].double() for i in range(3))
    return float(torch.einsum("ij,ij->i", a, torch.cross(b, c, dim=1)).sum() / 6)


def main() -> int:
    axis = torch.linspace(-1, 1, 200)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    volume = 30.0 * torch.exp(-4 * (((x - 0.2) ** 2 + y**2 + z**2).sqrt() - 0.5)) + 10 * (z > 0.6) * (x.abs() < 0.1)
    cpu_v, cpu_f = mc.marching_cubes(volume, 25.0)
    gpu_v, gpu_f = mc.marching_cubes(volume.cuda(), 25.0)
    print("backend:", mc.backend_for(volume.cuda()))
    gpu_v, gpu_f = weld(gpu_v, gpu_f)
    gpu_v, gpu_f = gpu_v.cpu(), gpu_f.cpu()
    distance = (
        torch.cdist(gpu_v[:20000].double(), cpu_v.double(), compute_mode="donot_use_mm_for_euclid_dist")
        .min(dim=1)
        .values
    )
    print(f"vertices cpu {len(cpu_v)} gpu {len(gpu_v)}; faces cpu {len(cpu_f)} gpu {len(gpu_f)}")
    print(f"centroids cpu {cpu_v.mean(0).tolist()} gpu {gpu_v.mean(0).tolist()}")
    print(f"signed volume cpu {signed_volume(cpu_v, cpu_f):.1f} gpu {signed_volume(gpu_v, gpu_f):.1f}")
    print(f"gpu->cpu vertex distance max {distance.max():.2e} voxels")
    agree = (
        distance.max() < 2e-3 and signed_volume(gpu_v, gpu_f) > 0 and abs(len(gpu_f) - len(cpu_f)) <= 0.01 * len(cpu_f)
    )
    print("AGREE" if agree else "DISAGREE")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
