"""Run under TRITON_INTERPRET=1 by test_png_unfilter.py: the PNG unfilter kernel on the CPU, on rows
filtered with every type, on real encoders' files, and through preprocessing and the pipeline.
Prints one JSON object."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from image_to_3d_dev.paths import EXAMPLES, TINY_MODEL
from image_to_3d_dev.tiny_u2net import build_tiny_u2net
from remote import png_unfilter
from remote.fast_png import InflatedPng, plain_png_pixels
from remote.options import GenerateOptions
from remote.pipeline import Pipeline
from remote.precision import FLOAT32_BAND
from remote.preprocess import BackgroundRemover, load_for_device, load_image, prepare_image
from remote.preprocess_torch import prepare_inflated_png_tensor, unfilter_png
from remote.triposr.weights import load_model


def small_png(size: tuple[int, int], opaque: bool = False) -> bytes:
    """The chair cut-out scaled down, saved by Pillow with its adaptive filters (every type)."""
    picture = PIL.Image.open(EXAMPLES / "chair.png").convert("RGBA").resize(size)
    if opaque:
        picture.putalpha(255)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    assert png_unfilter.runs_on(torch.device("cpu")), "run with TRITON_INTERPRET=1"
    report: dict = {"rows": {}}
    generator = np.random.default_rng(3)
    for height, width, channels, lanes in [(13, 7, 4, 8), (9, 5, 3, 4), (20, 11, 4, 32), (1, 1, 4, 8), (17, 3, 4, 8)]:
        pixels = generator.integers(0, 256, (height, width, channels), dtype=np.uint8)
        pixels[: height // 2] //= 7
        kinds = np.arange(height) % png_unfilter.FILTER_TYPES
        scanlines = torch.from_numpy(png_unfilter.filter_rows(pixels, kinds))
        got = png_unfilter.unfilter(scanlines, channels, rows=lanes).numpy()
        report["rows"][f"{height}x{width}x{channels}/{lanes}"] = bool(np.array_equal(got, pixels))
    report["agrees"] = png_unfilter.agrees(torch.device("cpu"))

    data = small_png((36, 30))
    inflated = load_for_device(data)
    assert isinstance(inflated, InflatedPng)
    scanlines = torch.from_numpy(inflated.scanlines.copy())
    report["file_filters"] = sorted(set(inflated.scanlines[:, 0].tolist()))
    report["file_same_as_libpng"] = bool(
        np.array_equal(png_unfilter.unfilter(scanlines, 4, rows=8).numpy(), plain_png_pixels(data))
    )
    expected = prepare_image(load_image(data), remove_background="never", foreground_ratio=0.7)
    got = prepare_inflated_png_tensor(inflated, device="cpu", remove_background="never", foreground_ratio=0.7)
    report["input_difference"] = float(np.abs(got.numpy() - expected).max())
    unfiltered = unfilter_png(inflated, "cpu")  # as the decode stage does on CUDA, outside the lock
    again = prepare_inflated_png_tensor(unfiltered, device="cpu", remove_background="never", foreground_ratio=0.7)
    report["unfiltered_first_same"] = bool(torch.equal(again, got))

    remover = BackgroundRemover(build_tiny_u2net(Path(sys.argv[1]) / "tiny_u2net.onnx"))
    opaque = small_png((24, 20), opaque=True)
    expected = prepare_image(load_image(opaque), remover=remover)
    calls = remover.calls
    got = prepare_inflated_png_tensor(load_for_device(opaque), device="cpu", remover=remover)
    report["opaque_auto"] = {
        "rembg_calls": remover.calls - calls,
        "difference": float(np.abs(got.numpy() - expected).max()),
    }

    model = load_model(TINY_MODEL, device="cpu")
    policy = dataclasses.replace(FLOAT32_BAND, png_on_device=True)
    pipeline = Pipeline.from_model(model, torch.device("cpu"), remover, precision=policy)
    options = GenerateOptions(resolution=32, threshold=50, remove_background="never")
    on_device = pipeline.generate(data, options)
    pipeline.png_on_device = False
    on_host = pipeline.generate(data, options)
    report["pipeline"] = {
        "checked": pipeline._unfilter_agrees,
        "faces": [on_device.face_count, on_host.face_count],
        "same_glb": on_device.glb == on_host.glb,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
