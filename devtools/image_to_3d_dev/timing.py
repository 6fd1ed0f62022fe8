"""The one timing helper the benchmarks share: the median of warm runs, with the device synchronised
around each run so a GPU's queued work is counted where it is launched."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def device_sync(device: torch.device | str | None) -> Callable[[], None]:
    """A function that waits for `device`'s queued work (nothing to wait for off CUDA)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def median_seconds(
    function: Callable[[], T], runs: int, *, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> tuple[T, float]:
    """`function`'s last result and its median wall time over `runs` runs after `warmup` untimed ones."""
    result: Any = None
    for _ in range(warmup):
        result = function()
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        result = function()
        sync()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def median_ms(
    function: Callable[[], T], runs: int, *, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> tuple[T, float]:
    """`median_seconds` in milliseconds."""
    result, seconds = median_seconds(function, runs, warmup=warmup, sync=sync)
    return result, seconds * 1000


def event_ms(function: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median device time of `function` in ms between two CUDA events (synchronised after each run)."""
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def free(device: torch.device) -> None:
    """Drop what the last run left (Python garbage, PyTorch's cached GPU blocks)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
