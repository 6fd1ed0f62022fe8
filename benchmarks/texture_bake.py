"""Benchmark the textured GLB's added cost per stage, its size and how true its colours are.

    uv run python benchmarks/texture_bake.py --device cuda --scenes random fitted \
        --sizes 512 1024 2048 --resolution 256 --target-faces 50000 --runs 10 --json

For each scene (full-size random weights, or the fitted scene: the chair image's field fitted to the
analytic shape, as benchmarks/pipeline.py --random-weights [--fitted-scene] builds them; or the
analytic field itself, no model) the mesh is
extracted once as the pipeline does (band method, decimated to --target-faces), then for each atlas
size and image format the bake is timed per stage (median of warm runs): unwrap, rasterise,
texture_color (field query), dilate, encode, and glb (textured_mesh_to_glb); plus peak GPU memory.

Quality, per size (no timing):
- texel error: the decoded image at the texels whose centre lies on a face, against the field's
  colour at that surface point (mean |difference| over channels, sRGB, in % of full scale);
- surface error: the image read bilinearly (as a viewer does) at random points on the surface,
  against the field there (mean and 99th percentile): seams and margins included;
- unclaimed taps: the share of those bilinear reads' texels that no face claimed (only dilation
  coloured them): a seam without colour would show here.

`--whole` also times the whole textured request at the first size through Pipeline.generate with
texture_size (JPEG): decode, preprocess, model pass, extraction with decimation, bake, GLB.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from image_to_3d_dev.analytic_field import AnalyticField
from image_to_3d_dev.paths import EXAMPLES
from image_to_3d_dev.scenes import FITTED_THRESHOLD, random_weights_threshold, save_random_model, scene_code_for
from image_to_3d_dev.texture_checks import sample_bilinear, surface_samples
from image_to_3d_dev.timing import device_name, device_sync, free
from remote.extraction import extract_mesh, field_colors
from remote.glb import textured_mesh_to_glb
from remote.pipeline import GenerateOptions, Pipeline
from remote.texture import bake_texture
from remote.texture.bake import bake_atlas
from remote.texture.encode import to_bytes
from remote.triposr.weights import resolve_device

STAGES = ("unwrap", "rasterise", "texture_color", "dilate", "encode", "glb")
SURFACE_SAMPLES = 200_000


class FrothField:
    """A fragmented surface made on the CPU in seconds, like random weights' froth: a sum of random
    plane waves (wave number about 40 per model unit) cut at zero; colours vary smoothly."""

    radius = 0.87

    def __init__(self, device: torch.device, waves: int = 24, frequency: float = 40.0, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(waves, 3, generator=generator, dtype=torch.float64)
        directions /= directions.norm(dim=1, keepdim=True)
        scale = 0.5 + torch.rand(waves, 1, generator=generator, dtype=torch.float64)
        self.device = device
        self.waves = (directions * frequency * scale).float().to(device)
        self.phases = (torch.rand(waves, generator=generator) * 6.2832).to(device)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        value = torch.sin(points @ self.waves.T + self.phases).sum(dim=1) / len(self.phases) ** 0.5
        return torch.exp(3.0 * value) * 25.0  # threshold 25: the surface is value == 0

    def color(self, points: torch.Tensor) -> torch.Tensor:
        x, y, z = points.unbind(dim=1)
        return torch.stack((torch.sin(7 * x), torch.sin(5 * y), torch.cos(6 * z)), dim=1) * 0.5 + 0.5


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    report: dict = {"device": device_name(device), "scenes": {}}
    for scene in args.scenes:
        if scene in ("analytic", "froth"):
            report["scenes"][scene] = run_scene(args, scene, None, device)
            continue
        with tempfile.TemporaryDirectory() as folder:
            fit_image = Path(args.image) if scene == "fitted" else None
            model_dir = save_random_model(Path(folder), 3.0, fit_image, device)
            pipeline = Pipeline.load(model=model_dir, device=device.type)
            report["scenes"][scene] = run_scene(args, scene, pipeline, device)
            del pipeline
            free(device)
    print_table(report)
    if args.json:
        print(json.dumps(report))


def run_scene(args: argparse.Namespace, scene: str, pipeline: Pipeline | None, device: torch.device) -> dict:
    image_path = Path(args.image)
    if scene == "froth":  # no model: a fragmented surface, thousands of charts
        threshold = 25.0
        field = FrothField(device)
    elif pipeline is None:  # the analytic scene: no model, sharp red/blue colours (JPEG's worst case)
        threshold = FITTED_THRESHOLD
        field = AnalyticField(threshold=threshold, device=str(device))
    else:
        fitted = scene == "fitted"
        threshold = FITTED_THRESHOLD if fitted else random_weights_threshold(pipeline, image_path, args.resolution)
        field = pipeline.field(scene_code_for(pipeline, image_path))
    sync = device_sync(device)
    with torch.inference_mode():
        timings: dict[str, float] = {}
        mesh = extract_mesh(field, resolution=args.resolution, threshold=threshold, target_faces=args.target_faces,
                            normals=False, timings=timings, sync=sync)  # fmt: skip
    result: dict = {"threshold": threshold, "vertices": len(mesh.vertices), "faces": len(mesh.faces),
                    "extraction_with_decimation_s": timings["extraction"], "sizes": {}}  # fmt: skip
    print(f"{scene}: {len(mesh.faces)} faces (threshold {threshold:.4g})", flush=True)
    for size in args.sizes:
        figures: dict = {}
        for image_format in args.formats:
            figures[image_format] = time_bake(args, mesh, field, size, image_format, device, sync)
            print(
                f"  {size} {image_format}: "
                + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in figures[image_format]["stages"].items())
                + f", {figures[image_format]['glb_bytes'] / 1e6:.2f} MB",
                flush=True,
            )
        figures["unwrap_parts_ms"] = unwrap_parts(args, mesh, field, size, sync)
        print(f"  {size} unwrap parts (ms): {figures['unwrap_parts_ms']}", flush=True)
        figures["quality"] = quality(mesh, field, size, args.formats)
        print(f"  {size} quality: {figures['quality']}", flush=True)
        result["sizes"][size] = figures
    if args.whole and pipeline is not None:
        result["whole"] = time_whole(args, pipeline, image_path, threshold, device, sync)
        print(f"  whole textured request: {result['whole']}", flush=True)
    return result


def unwrap_parts(args, mesh, field, size: int, sync) -> dict:
    """The unwrap stage's parts, median of warm runs (ms): charts (box_charts: sides, adjacency,
    components, the UV copies), folds (folds.py on the field's device), charts_again (the second pass
    for folded faces, reusing sides and adjacency; 0 without folds), pack (shelves, on the CPU)."""
    from remote.texture.folds import folded_faces
    from remote.texture.pack import pack
    from remote.texture.unwrap import box_charts

    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    device = field.device
    runs: dict[str, list[float]] = {}
    for index in range(args.warmup + args.runs):
        parts: dict[str, float] = {}
        start = time.perf_counter()
        charts = box_charts(vertices, faces)
        parts["charts"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            folded = folded_faces(torch.from_numpy(charts.uv).to(device), torch.from_numpy(charts.faces).to(device),
                                  torch.from_numpy(charts.face_chart).to(device)).cpu().numpy()  # fmt: skip
        sync()
        parts["folds"] = time.perf_counter() - start
        start = time.perf_counter()
        if folded.any():
            charts = box_charts(vertices, faces, alone=folded, like=charts)
        parts["charts_again"] = time.perf_counter() - start
        start = time.perf_counter()
        pack(charts, size)
        parts["pack"] = time.perf_counter() - start
        if index >= args.warmup:
            for name, seconds in parts.items():
                runs.setdefault(name, []).append(seconds)
    result = {name: round(statistics.median(values) * 1000, 1) for name, values in runs.items()}
    return {**result, "charts_count": charts.count, "folded_faces": int(folded.sum())}


def time_bake(args, mesh, field, size: int, image_format: str, device: torch.device, sync) -> dict:
    """Median stage times over warm runs, the GLB's size and the peak GPU memory while baking."""
    runs: list[dict[str, float]] = []
    totals = []
    for index in range(args.warmup + args.runs):
        if index == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timings: dict[str, float] = {}
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            textured = bake_texture(mesh, field, size=size, image_format=image_format, timings=timings, sync=sync)
        glb_start = time.perf_counter()
        glb = textured_mesh_to_glb(textured)
        timings["glb"] = time.perf_counter() - glb_start
        if index >= args.warmup:
            runs.append(timings)
            totals.append(time.perf_counter() - start)
    return {
        "stages": {stage: statistics.median(run[stage] for run in runs) for stage in STAGES},
        "total_s": statistics.median(totals),
        "glb_bytes": len(glb),
        "image_bytes": len(textured.image),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


def quality(mesh, field, size: int, formats: list[str]) -> dict:
    with torch.inference_mode():
        baked = bake_atlas(mesh, field, size=size)
    pixels = (baked.atlas * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    raster = baked.raster
    texels = raster.texels.cpu().numpy()
    inside = raster.inside.cpu().numpy()
    expected_texels = baked.colours.cpu().numpy()
    claimed = np.zeros(size * size, dtype=bool)
    claimed[texels] = True

    charts = baked.charts
    vertices = np.asarray(mesh.vertices, dtype=np.float64)[charts.vertex_map]
    face, weights = surface_samples(charts.faces, SURFACE_SAMPLES)
    points = (vertices[charts.faces[face]] * weights[:, :, None]).sum(axis=1)
    uv = (baked.uv[charts.faces[face]].astype(np.float64) * weights[:, :, None]).sum(axis=1)
    with torch.inference_mode():
        expected_points = field_colors(field, torch.from_numpy(points).float().to(field.device)).cpu().numpy()
    x = np.clip(uv[:, 0] * size - 0.5, 0, size - 1)
    y = np.clip(uv[:, 1] * size - 0.5, 0, size - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), size - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), size - 2)
    taps = np.stack([(y0 + dy) * size + x0 + dx for dy in (0, 1) for dx in (0, 1)], axis=1)
    figures: dict = {
        "charts": charts.count,
        "utilisation": float(inside.sum() / size**2),
        "unclaimed_tap_share": float((~claimed[taps]).mean()),
    }
    for image_format in formats:
        data, _ = to_bytes(pixels, image_format)
        decoded = np.asarray(PIL.Image.open(io.BytesIO(data)), dtype=np.float64) / 255.0
        texel_error = np.abs(decoded.reshape(-1, 3)[texels][inside] - expected_texels[inside])
        surface_error = np.abs(sample_bilinear(decoded, uv) - expected_points).mean(axis=1)
        figures[image_format] = {
            "texel_error_mean_pct": float(texel_error.mean() * 100),
            "surface_error_mean_pct": float(surface_error.mean() * 100),
            "surface_error_p99_pct": float(np.quantile(surface_error, 0.99) * 100),
        }
    return figures


def time_whole(args, pipeline: Pipeline, image_path: Path, threshold: float, device: torch.device, sync) -> dict:
    """The whole textured request, image file to GLB bytes: Pipeline.generate with texture_size (the
    product's path: JPEG, the stages as Server-Timing reports them)."""
    size = args.sizes[0]
    options = GenerateOptions(resolution=args.resolution, threshold=threshold, remove_background="never",
                              target_faces=args.target_faces, texture_size=size)  # fmt: skip
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    for index in range(args.warmup + args.runs):
        sync()
        start = time.perf_counter()
        result = pipeline.generate(image_path, options)
        sync()
        if index >= args.warmup:
            totals.append(time.perf_counter() - start)
            for stage, seconds in result.timings.items():
                stages.setdefault(stage, []).append(seconds)
    return {
        "size": size,
        "format": "jpeg",
        "total_s": statistics.median(totals),
        "glb_bytes": len(result.glb),
        "stages": {stage: statistics.median(values) for stage, values in stages.items()},
    }


def print_table(report: dict) -> None:
    print(f"\ndevice: {report['device']}")
    for scene, result in report["scenes"].items():
        print(f"\n{scene}: {result['faces']} faces, {result['vertices']} vertices")
        formats = [name for name in next(iter(result["sizes"].values())) if name not in ("quality", "unwrap_parts_ms")]
        header = ["stage (ms)"] + [f"{size} {name}" for size in result["sizes"] for name in formats]
        print(" | ".join(header))
        for stage in (*STAGES, "total"):
            cells = []
            for figures in result["sizes"].values():
                for name in formats:
                    value = figures[name]["total_s"] if stage == "total" else figures[name]["stages"][stage]
                    cells.append(f"{value * 1000:.1f}")
            print(" | ".join([stage] + cells))
        cells = [f"{figures[name]['glb_bytes'] / 1e6:.2f}" for figures in result["sizes"].values() for name in formats]
        print(" | ".join(["GLB (MB)"] + cells))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenes",
        nargs="+",
        choices=("random", "fitted", "analytic", "froth"),
        default=["random", "fitted"],
        help="analytic: devtools/image_to_3d_dev/analytic_field.py itself, no model (sharp colour edges); "
        "froth: random plane waves, no model (fragmented like random weights)",
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 512, 2048])
    parser.add_argument("--formats", nargs="+", choices=("jpeg", "png"), default=["jpeg", "png"])
    parser.add_argument("--image", default=str(EXAMPLES / "chair.png"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--target-faces", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5, help="timed warm runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--whole", action="store_true", help="also time the whole textured request")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    main()
