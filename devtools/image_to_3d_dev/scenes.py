"""Model scenes the benchmarks measure on: full-size random weights (optionally fitted to the
analytic shape, fitted_scene.py), the threshold that gives random weights a meaningful surface,
the image as the pipeline gives it to the model, and mesh comparison in voxels."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from image_to_3d_dev import mesh_distance
from image_to_3d_dev.images import model_input
from remote.extraction import Mesh, dense_density, extract_mesh
from remote.options import GenerateOptions
from remote.pipeline import Pipeline
from remote.precision import BAND_LOG_MARGIN, COARSE_STRIDE
from remote.triposr.weights import build_random_model

FITTED_THRESHOLD = 25.0  # upstream's; the fitted scene's surface is fitted at it
MAX_RANDOM_FACES = 250_000
INSIDE_SHARES = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5)
RADIUS = 0.87  # the published config's renderer.radius


def save_random_model(
    folder: Path,
    decoder_gain: float = 1.0,
    fit_image: Path | None = None,
    device: torch.device | None = None,
    fit_sharpness: float = 30.0,
) -> Path:
    """Write full-size random weights as a published-format folder (config.yaml + safetensors).

    With `fit_image`, the post-processor and field MLP are fitted (on `device`) so that the model's
    field for that image is the analytic shape (analytic_field.py, fitted_scene.py): a meaningful
    surface that the model's own reduced precision acts on."""
    from safetensors.torch import save_file

    from remote.triposr.config import DEFAULT_CONFIG_PATH

    build_device = device if fit_image is not None and device is not None else torch.device("cpu")
    model = build_random_model(device=build_device, dtype=torch.float32, decoder_gain=decoder_gain)
    if fit_image is not None:
        from image_to_3d_dev.analytic_field import AnalyticField
        from image_to_3d_dev.fitted_scene import fit_scene

        images = model_input(fit_image, build_device)
        target = AnalyticField(threshold=FITTED_THRESHOLD, sharpness=fit_sharpness, device=str(build_device))
        statistics_ = fit_scene(model, images, target, threshold=FITTED_THRESHOLD, log=None)
        print(f"fitted scene: {statistics_}", flush=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(Path(DEFAULT_CONFIG_PATH).read_text())
    del model
    gc.collect()
    return folder


def random_weights_threshold(pipeline: Pipeline, image_path: Path, resolution: int) -> float:
    """Random weights make a flat, noisy field that rarely reaches upstream's 25: take the largest
    inside share of the cube (from 10% down) whose surface at `resolution` has at most
    MAX_RANDOM_FACES faces, about what a real object gives (upstream's test mesh had 202k faces at
    256). The share is counted over every grid point: a strided sample would line up with the
    field's period (the triplane's 2x2 upsampling) and misjudge it."""
    from remote.marching_cubes import marching_cubes

    scene_code = scene_code_for(pipeline, image_path)
    with torch.inference_mode():
        volume = dense_density(pipeline.field(scene_code), resolution, RADIUS, 1 << 20)
        ordered = volume.flatten().sort(descending=True).values
        for inside in INSIDE_SHARES:
            threshold = _between_levels(ordered, float(ordered[int(inside * (len(ordered) - 1))]))
            faces = len(marching_cubes(volume, threshold)[1])
            if faces <= MAX_RANDOM_FACES:
                break
    print(f"random weights: threshold {threshold:.6g} ({inside:.4%} of the grid inside, {faces} faces before welding)")
    return threshold


def _between_levels(ordered: torch.Tensor, level: float) -> float:
    """Halfway from `level` to the next lower density on the grid. Reduced precision leaves many
    grid points with exactly the same density; a threshold equal to one of those values would
    mesh rounding ties, not the field."""
    lower = ordered[ordered < level]
    return (level + float(lower[0])) / 2 if len(lower) else level


def scene_code_for(pipeline: Pipeline, image_path: Path) -> torch.Tensor:
    """The scene code of the pipeline's model for an image that carries its own alpha."""
    with torch.inference_mode():
        return pipeline.model(model_input(image_path, pipeline.device))[0]


def mesh_for(
    field,
    options: GenerateOptions,
    method: str = "band",
    *,
    coarse_stride: int = COARSE_STRIDE,
    band_log_margin: float = BAND_LOG_MARGIN,
) -> Mesh:
    """The mesh extract_mesh gives for `options`' resolution and threshold (the band's stride and
    margin as a precision policy's)."""
    with torch.inference_mode():
        return extract_mesh(
            field,
            resolution=options.resolution,
            threshold=options.threshold,
            method=method,
            coarse_stride=coarse_stride,
            band_log_margin=band_log_margin,
        )


def compare_meshes(candidate: Mesh, reference: Mesh, resolution: int) -> dict:
    """Surface distance both ways in voxels, parts missing either way, colour difference
    (mesh_distance.py)."""
    voxel = 2 * RADIUS / (resolution - 1)
    return mesh_distance.compare_meshes(
        candidate.vertices, candidate.faces, candidate.colors,
        reference.vertices, reference.faces, reference.colors, voxel,
    )  # fmt: skip
