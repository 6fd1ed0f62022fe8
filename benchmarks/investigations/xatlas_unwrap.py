"""Why the texture's charts are a box projection and not xatlas: time xatlas on the mesh the
pipeline would texture (the analytic scene at resolution 256, decimated), against our unwrap.

xatlas is not a dependency; run this with it added for the one run:

    uv run --with xatlas==0.0.11 python benchmarks/investigations/xatlas_unwrap.py --target-faces 50000

It times xatlas's whole generate (charts and packing), xatlas packing our charts alone (a UV mesh),
and our unwrap (charts, fold check, packing), each once on the CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import xatlas  # type: ignore[import-not-found]

from image_to_3d_dev.analytic_field import AnalyticField
from remote.extraction import extract_mesh
from remote.texture.folds import folded_faces
from remote.texture.pack import pack
from remote.texture.unwrap import box_charts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-faces", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    mesh = extract_mesh(AnalyticField(), resolution=256, target_faces=args.target_faces, normals=False)
    print(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces")

    start = time.perf_counter()
    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices, mesh.faces.astype(np.uint32))
    options = xatlas.PackOptions()
    options.resolution = args.size
    atlas.generate(xatlas.ChartOptions(), options)
    print(f"xatlas charts + packing: {time.perf_counter() - start:.2f} s, {atlas.chart_count} charts, "
          f"{atlas.width}x{atlas.height}, utilisation {atlas.utilization:.2f}")  # fmt: skip

    start = time.perf_counter()
    charts = box_charts(mesh.vertices, mesh.faces)
    folded = folded_faces(
        torch.from_numpy(charts.uv), torch.from_numpy(charts.faces), torch.from_numpy(charts.face_chart)
    )
    uv = pack(charts, args.size)
    print(f"ours (box charts, folds, shelves): {time.perf_counter() - start:.2f} s, {charts.count} charts, "
          f"{int(folded.sum())} folded faces")  # fmt: skip

    start = time.perf_counter()
    packing = xatlas.Atlas()
    packing.add_uv_mesh((uv * args.size).astype(np.float32), charts.faces.astype(np.uint32))
    packing.generate(xatlas.ChartOptions(), options)
    print(f"xatlas packing our charts: {time.perf_counter() - start:.2f} s, {packing.width}x{packing.height}, "
          f"utilisation {packing.utilization:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
