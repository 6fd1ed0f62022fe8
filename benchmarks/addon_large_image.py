"""A large painted image in the add-on: how long Blender's main thread is held, and what the
worker does, against encoding the full image on the main thread (the add-on before issue #13).

    uv run python benchmarks/addon_large_image.py [--side 6000] [--runs 3]

The painting is transparent around an opaque block of random colours (noise is what
compresses worst). Runs in bpy (this venv's Blender): the add-on's image_source.prepare (main thread: the pixels
copied out of Blender) and SourceImage.encoded (worker: downscale to pixels.MAX_SIDE and PNG), and, for
comparison, a full-size PNG of the same pixels. Prints median seconds and the peak of Python-side
allocations (tracemalloc, which numpy reports to) for each.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import tracemalloc
import types
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_addon() -> types.ModuleType:
    """The add-on registered from its folder, as Blender would load a legacy install."""
    init = importlib.util.spec_from_file_location(
        "image_to_3d", ROOT / "blender_addon" / "__init__.py", submodule_search_locations=[str(ROOT / "blender_addon")]
    )
    module = importlib.util.module_from_spec(init)
    sys.modules["image_to_3d"] = module
    init.loader.exec_module(module)
    module.register()
    return module


def measure(function, runs: int) -> tuple[float, float, object]:
    times, peaks, result = [], [], None
    for _ in range(runs):
        tracemalloc.start()
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(times), max(peaks) / 2**20, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load_addon()
    image_source = sys.modules["image_to_3d.image_source"]
    pixels = sys.modules["image_to_3d.pixels"]
    image = bpy.data.images.new("Painting", args.side, args.side, alpha=True)
    painted = np.zeros((args.side, args.side, 4), dtype=np.float32)
    body = painted[args.side // 8 : -args.side // 8, args.side // 4 : -args.side // 4]
    body[:] = np.random.default_rng(0).random(body.shape, dtype=np.float32)  # brush noise: zlib's hard case
    body[..., 3] = 1.0
    image.pixels.foreach_set(painted.ravel())
    del painted
    bpy.context.scene.image_to_3d.image = image
    (choice,) = image_source.choose_sources(bpy.context)

    main_s, main_mb, _ = measure(lambda: image_source.prepare(bpy.context, choice), args.runs)
    sources = [image_source.prepare(bpy.context, choice) for _ in range(args.runs)]
    worker_s, worker_mb, data = measure(lambda: sources.pop().encoded(), args.runs)

    def full_size() -> bytes:
        source = image_source.prepare(bpy.context, choice)
        return pixels.encode_png(source.pixels)

    old_s, old_mb, old = measure(full_size, args.runs)
    print(f"{args.side}x{args.side} painted image, median of {args.runs}:")
    print(f"  main thread (copy pixels out of Blender)  {main_s:6.2f} s  peak {main_mb:7.0f} MiB")
    print(f"  worker (downscale + PNG, {len(data) / 1e6:.2f} MB sent)   {worker_s:6.2f} s  peak {worker_mb:7.0f} MiB")
    print(
        f"  before: full-size PNG on the main thread  {old_s:6.2f} s  peak {old_mb:7.0f} MiB ({len(old) / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
