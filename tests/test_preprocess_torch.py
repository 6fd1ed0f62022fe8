"""The device path of preprocessing (remote.preprocess_torch) gives the CPU path's model input:
against upstream's stored inputs, the examples at every ratio, odd shapes and the refusals."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import ImageDraw

from conftest import EXAMPLES
from remote.errors import NoForegroundError
from remote.preprocess import load_image, prepare_image
from remote.preprocess_torch import alpha_bounds, prepare_image_tensor, prepare_rgba_tensor
from upstream_preprocess import STORED, STORED_CASES, load_rgba, upstream_model_input


@pytest.mark.parametrize("name", STORED_CASES)
def test_same_input_as_upstream_and_the_cpu_path_for_stored_cut_outs(name, upstream_expected):
    image = load_image(STORED / f"{name}.png")
    ratio = float(upstream_expected[f"{name}_ratio"])
    prepared = prepare_image_tensor(image, device="cpu", foreground_ratio=ratio)
    assert prepared.shape == (512, 512, 3) and prepared.dtype == torch.float32 and prepared.device.type == "cpu"
    got = prepared.numpy()
    assert np.abs(got - upstream_expected[name]).max() < 1e-5  # the contract is 1/255
    assert np.abs(got - prepare_image(image, foreground_ratio=ratio)).max() < 2e-6


@pytest.mark.parametrize("ratio", [0.5, 0.66, 0.85, 1.0])
@pytest.mark.parametrize("name", ["chair", "hamburger", "robot"])
def test_examples_at_any_ratio(name, ratio):
    rgba = load_rgba(EXAMPLES / f"{name}.png")
    image = PIL.Image.fromarray(rgba, "RGBA")
    got = prepare_image_tensor(image, device="cpu", foreground_ratio=ratio).numpy()
    assert np.abs(got - prepare_image(image, foreground_ratio=ratio)).max() < 2e-6
    assert np.abs(got - upstream_model_input(rgba, ratio)).max() < 1e-5


@pytest.mark.parametrize("box", [(100, 100, 2899, 1899), (1400, 20, 1600, 1980), (10, 990, 2990, 1010)])
def test_wide_tall_and_large_subjects(box):
    big = PIL.Image.new("RGBA", (3000, 2000), (0, 0, 0, 0))
    ImageDraw.Draw(big).rectangle(box, fill=(0, 200, 0, 255))
    ImageDraw.Draw(big).ellipse((1400, 900, 1600, 1100), fill=(250, 20, 20, 140))
    got = prepare_image_tensor(big, device="cpu").numpy()
    assert np.abs(got - prepare_image(big)).max() < 2e-6
    assert np.abs(got - upstream_model_input(np.asarray(big), 0.85)).max() < 1e-5


def test_bounds_and_refusals():
    alpha = torch.zeros(50, 80, dtype=torch.uint8)
    assert alpha_bounds(alpha) is None
    alpha[3:9, 70:75] = 1
    assert alpha_bounds(alpha) == (3, 8, 70, 74)
    with pytest.raises(NoForegroundError, match="No object"):
        prepare_rgba_tensor(torch.zeros(20, 20, 4, dtype=torch.uint8))
    line = torch.zeros(20, 20, 4, dtype=torch.uint8)
    line[5, 2:15] = 255
    with pytest.raises(NoForegroundError, match="single row"):
        prepare_rgba_tensor(line)
    with pytest.raises(ValueError):
        prepare_rgba_tensor(torch.zeros(20, 20, 3, dtype=torch.uint8))


def test_opaque_picture_with_never_frames_the_whole_picture():
    image = PIL.Image.open(EXAMPLES / "teapot.png").convert("RGB")
    got = prepare_image_tensor(image, device="cpu", remove_background="never").numpy()
    assert np.abs(got - prepare_image(image, remove_background="never")).max() < 2e-6


def test_the_weights_are_left_with_tf32_as_they_were():
    before = torch.backends.cuda.matmul.allow_tf32
    prepare_image_tensor(PIL.Image.open(EXAMPLES / "chair.png"), device="cpu")
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_a_crop_larger_than_one_band_is_the_same(monkeypatch):
    import remote.preprocess_torch as module

    image = load_image(STORED / "hamburger_soft_2049x1031.png")
    whole = prepare_image_tensor(image, device="cpu", foreground_ratio=0.85)
    monkeypatch.setattr(module, "BAND_PIXELS", 50_000)  # about 25 rows a band
    banded = prepare_image_tensor(image, device="cpu", foreground_ratio=0.85)
    assert torch.equal(whole, banded) or (whole - banded).abs().max() < 1e-6
