"""Where a warm request's time goes on CUDA, host side included, and what the first request costs.

    uv run python benchmarks/investigations/pipeline_profile.py --fitted-scene --model-dir DIR \
        [--resolution 256] [--runs 20] [--trace DIR] [--compare-png-on-host] [--no-profile]

Loads the pipeline from a published-format folder (made with full-size random weights, fitted to
the analytic shape with --fitted-scene, and kept in --model-dir for the next run), runs its
warm-up as the server does before "ready", then times the first request and warm requests (stage
medians), and profiles a few warm requests with torch.profiler: host time per op (where the
synchronisations show) and device time per kernel. With --trace, a Chrome trace of one request.
--compare-png-on-host takes warm requests in turn through the three ways of decoding a plain RGBA
PNG (rows unfiltered on the GPU in the decode stage on a stream of their own, or under the device's
lock; remote/png_unfilter.py; or decoded by libpng on the host), on one pipeline, and reports each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from image_to_3d_dev.paths import EXAMPLES
from image_to_3d_dev.scenes import FITTED_THRESHOLD, random_weights_threshold, save_random_model
from remote.options import GenerateOptions
from remote.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="folder to reuse, or to write the weights into")
    parser.add_argument("--fitted-scene", action="store_true")
    parser.add_argument("--image", default=str(EXAMPLES / "chair.png"))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--trace", default=None)
    parser.add_argument("--compare-png-on-host", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="skip torch.profiler's tables")
    args = parser.parse_args()
    device = torch.device("cuda")
    folder = Path(args.model_dir)
    if not (folder / "config.yaml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        save_random_model(folder, 3.0, Path(args.image) if args.fitted_scene else None, device)

    report: dict[str, object] = {"device": torch.cuda.get_device_name(device)}
    start = time.perf_counter()
    pipeline = Pipeline.load(model=folder, device="cuda")
    report["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    pipeline.warm_up()
    report["warm_up_s"] = time.perf_counter() - start
    threshold = (
        FITTED_THRESHOLD if args.fitted_scene else random_weights_threshold(pipeline, Path(args.image), args.resolution)
    )
    options = GenerateOptions(resolution=args.resolution, threshold=threshold, remove_background="never")
    data = Path(args.image).read_bytes()

    def request() -> tuple[float, dict[str, float]]:
        torch.cuda.synchronize()
        begin = time.perf_counter()
        result = pipeline.generate(data, options)
        return (time.perf_counter() - begin) * 1000, result.timings

    first_ms, first_stages = request()
    report["first_request_ms"] = first_ms
    report["first_request_stages_ms"] = {k: v * 1000 for k, v in first_stages.items()}
    totals, stages = [], {}
    for _ in range(args.runs):
        total, timings = request()
        totals.append(total)
        for name, seconds in timings.items():
            stages.setdefault(name, []).append(seconds * 1000)
    report["warm_ms"] = statistics.median(totals)
    report["warm_stages_ms"] = {k: statistics.median(v) for k, v in stages.items()}
    result = pipeline.generate(data, options)
    report["faces"], report["glb_bytes"] = result.face_count, len(result.glb)
    if args.compare_png_on_host:
        report["png_on_device_vs_host"] = _compare_png_paths(pipeline, request, data, options, args.runs)
        report["faces_png_on_host"] = report["png_on_device_vs_host"].pop("faces_on_host")
    print(json.dumps(report), flush=True)
    if args.no_profile:
        return

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            pipeline.generate(data, options)
    averages = prof.key_averages()
    print("host time per op, 3 requests", flush=True)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70), flush=True)
    sort_key = "device_time_total" if hasattr(averages[0], "device_time_total") else "cuda_time_total"
    print("device time per kernel, 3 requests", flush=True)
    print(averages.table(sort_by=sort_key, row_limit=30, max_name_column_width=70), flush=True)
    if args.trace:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=False) as one:
            pipeline.generate(data, options)
        one.export_chrome_trace(f"{args.trace}/pipeline_trace.json")
    print(json.dumps(report))


def _compare_png_paths(pipeline: Pipeline, request, data: bytes, options: GenerateOptions, runs: int) -> dict:
    """Warm medians (total and stages, ms) with the PNG's rows unfiltered on the device in the decode
    stage on its own stream ("aside"), in the preprocess stage under the lock ("locked"), and decoded
    by libpng on the host ("host"), requests taking the three paths in turn on one pipeline."""
    kept = pipeline.png_on_device, pipeline.aside_pixels
    modes = {"aside": (True, kept[1]), "locked": (True, 0), "host": (False, kept[1])}
    samples: dict[str, list[tuple[float, dict[str, float]]]] = {mode: [] for mode in modes}
    for _ in range(runs):
        for mode, (on_device, aside_pixels) in modes.items():
            pipeline.png_on_device, pipeline.aside_pixels = on_device, aside_pixels
            samples[mode].append(request())
    pipeline.png_on_device, pipeline.aside_pixels = False, kept[1]
    summary: dict = {"faces_on_host": pipeline.generate(data, options).face_count}
    pipeline.png_on_device, pipeline.aside_pixels = kept
    for mode, runs_of in samples.items():
        stages = {name: statistics.median(t[name] * 1000 for _, t in runs_of) for name in runs_of[0][1]}
        summary[mode] = {"total_ms": statistics.median(total for total, _ in runs_of), "stages_ms": stages}
    return summary


if __name__ == "__main__":
    main()
