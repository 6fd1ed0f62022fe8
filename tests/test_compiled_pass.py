"""The compiled model pass (GraphedModel.compile, what the server's warm-up does on CUDA): used only
when it agrees with the eager pass; a compile that fails or disagrees leaves the eager pass."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from image_to_3d_dev.paths import TINY_MODEL
from remote.precision import FAST, FLOAT32, FLOAT32_BAND
from remote.triposr.cuda_graph import GraphedModel
from remote.triposr.weights import load_model


@pytest.fixture(scope="module")
def model():
    return load_model(TINY_MODEL, device="cpu")


def images() -> torch.Tensor:
    return torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))


def pixels(model) -> torch.Tensor:
    return model.preprocess(images())


def test_only_the_fast_policy_compiles() -> None:
    assert FAST.compile_model and not FLOAT32.compile_model and not FLOAT32_BAND.compile_model


@pytest.mark.slow  # inductor compiles C++ on the CPU
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor's CPU backend needs a C++ compiler")
def test_a_compiled_pass_that_agrees_is_used(model) -> None:
    graphed = GraphedModel(model)
    with torch.inference_mode():
        assert graphed.compile(pixels(model)) and graphed.compiled
        expected = model(images())
        got = graphed(images())

    assert graphed.encode is not model.encode
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4


def test_a_compiled_pass_that_disagrees_is_not_used(model, caplog) -> None:
    graphed = GraphedModel(model)
    wrong = lambda function: lambda pixels: function(pixels) * 1.5  # noqa: E731 - a miscompiled pass
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        assert not graphed.compile(pixels(model), compiler=wrong)
        assert torch.equal(graphed(images()), model(images()))

    assert not graphed.compiled and graphed.encode == model.encode
    assert "disagrees" in caplog.text


def test_a_compile_that_fails_is_not_used(model, caplog) -> None:
    def failing(function):
        raise RuntimeError("no C compiler")

    graphed = GraphedModel(model)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        assert not graphed.compile(pixels(model), compiler=failing)

    assert not graphed.compiled and "no C compiler" in caplog.text
