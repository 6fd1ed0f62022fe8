"""The field query alone: the fused Triton kernel against PyTorch ops, for speed and for distance
from float32 (CUDA only; full-size random weights, no download).

    python benchmarks/field_query.py --decoder-gain 3

Prints the relative density error of the fp16 PyTorch query and of the fused kernel against the
float32 query on the same weights, and the time of each for a 256^3 grid's worth of points.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from remote.triposr.weights import build_random_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder-gain", type=float, default=3.0)
    parser.add_argument("--points", type=int, default=256**3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA: the fused kernel runs there")
    torch.manual_seed(0)
    exact = build_random_model(device="cuda", decoder_gain=args.decoder_gain)
    fast = copy.deepcopy(exact).use_fast_precision()
    fast.fused_field_checked = True  # measure the kernel, do not let its check switch it off
    with torch.inference_mode():
        scene_code = exact(torch.rand(1, 512, 512, 3, device="cuda"))[0]
        planes = scene_code.half()
        sample = torch.rand(1 << 20, 3, device="cuda") * 1.74 - 0.87
        expected, _ = exact.query_field(scene_code, sample)
        fused_field = fast.field(planes)
        candidates = {"PyTorch fp16": lambda p: fast.query_field(planes, p), "fused kernel": fused_field.query}
        for name, query in candidates.items():
            error = (query(sample)[0] - expected).abs() / expected.abs().clamp_min(1e-6)
            print(f"{name:<14} vs float32: relative density error mean {error.mean():.2e}, max {error.max():.2e}")
        grid = torch.rand(args.points, 3, device="cuda") * 1.74 - 0.87
        for name, query in candidates.items():
            seconds = _median_seconds(lambda: [query(chunk) for chunk in grid.split(1 << 20)])
            print(f"{name:<14} {args.points} points in 1M-point chunks: {seconds * 1000:.1f} ms")


def _median_seconds(run, repeats: int = 5) -> float:
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


if __name__ == "__main__":
    main()
