"""The grid spans the model's own cube: renderer.radius from its config, not a constant."""

from __future__ import annotations

import dataclasses

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import TINY_MODEL
from glb_reader import read_glb
from remote.extraction import extract_mesh
from remote.pipeline import GenerateOptions, Pipeline
from remote.preprocess import BackgroundRemover
from remote.triposr.weights import load_model


def with_radius(model, radius: float):
    renderer = dataclasses.replace(model.config.renderer, radius=radius)
    model.config = dataclasses.replace(model.config, renderer=renderer)
    return model


@pytest.fixture(scope="module")
def scene():
    model = load_model(TINY_MODEL, device="cpu")
    pixels = np.asarray(PIL.Image.open(TINY_MODEL / "input.png").convert("RGB"), dtype=np.float32) / 255.0
    with torch.inference_mode():
        scene_code = model(torch.from_numpy(pixels)[None])[0]
        grid = torch.linspace(-0.87, 0.87, 32)
        points = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), dim=-1).reshape(-1, 3)
        threshold = float(model.field(scene_code).density(points).median())
    return model, scene_code, threshold


@pytest.mark.parametrize("radius", [0.5, 1.3])
def test_a_model_with_another_radius_gives_the_same_surface_scaled(scene, radius):
    """The field reads points / radius, so the same scene on a cube of another radius is the same
    surface scaled by radius / 0.87: the grid must follow the config to find it."""
    model, scene_code, threshold = scene
    options = {"resolution": 32, "threshold": threshold, "method": "dense"}
    with torch.inference_mode():
        reference = extract_mesh(model.field(scene_code), **options)
        try:
            scaled = extract_mesh(with_radius(model, radius).field(scene_code), **options)
        finally:
            with_radius(model, 0.87)
    assert len(reference.faces) > 100
    np.testing.assert_array_equal(scaled.faces, reference.faces)
    np.testing.assert_allclose(
        scaled.vertices, reference.vertices * (radius / 0.87), rtol=1e-5, atol=1e-4
    )  # 0.2% of a voxel
    np.testing.assert_allclose(scaled.colors, reference.colors, atol=1e-5)


def test_the_pipeline_extracts_on_the_models_cube(scene):
    model, _, threshold = scene
    model = with_radius(load_model(TINY_MODEL, device="cpu"), 0.5)
    pipeline = Pipeline.from_model(model, torch.device("cpu"), BackgroundRemover(), precision="float32")
    image = PIL.Image.open(TINY_MODEL / "input.png").convert("RGBA")
    result = pipeline.generate(image, GenerateOptions(resolution=32, threshold=threshold, remove_background="never"))
    positions = read_glb(result.glb).positions  # the compact GLB: trimesh would not dequantise
    assert np.abs(positions).max() <= 0.5 + 1e-6
