"""Benchmark image -> GLB: per-stage medians, peak GPU memory, and the ratio to upstream's way.

    uv run python benchmarks/pipeline.py --random-weights --device cuda --resolution 256 \
        --runs 10 --compare-reference --parity --json

- Our path is `Pipeline.generate` exactly as the CLI and the server run it (fast path by default on
  CUDA; `--exact` runs the float32 dense path instead). Background removal is not timed: the image
  should carry its own alpha (the examples do).
- `--compare-reference` also runs upstream TripoSR's way in the same process: float32 weights, the
  dense grid queried 8,192 points at a time, colours at every vertex, then the same GLB export.
- `--parity` compares our default path with the float32 dense path on the same weights: on the scene
  the image gives, and on an analytic scene with a thin part (image_to_3d_dev/analytic_field.py).
- `--random-weights` builds full-size random weights (no download). Random weights rarely reach
  upstream's density threshold, so the threshold then defaults to the largest inside share of the
  grid whose surface has at most 250k faces (see `choose_threshold`); it is printed.
- `--fitted-scene` (with `--random-weights`) first fits the post-processor and field MLP so that the
  image's field is the analytic shape (image_to_3d_dev/fitted_scene.py): a meaningful surface, thin fin
  included, that the random ViT and transformer's reduced precision still act on; threshold 25.

With `--json` the last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from image_to_3d_dev.images import model_input
from image_to_3d_dev.paths import EXAMPLES
from image_to_3d_dev.scenes import (
    FITTED_THRESHOLD,
    compare_meshes,
    mesh_for,
    random_weights_threshold,
    save_random_model,
)
from image_to_3d_dev.timing import device_name, device_sync, free
from remote.extraction import extract_mesh
from remote.glb import mesh_to_glb
from remote.pipeline import GenerateOptions, Pipeline
from remote.precision import PrecisionPolicy, policy_for
from remote.preprocess import load_image, prepare_image
from remote.server.transfer import encode_answer
from remote.triposr.weights import load_model, resolve_device

REFERENCE_CHUNK = 8192
STAGE_ORDER = ("decode", "preprocess", "model", "extraction", "color", "glb")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.random_weights:
            fit_image = Path(args.image) if args.fitted_scene else None
            model_dir = save_random_model(
                Path(folder), args.decoder_gain, fit_image, resolve_device(args.device), args.fit_sharpness
            )
        else:
            model_dir = Path(args.model)
        run_benchmark(args, model_dir)


def run_benchmark(args: argparse.Namespace, model_dir: Path) -> None:
    import remote.triposr.fused_field

    device = resolve_device(args.device)
    policy = build_policy(args, device)
    image_path = Path(args.image)
    report: dict = {
        "device": device_name(device),
        "resolution": args.resolution,
        "runs": args.runs,
        "band_margin": policy.band_log_margin,
        "coarse_stride": policy.coarse_stride,
        "transformer_dtype": policy.matmul_dtype,
        "cuda_graph": policy.cuda_graph and device.type == "cuda",
        "fused_field": policy.fused_field and remote.triposr.fused_field.available(),
    }

    load_seconds, pipeline = load_pipeline(policy, device, model_dir)
    report["model_load_s"] = load_seconds
    report["compiled"] = bool(pipeline.info.get("compiled", False))
    threshold = args.threshold if args.threshold is not None else choose_threshold(args, pipeline, image_path)
    report["threshold"] = threshold
    if args.fitted_scene:
        report["fit_sharpness"] = args.fit_sharpness
    options = GenerateOptions(resolution=args.resolution, threshold=threshold, remove_background="never")

    ours = time_runs(lambda: pipeline.generate(image_path, options).timings, args, device)
    report.update({f"{stage}_s": value for stage, value in ours["stages"].items()})
    report["total_s"] = ours["total_s"]
    report["peak_gpu_bytes"] = ours["peak_gpu_bytes"]
    print(
        "ours (ms): "
        + ", ".join(f"{k} {v * 1000:.1f}" for k, v in ours["stages"].items())
        + f", total {ours['total_s'] * 1000:.1f}",
        flush=True,
    )
    result = pipeline.generate(image_path, options)
    report["vertices"], report["faces"], report["glb_bytes"] = (result.vertex_count, result.face_count, len(result.glb))
    report["glb_gzip_bytes"] = len(encode_answer(result.glb, gzip_accepted=True)[0])  # on the wire: the server's gzip

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(pipeline.generate, image_path, options)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if args.parity:
        report["parity"] = parity(pipeline, model_dir, image_path, options)
    if args.compare_reference:
        del pipeline
        free(device)
        reference = time_runs(
            reference_runner(model_dir, device, image_path, options), args, device, runs=args.reference_runs
        )
        report["reference_total_s"] = reference["total_s"]
        report["reference_stages"] = reference["stages"]
        report["reference_peak_gpu_bytes"] = reference["peak_gpu_bytes"]
        report["speedup_vs_reference"] = reference["total_s"] / report["total_s"]

    print_table(report)
    if args.json:
        print(json.dumps(report))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder with config.yaml + weights, or a hub repo")
    source.add_argument("--random-weights", action="store_true", help="full-size random weights")
    parser.add_argument(
        "--fitted-scene",
        action="store_true",
        help="with --random-weights: fit the post-processor and field MLP so the image's "
        "field is a meaningful shape (image_to_3d_dev/fitted_scene.py), threshold 25",
    )
    parser.add_argument(
        "--fit-sharpness",
        type=float,
        default=30.0,
        help="the fitted scene's log-density slope across its surface per model unit (30, "
        "the tests' analytic field: 0.2 per voxel at 256, a soft surface; 150: 1 per voxel)",
    )
    parser.add_argument(
        "--decoder-gain",
        type=float,
        default=3.0,
        help="scale of the random field MLP (3: a structured field; 1: PyTorch's default "
        "init, a nearly flat field that reduced precision turns into rounding ties)",
    )
    parser.add_argument("--image", default=str(EXAMPLES / "chair.png"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threshold", type=float, default=None, help="default 25, or auto with random weights")
    parser.add_argument("--runs", type=int, default=5, help="timed warm runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reference-runs", type=int, default=3)
    parser.add_argument("--compare-reference", action="store_true")
    parser.add_argument("--parity", action="store_true")
    parser.add_argument("--exact", action="store_true", help="time the float32 dense path as ours")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--band-margin",
        type=float,
        default=None,
        help="experiment: the band's log-density margin (policy's band_log_margin)",
    )
    parser.add_argument(
        "--coarse-stride", type=int, default=None, help="experiment: the band's coarse stride (policy's coarse_stride)"
    )
    parser.add_argument("--no-cuda-graph", action="store_true", help="experiment: run the model pass eagerly")
    parser.add_argument("--no-compile", action="store_true", help="experiment: run the model pass uncompiled")
    parser.add_argument("--no-fused-field", action="store_true", help="experiment: query the field with PyTorch ops")
    parser.add_argument(
        "--transformer-dtype",
        choices=("bf16", "fp16"),
        default=None,
        help="experiment: the fast path's encoder/transformer dtype (default fp16)",
    )
    parser.add_argument("--profile", action="store_true", help="print the top functions of one warm run")
    return parser.parse_args()


def build_policy(args: argparse.Namespace, device: torch.device) -> PrecisionPolicy:
    """The product's policy for `--exact` or "auto" on this device, with the flags' variations."""
    policy = policy_for("float32" if args.exact else "auto", device.type)
    changes: dict = {}
    if args.no_cuda_graph:
        changes["cuda_graph"] = False
    if args.no_fused_field:
        changes["fused_field"] = False
    if args.no_compile:
        changes["compile_model"] = False
    if args.transformer_dtype is not None and policy.matmul_dtype != "float32":  # the fast path's dtype
        changes["matmul_dtype"] = {"bf16": "bfloat16", "fp16": "float16"}[args.transformer_dtype]
    if args.band_margin is not None:
        changes["band_log_margin"] = args.band_margin
    if args.coarse_stride is not None:
        changes["coarse_stride"] = args.coarse_stride
    return dataclasses.replace(policy, **changes)


def load_pipeline(policy: PrecisionPolicy, device: torch.device, model_dir: Path) -> tuple[float, Pipeline]:
    """Time loading from local safetensors to a ready model on the device."""
    free(device)
    start = time.perf_counter()
    pipeline = Pipeline.load(model=model_dir, device=device.type, precision=policy)
    device_sync(device)()
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    pipeline.warm_up()  # as the server does before "ready": compiles the model pass (fast path, CUDA)
    print(f"warm-up {time.perf_counter() - start:.1f} s, compiled: {pipeline.info.get('compiled', False)}", flush=True)
    return loaded, pipeline


def choose_threshold(args: argparse.Namespace, pipeline: Pipeline, image_path: Path) -> float:
    """25 (upstream's) for real weights and the fitted scene; for random weights, scenes.py's
    random_weights_threshold at the benchmark's resolution."""
    if not args.random_weights or args.fitted_scene:
        return FITTED_THRESHOLD
    return random_weights_threshold(pipeline, image_path, args.resolution)


def time_runs(run, args: argparse.Namespace, device: torch.device, runs: int | None = None) -> dict:
    """Median stage times and wall total over warm runs; peak GPU memory across them."""
    for _ in range(args.warmup):
        run()
    free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stages: dict[str, list[float]] = {}
    totals = []
    for _ in range(runs or args.runs):
        device_sync(device)()
        start = time.perf_counter()
        timings = run()
        device_sync(device)()
        totals.append(time.perf_counter() - start)
        for stage, seconds in timings.items():
            stages.setdefault(stage, []).append(seconds)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "total_s": statistics.median(totals),
        "stages": {stage: statistics.median(values) for stage, values in stages.items()},
        "peak_gpu_bytes": peak,
    }


def reference_runner(model_dir: Path, device: torch.device, image_path: Path, options: GenerateOptions):
    """Upstream's way: float32 weights, dense grid in 8192-point chunks, colours at every vertex."""
    model = load_model(model_dir, device=device, dtype=torch.float32)

    def run() -> dict[str, float]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        prepared = prepare_image(load_image(image_path), remove_background="never")
        timings["preprocess"] = time.perf_counter() - start
        with torch.inference_mode():
            start = time.perf_counter()
            scene_code = model(torch.from_numpy(prepared).to(device)[None])[0]
            device_sync(device)()
            timings["model"] = time.perf_counter() - start
            mesh = extract_mesh(
                model.field(scene_code),
                resolution=options.resolution,
                threshold=options.threshold,
                method="dense",
                chunk_points=REFERENCE_CHUNK,
                timings=timings,
                sync=device_sync(device),
            )
        start = time.perf_counter()
        mesh_to_glb(mesh)
        timings["glb"] = time.perf_counter() - start
        return timings

    return run


def parity(pipeline: Pipeline, model_dir: Path, image_path: Path, options: GenerateOptions) -> dict:
    """How far our default path's mesh is from the float32 dense path's, on the image's scene and
    on an analytic scene with a thin part (image_to_3d_dev/analytic_field.py); and which part moves it."""
    from image_to_3d_dev.analytic_field import AnalyticField

    band = {"coarse_stride": pipeline.policy.coarse_stride, "band_log_margin": pipeline.policy.band_log_margin}
    exact_model = load_model(model_dir, device=pipeline.device, dtype=torch.float32)
    images = model_input(image_path, pipeline.device)
    with torch.inference_mode():
        scene_code = pipeline.scene_code(images)
        exact_code = exact_model(images)[0]
        exact = mesh_for(exact_model.field(exact_code), options, method="dense")
        candidates = {
            "scene": mesh_for(pipeline.field(scene_code), options, **band),
            # Which part moves the surface: the band alone, reduced precision alone, and of that the
            # transformer's scene code alone (float32 field) or the fast field alone (float32 code).
            "scene_band_only": mesh_for(exact_model.field(exact_code), options, method="band", **band),
            "scene_precision_only": mesh_for(pipeline.field(scene_code), options, method="dense"),
            "scene_transformer_only": mesh_for(exact_model.field(scene_code.float()), options, method="dense"),
            "scene_field_only": mesh_for(pipeline.field(exact_code), options, method="dense"),
        }
    figures = {name: compare_meshes(mesh, exact, options.resolution) for name, mesh in candidates.items()}
    # How far the scene code itself moved (mean |difference| over mean |value|): with the surface's
    # slope, this is what sets the surface figures above.
    figures["scene"]["scene_code_relative_error"] = float(
        (scene_code.float() - exact_code).abs().mean() / exact_code.abs().mean()
    )
    del exact_model, exact_code, candidates
    free(pipeline.device)
    analytic = AnalyticField(threshold=options.threshold, device=str(pipeline.device))
    figures["analytic"] = compare_meshes(
        mesh_for(analytic, options, **band), mesh_for(analytic, options, method="dense"), options.resolution
    )
    return figures


def print_table(report: dict) -> None:
    print(
        f"device: {report['device']}, resolution {report['resolution']}, threshold {report['threshold']:.3g}, "
        f"median of {report['runs']} warm runs"
    )
    print(f"model load (safetensors -> ready on device): {report['model_load_s']:.2f} s")
    header = f"{'stage':<12}{'ours (ms)':>12}"
    reference = report.get("reference_stages")
    if reference:
        header += f"{'reference (ms)':>16}"
    print(header)
    for stage in STAGE_ORDER:
        if f"{stage}_s" not in report and not (reference and stage in reference):
            continue
        line = f"{stage:<12}{report.get(f'{stage}_s', 0) * 1000:>12.1f}"
        if reference:
            line += f"{reference.get(stage, 0) * 1000:>16.1f}"
        print(line)
    line = f"{'total':<12}{report['total_s'] * 1000:>12.1f}"
    if reference:
        line += f"{report['reference_total_s'] * 1000:>16.1f}"
    print(line)
    if reference:
        print(f"speed-up vs reference: {report['speedup_vs_reference']:.1f}x")
    if report.get("peak_gpu_bytes") is not None:
        print(f"peak GPU memory (ours, weights included): {report['peak_gpu_bytes'] / 2**30:.2f} GiB")
    if report.get("reference_peak_gpu_bytes") is not None:
        print(f"peak GPU memory (reference): {report['reference_peak_gpu_bytes'] / 2**30:.2f} GiB")
    print(
        f"mesh: {report['vertices']} vertices, {report['faces']} faces, GLB {report['glb_bytes'] / 1e6:.2f} MB "
        f"({report['glb_gzip_bytes'] / 1e6:.2f} MB gzipped)"
    )
    print(
        f"band: coarse stride {report['coarse_stride']}, log margin {report['band_margin']}; "
        f"transformer {report['transformer_dtype']} (patch embedding, proj_in/out float32); CUDA graph {report['cuda_graph']}, "
        f"fused field {report['fused_field']}"
    )
    for scene, figures in report.get("parity", {}).items():
        print_parity(scene, figures)
    if "parity" in report:
        print(f"scene code relative error (mean): {report['parity']['scene']['scene_code_relative_error']:.2e}")


def print_parity(scene: str, figures: dict) -> None:
    missing, extra = figures["missing_parts"], figures["extra_parts"]
    print(
        f"parity ({scene}): surface mean {figures['mean_distance_voxels']:.3f} voxel, "
        f"p99 {figures['p99_distance_voxels']:.2f}, max {figures['max_distance_voxels']:.2f}; "
        f"colour {figures['mean_colour_difference'] * 100:.2f}%; parts >= 1 voxel^2 missing "
        f"{missing['visible']}, extra {extra['visible']} (specks: {missing['count']} missing, largest "
        f"{max(missing['largest_voxels2'], default=0):.3f} voxel^2; {extra['count']} extra, largest "
        f"{max(extra['largest_voxels2'], default=0):.3f})"
    )


if __name__ == "__main__":
    main()
