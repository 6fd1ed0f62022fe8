"""The GLB on the wire: bytes, encode time, gzip, Blender's import time and the compact file's error.

    uv run python benchmarks/glb_wire.py [--resolution 256] [--image tests/fixtures/examples/chair.png]
        [--runs 7] [--draco] [--json]

The mesh is realistic in size and content without a model: the analytic body + nose + fin scene of
devtools/image_to_3d_dev/analytic_field.py (91k vertices and 182k faces at resolution 256, like the fitted scene's),
coloured by projecting the image along the camera axis, plus a smooth ripple and a little noise so
the colours are continuous like the model's. For the full GLB (`mesh_to_glb(normals=False)`, what
the pipeline sent before) and the compact one (`compact_mesh_to_glb` with the grid), it prints the
bytes, the median encode ms, gzip level 1 (the server's) bytes and ms, and the import time in real
bpy (Blender's own glTF importer, in a subprocess, median of --blender-runs imports after one warm
import). It then compares what Blender imported from both: the largest vertex distance in voxels
(half a voxel is the limit) and the largest difference of the colours Blender keeps (sRGB bytes).
`--draco` adds KHR_draco_mesh_compression through DracoPy (`uv run --with dracopy==2.2.0 ...`), for
the record: it is not what the server sends (see docs/api.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from image_to_3d_dev.analytic_field import AnalyticField
from image_to_3d_dev.glb_checks import blender_import, compare_imports, realistic_mesh
from image_to_3d_dev.paths import EXAMPLES
from image_to_3d_dev.timing import median_ms
from remote.extraction import Mesh
from remote.compact_glb import compact_mesh_to_glb
from remote.glb import mesh_to_glb


def draco_glb(mesh: Mesh) -> bytes:
    """KHR_draco_mesh_compression (DracoPy, 14-bit positions, 8-bit sRGB-byte colours decoded as
    linear; for size and decode-time comparison only)."""
    import DracoPy  # type: ignore[import-not-found]

    from remote.glb import GENERATOR, MATERIAL, glb_container, srgb_to_linear

    vertices = np.ascontiguousarray(mesh.vertices[:, [1, 2, 0]])
    colours = np.rint(srgb_to_linear(np.clip(mesh.colors, 0, 1)) * 255).astype(np.uint8)
    encoded = DracoPy.encode(vertices, mesh.faces, quantization_bits=14, compression_level=1, colors=colours)
    decoded = DracoPy.decode(encoded)
    ids = {attribute["attribute_type"]: attribute["unique_id"] for attribute in decoded.attributes}
    count, faces = len(decoded.points), len(decoded.faces)
    binary = np.frombuffer(encoded + b"\0" * (-len(encoded) % 4), np.uint8)
    low, high = decoded.points.min(0).tolist(), decoded.points.max(0).tolist()
    gltf = {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "extensionsUsed": ["KHR_draco_mesh_compression"],
        "extensionsRequired": ["KHR_draco_mesh_compression"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "object", "mesh": 0}],
        "meshes": [
            {
                "name": "object",
                "primitives": [
                    {
                        "attributes": {"POSITION": 1, "COLOR_0": 2},
                        "indices": 0,
                        "mode": 4,
                        "material": 0,
                        "extensions": {
                            "KHR_draco_mesh_compression": {
                                "bufferView": 0,
                                "attributes": {"POSITION": ids[0], "COLOR_0": ids[2]},
                            }
                        },
                    }
                ],
            }
        ],
        "materials": [MATERIAL],
        "accessors": [
            {"componentType": 5125, "count": 3 * faces, "type": "SCALAR"},
            {"componentType": 5126, "count": count, "type": "VEC3", "min": low, "max": high},
            {"componentType": 5121, "normalized": True, "count": count, "type": "VEC3"},
        ],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(encoded)}],
        "buffers": [{"byteLength": len(binary)}],
    }
    return glb_container(gltf, binary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--image", type=Path, default=EXAMPLES / "chair.png")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--blender-runs", type=int, default=3)
    parser.add_argument("--draco", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    mesh = realistic_mesh(args.resolution, args.image)
    radius = AnalyticField.radius
    voxel = 2 * radius / (args.resolution - 1)
    writers: dict[str, Callable[[], bytes]] = {
        "full": lambda: mesh_to_glb(mesh, normals=False),
        "compact": lambda: compact_mesh_to_glb(mesh, (args.resolution, radius)),
    }
    if args.draco:
        writers["draco"] = lambda: draco_glb(mesh)
    report: dict[str, Any] = {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "resolution": args.resolution}
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for name, write in writers.items():
            data, encode_ms = median_ms(write, args.runs)
            zipped, gzip_ms = median_ms(lambda: gzip.compress(data, 1, mtime=0), args.runs)
            paths.append(Path(folder) / f"{name}.glb")
            paths[-1].write_bytes(data)
            report[name] = {
                "bytes": len(data),
                "encode_ms": round(encode_ms, 2),
                "gzip_bytes": len(zipped),
                "gzip_ms": round(gzip_ms, 2),
            }
        imported = blender_import(paths, args.blender_runs)
        report["blender"] = imported["blender"]
        for name, path in zip(writers, paths):
            report[name]["blender_import_ms"] = round(imported["files"][str(path)]["import_s"] * 1000, 1)
            report[name]["blender_colour"] = imported["files"][str(path)]["colour"]
            if name != "full":
                report[name].update(compare_imports(paths[0], path, voxel))
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"mesh: {report['vertices']} vertices, {report['faces']} faces, resolution {args.resolution}; "
        f"Blender {report['blender']}"
    )
    for name in writers:
        row = report[name]
        extra = ""
        if "max_distance_voxels" in row:
            extra = f"; vs full: {row['max_distance_voxels']:.4f} voxel, {row['max_colour_srgb_bytes']:.2f} sRGB bytes"
        print(
            f"{name:8s} {row['bytes']:>9,} B encode {row['encode_ms']:6.1f} ms | gzip-1 {row['gzip_bytes']:>9,} B "
            f"{row['gzip_ms']:6.1f} ms | Blender import {row['blender_import_ms']:7.1f} ms{extra}"
        )


if __name__ == "__main__":
    main()
