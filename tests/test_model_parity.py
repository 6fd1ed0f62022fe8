"""Our TripoSR against numbers upstream TripoSR computed (tiny reference pack, float32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL
from remote.triposr.weights import load_model

TOLERANCE = 1e-4  # relative, what upstream parity implies (triposr-reference/README.md)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(TINY_MODEL / "expected.npz"))


@pytest.fixture(scope="module")
def outputs():
    model = load_model(TINY_MODEL, device="cpu")
    pixels = np.asarray(Image.open(TINY_MODEL / "input.png").convert("RGB"), dtype=np.float32) / 255.0
    images = torch.from_numpy(pixels)[None]
    points = torch.from_numpy(np.load(TINY_MODEL / "expected.npz")["grid_points"])
    with torch.inference_mode():
        scene_codes = model(images)
        density, colour = model.query_field(scene_codes[0], points)
        field = model.field(scene_codes[0])
        return {
            "rgb_cond": model.preprocess(images).permute(0, 2, 3, 1)[:, None].numpy(),
            "scene_codes": scene_codes.numpy(),
            "density_act": density[:, None].numpy(),
            "color": colour.numpy(),
            "field_density": field.density(points).numpy(),
            "field_color": field.color(points).numpy(),
        }


def _relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", ["rgb_cond", "scene_codes", "density_act", "color"])
def test_matches_upstream(outputs, expected, name):
    assert outputs[name].shape == expected[name].shape
    assert _relative_error(outputs[name], expected[name]) < TOLERANCE


def test_density_is_elementwise_close(outputs, expected):
    relative = np.abs(outputs["density_act"] - expected["density_act"]) / expected["density_act"]
    assert relative.max() < TOLERANCE


def test_field_object_answers_like_query_field(outputs):
    np.testing.assert_array_equal(outputs["field_density"], outputs["density_act"][:, 0])
    np.testing.assert_array_equal(outputs["field_color"], outputs["color"])
