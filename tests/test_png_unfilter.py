"""A plain RGBA PNG decoded in two halves: inflated on the host (remote/fast_png.py) and unfiltered
on the device (remote/png_unfilter.py). The kernel runs on the CPU under Triton's interpreter
(png_unfilter_script.py) and, where there is one, on CUDA against libpng's pixels; the host half's
refusals fall back to the decoders and errors of `load_image`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import EXAMPLES, TINY_MODEL
from remote import png_unfilter
from remote.options import GenerateOptions
from remote.pipeline import Pipeline
from remote.precision import FLOAT32_BAND
from remote.preprocess import BackgroundRemover
from remote.preprocess_torch import DevicePng
from remote.triposr.weights import load_model
from remote.errors import ImageTooLargeError, InvalidImageError
from remote.fast_png import InflatedPng, inflate_plain_png, plain_png_pixels
from remote.preprocess import load_for_device, load_image
from test_fast_png import LEFT_TO_PILLOW, PLAIN, noisy_rgba
from test_preprocess import encode, png

SCRIPT = Path(__file__).with_name("png_unfilter_script.py")
CUT_OUTS = ["chair", "hamburger", "robot"]


def test_filter_rows_gives_a_real_encoders_rows():
    """The self-check's and the tests' encoder side equals Pillow's (zlib's filters, chosen per row)."""
    data = PLAIN["rgba-optimised"]
    inflated = inflate_plain_png(data)
    assert inflated is not None and inflated.channels == 4
    kinds = inflated.scanlines[:, 0]
    assert len(set(kinds.tolist())) >= 3, "the encoder should have used several filter types"
    assert np.array_equal(png_unfilter.filter_rows(plain_png_pixels(data), kinds), inflated.scanlines)


def test_inflating_gives_the_files_rows_and_size():
    data = (EXAMPLES / "chair.png").read_bytes()
    inflated = inflate_plain_png(data)
    assert inflated is not None and inflated.size == (512, 512) and inflated.scanlines.shape == (512, 1 + 512 * 4)
    assert inflated.data is data
    unfiltered_by_numpy = png_unfilter.filter_rows(plain_png_pixels(data), inflated.scanlines[:, 0])
    assert np.array_equal(unfiltered_by_numpy, inflated.scanlines)


@pytest.mark.parametrize("name", sorted(LEFT_TO_PILLOW))
def test_pngs_that_are_not_plain_are_not_inflated(name):
    assert inflate_plain_png(LEFT_TO_PILLOW[name]) is None


def rgba_png_with_rows(rows: bytes, width: int, height: int) -> bytes:
    return png(width, height, 8, 6, zlib.compress(rows))


def test_a_filter_type_png_does_not_define_is_left_to_pillow_and_refused_with_its_message():
    rows = b"".join(bytes([7 if y == 3 else 1]) + bytes(range(16)) for y in range(6))  # 4 x 6 RGBA
    data = rgba_png_with_rows(rows, 4, 6)
    assert inflate_plain_png(data) is None
    with pytest.raises(InvalidImageError, match="truncated or corrupt") as from_device_path:
        load_for_device(data)
    with pytest.raises(InvalidImageError) as from_host_path:
        load_image(data)
    assert str(from_device_path.value) == str(from_host_path.value)


@pytest.mark.parametrize("damage", ["cut", "checksum", "too-few-rows", "too-many-rows"])
def test_a_stream_that_does_not_inflate_to_the_headers_rows_is_decoded_as_before(damage):
    width, height = 5, 4
    rows = b"".join(b"\x02" + bytes(range(width * 4)) for _ in range(height))
    stream = zlib.compress(rows)
    data = {
        "cut": png(width, height, 8, 6, stream[:-9]),
        "checksum": png(width, height, 8, 6, stream[:-1] + bytes([stream[-1] ^ 1])),
        "too-few-rows": png(width, height, 8, 6, zlib.compress(rows[: -(width * 4 + 1)])),
        "too-many-rows": png(width, height, 8, 6, zlib.compress(rows + rows[: width * 4 + 1])),
    }[damage]
    assert inflate_plain_png(data) is None
    try:
        expected = load_image(data)
    except InvalidImageError as error:
        with pytest.raises(InvalidImageError) as refused:
            load_for_device(data)
        assert str(refused.value) == str(error)
    else:  # Pillow accepts some of these (it does not read the checksum): so does the device's path
        got = load_for_device(data)
        assert isinstance(got, PIL.Image.Image) and np.array_equal(np.asarray(got), np.asarray(expected))


def test_load_for_device_inflates_only_plain_rgba_pngs():
    assert isinstance(load_for_device(PLAIN["rgba"]), InflatedPng)
    for other in (
        PLAIN["rgb"],
        LEFT_TO_PILLOW["grey-alpha"],
        LEFT_TO_PILLOW["exif-chunk"],
        encode(noisy_rgba(4).convert("RGB"), "JPEG"),
    ):
        assert isinstance(load_for_device(other), PIL.Image.Image)
    assert load_for_device(LEFT_TO_PILLOW["exif-chunk"]).size == load_image(LEFT_TO_PILLOW["exif-chunk"]).size


def test_load_for_device_keeps_the_pixel_limit():
    with pytest.raises(ImageTooLargeError):
        load_for_device(PLAIN["rgba"], max_pixels=97 * 61 - 1)
    assert isinstance(load_for_device(PLAIN["rgba"], max_pixels=97 * 61), InflatedPng)


@pytest.mark.slow  # Triton's interpreter
@pytest.mark.skipif(not png_unfilter.available(), reason="triton is not installed")
def test_the_kernel_under_the_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(report["rows"].values()), report["rows"]  # every filter type, RGB and RGBA, across blocks
    assert report["agrees"] is True
    assert report["file_same_as_libpng"] and len(report["file_filters"]) >= 3, report
    assert report["input_difference"] < 2e-6 and report["unfiltered_first_same"]
    assert report["opaque_auto"]["rembg_calls"] == 1 and report["opaque_auto"]["difference"] < 2e-6
    pipeline = report["pipeline"]
    assert pipeline["checked"] is True and pipeline["faces"][0] == pipeline["faces"][1] > 0 and pipeline["same_glb"]


@pytest.mark.skipif(not (torch.cuda.is_available() and png_unfilter.available()), reason="needs CUDA and Triton")
@pytest.mark.parametrize("name", CUT_OUTS)
def test_on_cuda_the_pixels_are_libpngs(name):
    data = (EXAMPLES / f"{name}.png").read_bytes()
    inflated = inflate_plain_png(data)
    assert inflated is not None
    scanlines = torch.from_numpy(inflated.scanlines.copy()).cuda()
    assert png_unfilter.agrees(torch.device("cuda"))
    for rows in (png_unfilter.ROWS, 64):
        assert np.array_equal(png_unfilter.unfilter(scanlines, 4, rows=rows).cpu().numpy(), plain_png_pixels(data))


@pytest.mark.skipif(not (torch.cuda.is_available() and png_unfilter.available()), reason="needs CUDA and Triton")
def test_on_cuda_the_decode_stage_unfilters_aside_and_the_glb_is_libpngs_paths():
    """The decode stage unfilters on its own stream (outside the device's lock); the preprocess
    stage then reads those pixels on its stream: the GLB equals the host decode's."""
    import dataclasses

    policy = dataclasses.replace(FLOAT32_BAND, png_on_device=True)
    model = load_model(TINY_MODEL, device="cuda")
    pipeline = Pipeline.from_model(model, torch.device("cuda"), BackgroundRemover(), precision=policy)
    data = (EXAMPLES / "chair.png").read_bytes()
    options = GenerateOptions(resolution=32, threshold=50, remove_background="never")
    decoded = pipeline._load(data, options)
    assert isinstance(decoded, DevicePng) and decoded.rgba.is_cuda
    assert np.array_equal(decoded.rgba.cpu().numpy(), plain_png_pixels(data))

    def mesh() -> tuple[int, int, int]:  # the GPU's marching cubes may order its output differently run to run
        result = pipeline.generate(data, options)
        return result.vertex_count, result.face_count, len(result.glb)

    aside = [mesh() for _ in range(3)]
    pipeline.aside_pixels = 0  # unfiltered under the lock instead
    assert isinstance(pipeline._load(data, options), InflatedPng)
    locked = mesh()
    pipeline.png_on_device = False
    host = mesh()
    assert aside == [host] * 3 and locked == host and host[1] > 0
