"""GLBs as Blender imports them, shared by tests/test_compact_glb.py and benchmarks/glb_wire.py: a
realistic vertex-coloured mesh, Blender's importer run in a subprocess (this venv's bpy), and the
comparison of two imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from image_to_3d_dev.analytic_field import AnalyticField
from remote.extraction import Mesh, extract_mesh

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


def blender_import(paths: list[Path], runs: int) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", BLENDER_IMPORT, str(runs), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=1200,
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
