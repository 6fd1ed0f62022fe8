"""The GLB on the wire: bytes, encode time, gzip, Blender's import time and the compact file's error.

    uv run python benchmarks/glb_wire.py [--resolution 256] [--image tests/fixtures/examples/chair.png]
        [--runs 7] [--draco] [--json]

The mesh is realistic in size and content without a model: the analytic body + nose + fin scene of
tests/analytic_field.py (91k vertices and 182k faces at resolution 256, like the fitted scene's),
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
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from analytic_field import AnalyticField  # noqa: E402
from remote.extraction import Mesh, extract_mesh  # noqa: E402
from remote.glb import compact_mesh_to_glb, mesh_to_glb  # noqa: E402

# Imports each GLB given (argv[1:]) into an empty scene, `runs` times, and prints one JSON line:
# per file the median import seconds, and the vertices (world space, as the add-on bakes them) and
# colours (sRGB bytes, what Blender keeps) of the last import, saved to <file>.npz.
BLENDER_IMPORT = textwrap.dedent(
    """
    import json, statistics, sys, time
    import bpy
    import numpy as np

    runs = int(sys.argv[1])
    result = {"blender": bpy.app.version_string, "files": {}}
    for path in sys.argv[2:]:
        times = []
        for _ in range(runs + 1):
            bpy.ops.wm.read_factory_settings(use_empty=True)
            start = time.perf_counter()
            outcome = bpy.ops.import_scene.gltf(filepath=path)
            times.append(time.perf_counter() - start)
            assert "FINISHED" in outcome, outcome
        obj = [o for o in bpy.data.objects if o.type == "MESH"][0]
        mesh = obj.data
        points = np.zeros(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", points)
        matrix = np.array(obj.matrix_world)
        points = points.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
        colour = mesh.color_attributes[mesh.color_attributes.render_color_index]
        srgb = np.zeros(len(colour.data) * 4, np.float32)
        colour.data.foreach_get("color_srgb", srgb)
        loops = np.zeros(len(mesh.loops), np.int64)
        mesh.loops.foreach_get("vertex_index", loops)
        faces = np.zeros(len(mesh.polygons) * 3, np.int64)
        mesh.polygons.foreach_get("vertices", faces)
        np.savez(path + ".npz", points=points, srgb=srgb.reshape(-1, 4), domain=colour.domain,
                 loops=loops, faces=faces.reshape(-1, 3))
        result["files"][path] = {
            "import_s": statistics.median(times[1:] or times), "vertices": len(mesh.vertices),
            "faces": len(mesh.polygons), "colour": [colour.domain, colour.data_type],
            "extensions": [],
        }
    print("RESULT" + json.dumps(result))
    """
)


def realistic_mesh(resolution: int, image: Path) -> Mesh:
    """The analytic scene at `resolution`, coloured from `image` (see the module docstring)."""
    pixels = np.asarray(PIL.Image.open(image).convert("RGB").resize((512, 512)), dtype=np.float32) / 255
    texture = torch.from_numpy(pixels)

    class Textured(AnalyticField):
        def color(self, points: torch.Tensor) -> torch.Tensor:
            u = ((points[:, 1] / self.radius + 1) / 2 * 511).clamp(0, 511).long()
            v = ((1 - points[:, 2] / self.radius) / 2 * 511).clamp(0, 511).long()
            ripple = 0.03 * torch.sin(points[:, 0:1] * 37 + points[:, 1:2] * 23)
            noise = 0.004 * torch.randn(len(points), 3, generator=torch.Generator().manual_seed(0))
            return (texture[v, u] + ripple + noise).clamp(0, 1)

    return extract_mesh(Textured(), resolution=resolution, normals=False)


def median_ms(function: Callable[[], Any], runs: int) -> tuple[Any, float]:
    result = function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - start) * 1000)
    return result, statistics.median(times)


def draco_glb(mesh: Mesh) -> bytes:
    """KHR_draco_mesh_compression (DracoPy, 14-bit positions, 8-bit sRGB-byte colours decoded as
    linear; for size and decode-time comparison only)."""
    import DracoPy  # type: ignore[import-not-found]

    from remote.glb import GENERATOR, MATERIAL, _glb_container, srgb_to_linear

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
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"name": "object", "mesh": 0}],
        "meshes": [{"name": "object", "primitives": [{
            "attributes": {"POSITION": 1, "COLOR_0": 2}, "indices": 0, "mode": 4, "material": 0,
            "extensions": {"KHR_draco_mesh_compression": {"bufferView": 0, "attributes": {"POSITION": ids[0], "COLOR_0": ids[2]}}},
        }]}],
        "materials": [MATERIAL],
        "accessors": [
            {"componentType": 5125, "count": 3 * faces, "type": "SCALAR"},
            {"componentType": 5126, "count": count, "type": "VEC3", "min": low, "max": high},
            {"componentType": 5121, "normalized": True, "count": count, "type": "VEC3"},
        ],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(encoded)}],
        "buffers": [{"byteLength": len(binary)}],
    }
    return _glb_container(gltf, binary)


def blender_import(paths: list[Path], runs: int) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", BLENDER_IMPORT, str(runs), *map(str, paths)],
        capture_output=True, text=True, timeout=1200,
    )
    if run.returncode != 0:
        raise SystemExit(f"Blender exited with {run.returncode}:\n{run.stderr[-3000:]}")
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def compare_imports(full: Path, other: Path, voxel: float) -> dict[str, float]:
    """Largest vertex distance (voxels) and colour difference (sRGB bytes) between two imports,
    vertex by vertex when Blender kept the order (it does for both our files), else by nearest."""
    a, b = np.load(str(full) + ".npz"), np.load(str(other) + ".npz")
    if len(a["points"]) == len(b["points"]) and np.array_equal(a["faces"], b["faces"]):
        order = np.arange(len(a["points"]))
    else:
        from scipy.spatial import cKDTree  # type: ignore[import-untyped]

        order = cKDTree(b["points"]).query(a["points"])[1]
    distance = np.linalg.norm(a["points"] - b["points"][order], axis=1).max() / voxel
    colour_a, colour_b = a["srgb"], b["srgb"]
    if str(a["domain"]) == "CORNER":
        colour_a = colour_a[np.argsort(a["loops"], kind="stable")][np.unique(np.sort(a["loops"]), return_index=True)[1]]
    if str(b["domain"]) == "CORNER":
        colour_b = colour_b[np.argsort(b["loops"], kind="stable")][np.unique(np.sort(b["loops"]), return_index=True)[1]]
    colour = np.abs(colour_a[:, :3] - colour_b[order, :3]).max() * 255
    return {"max_distance_voxels": float(distance), "max_colour_srgb_bytes": float(colour)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--image", type=Path, default=ROOT / "tests/fixtures/examples/chair.png")
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
            report[name] = {"bytes": len(data), "encode_ms": round(encode_ms, 2), "gzip_bytes": len(zipped),
                            "gzip_ms": round(gzip_ms, 2)}
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
    print(f"mesh: {report['vertices']} vertices, {report['faces']} faces, resolution {args.resolution}; "
          f"Blender {report['blender']}")
    for name in writers:
        row = report[name]
        extra = ""
        if "max_distance_voxels" in row:
            extra = f"; vs full: {row['max_distance_voxels']:.4f} voxel, {row['max_colour_srgb_bytes']:.2f} sRGB bytes"
        print(f"{name:8s} {row['bytes']:>9,} B encode {row['encode_ms']:6.1f} ms | gzip-1 {row['gzip_bytes']:>9,} B "
              f"{row['gzip_ms']:6.1f} ms | Blender import {row['blender_import_ms']:7.1f} ms{extra}")


if __name__ == "__main__":
    main()
