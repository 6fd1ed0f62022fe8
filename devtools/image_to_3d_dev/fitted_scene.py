"""A full-size TripoSR whose field, for one image, is a meaningful shape: the parity benchmark's fitted scene.

Random weights give a density field of noise, and an analytic field never runs the model's reduced
precision. So we keep the random ViT and transformer and fit only the last two parts, the
post-processor (transformer planes -> triplanes) and the field MLP, until the model's field for the
chosen image reproduces a target shape (image_to_3d_dev/analytic_field.py by default). The fast path's fp16
errors then travel the real path (ViT -> transformer -> post-processor -> triplanes -> MLP) and land
on a real surface. The fitted weights replace the random ones in place, so the model can be saved
with safetensors and loaded like any checkpoint.

    uv run python benchmarks/fitted_scene.py --device cpu --steps 300 --batch-points 8192 --resolution 128

(the fit itself is here, shared by that benchmark, benchmarks/pipeline.py --fitted-scene,
benchmarks/investigations/precision_sweep.py and tests/test_fitted_scene.py)

What is fitted, and why:
- The MLP's raw density output `out0` (density = exp(out0 + density_bias)) is regressed to the
  target's `log(density) - density_bias`, clamped to a band of +-BAND around the surface value: the
  surface and the slope across it are fitted, far-away points only have to stay on their side.
- Points: a share uniform in the cube, the rest near the target's surface (surface points found
  once, jittered at every step) and near-surface points count more (SURFACE_WEIGHT), so the fit
  spends its capacity where marching cubes looks.
- Colours: binary cross-entropy on the MLP's colour logits, near the surface only.
- The post-processor is fitted in the planes' principal axes (PlaneUpsampler says why).

Measured (chair.png, seed 0): the defaults (3,000 steps of 65,536 points) take 22 s on an H200 and
give a mesh 0.095 voxel (mean; max 0.99) from the analytic one at resolution 256, fin included
(3,516 vertices in FIN_REGION against 3,496, half-thickness 1.85 voxels against 1.78); 99.5% of
near-surface points on the threshold's correct side. On the 2-core CPU, 300 steps of 8,192 points
take about a minute: 0.28 voxel mean at resolution 128, fin kept, but a few stray blobs.

Caveat for parity figures on this scene: the random transformer spreads the spatial detail the fit
needs over all its directions, weak ones included, so the fitted post-processor passes plane errors
on about 3x more strongly (relative to the scene code's variation) than a random one; the fp16
transformer moved this scene's surface 0.121 voxel on an H200 with every product in fp16, 0.044
with the ends in float32 (remote/precision.py FLOAT32_ENDS; the fp16 MLP and band extraction add almost nothing). A penalty on the post-processor's weights cut that sensitivity little (a third at
most, and the MLP then grew steeper) while it spoiled the fit, so there is none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from remote.extraction import Mesh
from remote.triposr.config import DEFAULT_CONFIG_PATH
from remote.triposr.model import TripoSR

RADIUS = 0.87  # the model's cube is [-RADIUS, RADIUS]^3
DEFAULT_STEPS = 3000
DEFAULT_BATCH_POINTS = 1 << 16
DEFAULT_LEARNING_RATE = 2e-3
BAND = 8.0  # out0 is fitted within +-BAND of the surface value; beyond, only its side counts
UNIFORM_SHARE = 0.25  # of each batch; the rest are jittered surface points
SURFACE_JITTER = 0.03  # standard deviation of the jitter around surface points (model units)
SURFACE_WEIGHT = 4.0  # extra weight of a point at the surface, falling off as exp(-|out0 - surface|)
SURFACE_POOL = 1 << 18  # surface points kept for jittering
COLOR_WEIGHT = 1.0
# The analytic scene's thin fin (x in [-0.15, 0.15], y = 0, z in [0, 0.75]) above the ball, where
# nothing else is: a mesh with vertices here kept the fin.
FIN_REGION = ((-0.15, 0.15), (-0.1, 0.1), (0.5, 0.75))


def frozen_planes(model: TripoSR, images: torch.Tensor) -> torch.Tensor:
    """The transformer's planes (B, 3, C, P, P) for `images` (B, H, W, 3) in 0..1, float32: what the
    model's own forward hands the post-processor (taken there, so this follows whatever `_encode`
    does before it), computed once because the fit leaves that part as it is."""
    taken: list[torch.Tensor] = []
    hook = model.post_processor.register_forward_pre_hook(lambda module, inputs: taken.append(inputs[0]))
    try:
        with torch.no_grad():
            model(images)
    finally:
        hook.remove()
    return taken[0].float()


def fit_scene(
    model: TripoSR,
    images: torch.Tensor,
    target,
    *,
    planes: torch.Tensor | None = None,
    threshold: float = 25.0,
    steps: int = DEFAULT_STEPS,
    batch_points: int = DEFAULT_BATCH_POINTS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Fit `model.post_processor` and `model.decoder` (in place, float32) so that the model's field
    for `images` (1, H, W, 3) reproduces `target` (anything with density(points), color(points));
    returns fit statistics (see `fit_statistics`) with the final losses and the time taken.
    `planes` from `frozen_planes(model, images)` may be passed when the caller already has them."""
    _check_float32(model)
    if planes is None:
        planes = frozen_planes(model, images)
    if planes.shape[0] != 1:
        raise ValueError(f"the fit makes one image's field the target; got planes for {planes.shape[0]} images")
    device = planes.device
    generator = torch.Generator(device=device).manual_seed(seed)
    surface_value = math.log(threshold) - model.config.renderer.density_bias
    sampler = PointSampler(target, threshold, generator, device)
    upsampler = PlaneUpsampler(model.post_processor.upsample, planes[0])
    parameters = [upsampler.coefficients, upsampler.bias, *model.decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine(step, steps))
    start = time.perf_counter()
    losses = {"density": math.nan, "color": math.nan}
    for step in range(steps):
        points = sampler.batch(batch_points)
        with torch.no_grad():
            wanted_out0 = torch.log(target.density(points).clamp_min(1e-30)) - model.config.renderer.density_bias
            wanted_color = target.color(points)
        out = raw_field(model, upsampler.scene_code(), points)
        density_loss, color_loss = fit_losses(out, wanted_out0, wanted_color, surface_value)
        optimizer.zero_grad(set_to_none=True)
        (density_loss + COLOR_WEIGHT * color_loss).backward()
        optimizer.step()
        schedule.step()
        losses = {"density": float(density_loss.detach()), "color": float(color_loss.detach())}
        if log and (step % max(1, steps // 10) == 0 or step == steps - 1):
            log(f"step {step:5d}: density loss {losses['density']:.4f}, colour loss {losses['color']:.4f}")
    upsampler.store()
    seconds = time.perf_counter() - start
    statistics = fit_statistics(model, planes, target, threshold=threshold, seed=seed + 1)
    return {"steps": steps, "batch_points": batch_points, "seconds": seconds, "final_loss": losses, **statistics}


class PlaneUpsampler:
    """The post-processor's weights during the fit, in the principal axes of the frozen planes.

    The transformer's 3 * P * P plane vectors (C = 1024 wide) have a few directions far stronger
    than the rest, so Adam, which steps every coordinate alike, mostly shakes the output along those
    in the plain weight layout (the fit stalled at a constant field). In the planes' principal axes
    (right singular vectors V) each coordinate moves one independent direction, and the fit
    converges. weight = V @ coefficients, so `store` puts back an ordinary ConvTranspose2d.
    """

    def __init__(self, upsample: torch.nn.ConvTranspose2d, planes: torch.Tensor) -> None:
        self.upsample = upsample
        self.planes = planes  # (3, C, P, P), one item
        vectors = planes.permute(0, 2, 3, 1).reshape(-1, planes.shape[1])
        self.basis = torch.linalg.svd(vectors, full_matrices=False).Vh.T  # (C, C), orthonormal columns
        weight = upsample.weight.detach().reshape(planes.shape[1], -1)  # (C, out * 2 * 2)
        self.coefficients = (self.basis.T @ weight).clone().requires_grad_()
        self.bias = upsample.bias.detach().clone().requires_grad_()

    def weight(self) -> torch.Tensor:
        return (self.basis @ self.coefficients).view(self.upsample.weight.shape)

    def scene_code(self) -> torch.Tensor:
        """(3, out, 2P, 2P): what model.post_processor gives for these planes with the current weights."""
        stride = self.upsample.stride
        return F.conv_transpose2d(self.planes, self.weight(), self.bias, stride=stride)

    def store(self) -> None:
        with torch.no_grad():
            self.upsample.weight.copy_(self.weight())
            self.upsample.bias.copy_(self.bias)


def raw_field(model: TripoSR, scene_code: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The MLP's raw (N, 4) outputs at `points` for one scene code (3, C, R, R): query_field's
    sampling and MLP, with gradients and without the activation."""
    coords = points / model.config.renderer.radius
    grids = torch.stack((coords[:, [0, 1]], coords[:, [0, 2]], coords[:, [1, 2]]))[:, None]
    sampled = F.grid_sample(scene_code, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    return model.decoder(sampled.view(-1, points.shape[0]).t())


def fit_losses(
    out: torch.Tensor, wanted_out0: torch.Tensor, wanted_color: torch.Tensor, surface_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Density: squared error of out0 against the target clamped to +-BAND around the surface value,
    where a point beyond the band counts only while it is less extreme than the band's edge;
    near-surface points weigh more. Colour: cross-entropy on the logits, within the band only."""
    distance = wanted_out0 - surface_value
    error = out[:, 0] - wanted_out0.clamp(surface_value - BAND, surface_value + BAND)
    error = torch.where(distance < -BAND, error.clamp_min(0), error)  # far outside: only too dense counts
    error = torch.where(distance > BAND, error.clamp_max(0), error)  # deep inside: only too thin counts
    weight = 1 + SURFACE_WEIGHT * torch.exp(-distance.abs())
    density_loss = (weight * error.square()).sum() / weight.sum()
    in_band = distance.abs() < BAND
    color_loss = F.binary_cross_entropy_with_logits(out[in_band, 1:4], wanted_color[in_band])
    return density_loss, color_loss


class PointSampler:
    """Training points: a share uniform in the cube, the rest surface points of the target (found
    once from a large uniform draw: the points whose density is within a factor e of the threshold)
    moved by Gaussian jitter, so both sides of the surface and its slope are seen."""

    def __init__(self, target, threshold: float, generator: torch.Generator, device: torch.device) -> None:
        self.generator = generator
        self.device = device
        pool = []
        found = 0
        for _ in range(1000):  # a bound, in case the target has no surface in the cube
            points = self.uniform(1 << 20)
            near = (torch.log(target.density(points).clamp_min(1e-30)) - math.log(threshold)).abs() < 1.0
            pool.append(points[near])
            found += int(near.sum())
            if found >= SURFACE_POOL:
                break
        self.surface = torch.cat(pool)[:SURFACE_POOL]
        if len(self.surface) == 0:
            raise ValueError("the target has no surface at this threshold inside the cube")

    def uniform(self, count: int) -> torch.Tensor:
        return (torch.rand(count, 3, generator=self.generator, device=self.device) * 2 - 1) * RADIUS

    def near_surface(self, count: int) -> torch.Tensor:
        picks = torch.randint(len(self.surface), (count,), generator=self.generator, device=self.device)
        jitter = torch.randn(count, 3, generator=self.generator, device=self.device) * SURFACE_JITTER
        return (self.surface[picks] + jitter).clamp(-RADIUS, RADIUS)

    def batch(self, count: int) -> torch.Tensor:
        uniform = int(count * UNIFORM_SHARE)
        return torch.cat((self.uniform(uniform), self.near_surface(count - uniform)))


def fit_statistics(
    model: TripoSR, planes: torch.Tensor, target, *, threshold: float = 25.0, points: int = 1 << 17, seed: int = 1
) -> dict:
    """How well the model's field matches the target on fresh points: the share on the correct side
    of the threshold (uniform in the cube; near the surface; near the surface in FIN_REGION), and
    near the surface the mean |out0 error| (in log-density: 1 is a factor e) and colour error."""
    generator = torch.Generator(device=planes.device).manual_seed(seed)
    sampler = PointSampler(target, threshold, generator, planes.device)
    surface_value = math.log(threshold) - model.config.renderer.density_bias
    fin_low = torch.tensor([low for low, _ in FIN_REGION], device=planes.device)
    fin_high = torch.tensor([high for _, high in FIN_REGION], device=planes.device)
    results = {}
    with torch.no_grad():
        scene_code = model.post_processor(planes[:1])[0]
        for name, sample in (("uniform", sampler.uniform(points)), ("near_surface", sampler.near_surface(points))):
            out = torch.cat([raw_field(model, scene_code, chunk) for chunk in sample.split(1 << 16)])
            wanted = torch.log(target.density(sample).clamp_min(1e-30)) - model.config.renderer.density_bias
            correct = (out[:, 0] > surface_value) == (wanted > surface_value)
            results[f"correct_side_{name}"] = float(correct.float().mean())
            if name == "near_surface":
                in_fin = ((sample >= fin_low) & (sample <= fin_high)).all(dim=1)
                results["correct_side_fin"] = float(correct[in_fin].float().mean()) if in_fin.any() else math.nan
                at_surface = (wanted - surface_value).abs() < 1.0
                results["mean_out0_error_at_surface"] = float((out[:, 0] - wanted)[at_surface].abs().mean())
                colour_error = (torch.sigmoid(out[:, 1:4]) - target.color(sample)).abs()
                results["mean_colour_error_at_surface"] = float(colour_error[at_surface].mean())
    return results


def compare_with_target(fitted: Mesh, target: Mesh, resolution: int) -> dict:
    """Both meshes in voxels: vertex counts, mean and max nearest-vertex distance both ways (a part
    missing in one shows up as a large max), mean colour difference at nearest vertices, and the
    vertices each has in FIN_REGION with their median |y| (the fin's half-thickness)."""
    from scipy.spatial import cKDTree

    voxel = 2 * RADIUS / (resolution - 1)
    to_target, nearest = cKDTree(target.vertices).query(fitted.vertices)
    to_fitted, _ = cKDTree(fitted.vertices).query(target.vertices)
    both = np.concatenate([to_target, to_fitted]) / voxel
    report = {
        "vertices": [len(fitted.vertices), len(target.vertices)],
        "mean_distance_voxels": float(both.mean()),
        "max_distance_voxels": float(both.max()),
        "fitted_to_target_max_voxels": float(to_target.max() / voxel),
        "target_to_fitted_max_voxels": float(to_fitted.max() / voxel),
        "mean_colour_difference": float(np.abs(fitted.colors - target.colors[nearest]).mean()),
    }
    for name, mesh in (("fitted", fitted), ("target", target)):
        inside = np.ones(len(mesh.vertices), dtype=bool)
        for axis, (low, high) in enumerate(FIN_REGION):
            inside &= (mesh.vertices[:, axis] >= low) & (mesh.vertices[:, axis] <= high)
        half = float(np.median(np.abs(mesh.vertices[inside, 1])) / voxel) if inside.any() else math.nan
        report[f"fin_vertices_{name}"] = int(inside.sum())
        report[f"fin_half_thickness_voxels_{name}"] = half
    return report


def _check_float32(model: TripoSR) -> None:
    """The fit is the float32 reference: its planes and weights must not carry the fast path's rounding."""
    dtypes = {parameter.dtype for parameter in model.parameters()}
    if dtypes != {torch.float32}:
        raise ValueError(
            f"fit a float32 model (remote.precision.apply_policy after fitting); it has {sorted(map(str, dtypes))}"
        )


def _cosine(step: int, steps: int) -> float:
    """Learning-rate factor: cosine from 1 down to 1% over the fit."""
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps)))


def save_model(model: TripoSR, folder: Path, config_path: Path = DEFAULT_CONFIG_PATH) -> Path:
    """Write the model as a published-format folder (config.yaml + model.safetensors), which
    `load_model(folder)` reads like any checkpoint; `config_path` is the config it was built from."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(Path(config_path).read_text())
    return folder
