"""Mesh -> GLB alone (remote/glb.py), on the CPU: the step must stay within a few ms of the 80 ms
image -> GLB budget, and a profile of the pipeline hides it among the GPU stages.

    uv run python benchmarks/glb_export.py [--resolution 200] [--runs 30]

Builds a realistic closed mesh (marching cubes of a bumpy sphere, ~135k vertices / ~270k faces at
200^3, random colours) and prints the median ms over warm runs of mesh_to_glb(normals=False) (what
the pipeline writes), normals=True with the normals on the mesh (as extract_mesh leaves them), and
normals=True on a mesh without them (vertex_normals on the CPU is then part of the time), and the
GLB's size.
"""

from __future__ import annotations

import argparse

import mcubes
import numpy as np

import torch

from image_to_3d_dev.timing import median_ms
from remote.extraction import Mesh, vertex_normals
from remote.glb import mesh_to_glb


def bumpy_sphere(resolution: int) -> Mesh:
    axis = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    radius = np.sqrt(x * x + y * y + z * z)
    bumps = 0.05 * np.sin(7 * x) * np.sin(5 * y) * np.sin(6 * z)
    vertices, faces = mcubes.marching_cubes(0.84 + bumps - radius, 0.0)
    vertices = (vertices / (resolution - 1) * 2 - 1).astype(np.float32)
    colors = np.random.default_rng(0).random((len(vertices), 3), dtype=np.float32)
    return Mesh(vertices=vertices, faces=faces.astype(np.int32), colors=colors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    bare = bumpy_sphere(args.resolution)
    normals = vertex_normals(torch.from_numpy(bare.vertices), torch.from_numpy(bare.faces)).numpy()
    with_normals = Mesh(vertices=bare.vertices, faces=bare.faces, colors=bare.colors, normals=normals)
    print(f"{len(bare.vertices)} vertices, {len(bare.faces)} faces")
    cases = [
        ("normals=False", bare, False),
        ("normals=True, on the mesh", with_normals, True),
        ("normals=True, computed", bare, True),
    ]
    for label, mesh, write_normals in cases:
        size = len(mesh_to_glb(mesh, normals=write_normals))
        _, ms = median_ms(lambda: mesh_to_glb(mesh, normals=write_normals), args.runs)  # noqa: B023
        print(f"{label:26} {ms:7.2f} ms median of {args.runs}  {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
