"""Load the pipeline in two halves, so that a memory snapshot can keep the slow half.

Modal takes its (CPU) memory snapshots with no GPU attached, and CUDA must not be touched before
the snapshot: a CUDA initialisation that fails once stays failed for the life of the process. So
the slow, device-free half (import torch, read and check 1.7 GB of weights, build the model) runs
before the snapshot, on the CPU. The quick half runs in every container after a restore: move the
model to the GPU and open the background-removal session (ONNX Runtime picks its CUDA provider
when the session opens). Anywhere else the two halves simply run back to back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from remote.pipeline import Pipeline, check_precision
from remote.preprocess import BackgroundRemover
from remote.triposr.model import TripoSR
from remote.triposr.weights import load_model, resolve_device


def load_on_cpu(model_source: str | Path) -> TripoSR:
    """The device-free half: the model with its checked weights, on the CPU (CUDA untouched)."""
    return load_model(str(model_source), device=torch.device("cpu"))


def finish_on_device(
    model: TripoSR,
    *,
    device: str | None,
    rembg_model_path: str | Path | None,
    model_source: str,
    revision: str | None,
    max_pixels: int | None = 40_000_000,
    precision: str = "auto",
) -> Pipeline:
    """The quick half: move `model` to `device` (CUDA when present if None) and build the Pipeline.

    `model_source` and `revision` are what the pipeline reports (e.g. in `/v1/health`): the hub
    repository and commit the local files were verified against. `precision` means what it means
    for `Pipeline.load` ("auto": reduced precision on CUDA; "float32": the exact, dense path).
    """
    check_precision(precision)  # before any device work
    torch_device = resolve_device(device)
    remover = BackgroundRemover(rembg_model_path)
    remover.session()  # open ONNX Runtime (and its CUDA provider) now, not on the first request
    pipeline = Pipeline.from_model(
        model.to(torch_device),
        torch_device,
        remover,
        precision=precision,
        model_source=model_source,
        revision=revision,
        max_pixels=max_pixels,
    )
    pipeline.warm_up()
    return pipeline
