"""Which parts of the model pass may run their matrix products in fp16: surface error against time.

    uv run python benchmarks/investigations/precision_sweep.py --device cuda

On the fitted scene (image_to_3d_dev/fitted_scene.py: random ViT and transformer, post-processor and
field MLP fitted to the analytic shape), each configuration below runs the model pass as the fast
path does (CUDA graph on CUDA) and reports its median time, how far its scene code is from float32
(mean |difference| / mean |value|), and how far the surface moves: the float32 field on that scene
code, dense grid, against the float32 dense path (surface distance in voxels, mesh_distance.py).
Each configuration is a PrecisionPolicy (remote/precision.py): fp16 products except the layers it
keeps in float32, which run in float32 (no TF32) unless its `tf32` says otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from image_to_3d_dev.images import model_input
from image_to_3d_dev.scenes import FITTED_THRESHOLD, compare_meshes, mesh_for
from image_to_3d_dev.paths import EXAMPLES
from image_to_3d_dev.timing import device_sync, median_seconds
from remote.pipeline import GenerateOptions
from remote.precision import FLOAT32_ENDS, PrecisionPolicy, apply_policy
from remote.triposr.cuda_graph import GraphedModel
from remote.triposr.model import TripoSR
from remote.triposr.weights import build_random_model, resolve_device


def vit_layers(model: TripoSR, first: int = 0, last: int | None = None) -> tuple[str, ...]:
    indices = range(len(model.image_tokenizer.model.encoder.layer))[first:last]
    return tuple(f"image_tokenizer.model.encoder.layer.{index}" for index in indices)


def blocks(model: TripoSR, first: int = 0, last: int | None = None) -> tuple[str, ...]:
    indices = range(len(model.backbone.transformer_blocks))[first:last]
    return tuple(f"backbone.transformer_blocks.{index}" for index in indices)


def fp16_except(*float32_layers: str, tf32: str = "off") -> PrecisionPolicy:
    """fp16 products in the ViT and transformer except `float32_layers` (module names); the field
    MLP stays float32 (the sweep measures the scene code)."""
    return PrecisionPolicy(matmul_dtype="float16", float32_layers=float32_layers, tf32=tf32)


# name -> the configuration's policy for a model. Parts are whole blocks (a block runs in its
# first layer's dtype).
CONFIGS: dict[str, Callable[[TripoSR], PrecisionPolicy]] = {
    "all fp16": lambda m: fp16_except(),
    "ends float32 (default)": lambda m: fp16_except(*FLOAT32_ENDS),
    "ViT TF32": lambda m: fp16_except("image_tokenizer", tf32="on"),
    "ViT layers 0-5 float32": lambda m: fp16_except("image_tokenizer.model.embeddings", *vit_layers(m, 0, 6)),
    "ViT float32": lambda m: fp16_except("image_tokenizer"),
    "ViT and ends float32": lambda m: fp16_except("image_tokenizer", *FLOAT32_ENDS),
    "ViT, ends, blocks 12-15 float32": lambda m: fp16_except("image_tokenizer", *FLOAT32_ENDS, *blocks(m, 12)),
    "transformer float32": lambda m: fp16_except("backbone"),
}


REFERENCE_ROW = "float32, TF32 convolutions (PyTorch's default)"


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    options = GenerateOptions(resolution=args.resolution, threshold=FITTED_THRESHOLD, remove_background="never")
    tables = {Path(image).stem: sweep_scene(Path(image), args, device, options) for image in args.images}
    print_summary(tables, device)
    print(json.dumps(tables))


def sweep_scene(image: Path, args: argparse.Namespace, device: torch.device, options: GenerateOptions) -> dict:
    """Fit the scene for `image`, then measure every configuration on it."""
    model, images = fitted_model(image, args, device)
    with torch.inference_mode():
        exact_code = model(images)[0]
        exact_mesh = mesh_for(model.field(exact_code), options, method="dense")
        tf32_conv_code = model(images, tf32="convolutions")[0]  # PyTorch's default
    rows = {REFERENCE_ROW: measure_code(model, exact_code, tf32_conv_code, exact_mesh, options, None)}
    for name, config in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        policy = config(model)
        candidate = apply_policy(copy.deepcopy(model), policy)
        seconds, code = time_model_pass(candidate, images, args.runs, policy.tf32)
        rows[name] = measure_code(model, exact_code, code, exact_mesh, options, seconds)
        del candidate, code
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(image.stem, name, json.dumps(rows[name]), flush=True)
    del model
    return rows


def fitted_model(image: Path, args: argparse.Namespace, device: torch.device) -> tuple[TripoSR, torch.Tensor]:
    from image_to_3d_dev.analytic_field import AnalyticField
    from image_to_3d_dev.fitted_scene import fit_scene

    model = build_random_model(device=device, dtype=torch.float32, decoder_gain=3.0)
    images = model_input(image, device)
    target = AnalyticField(threshold=FITTED_THRESHOLD, sharpness=args.fit_sharpness, device=str(device))
    fit_scene(model, images, target, threshold=FITTED_THRESHOLD, steps=args.fit_steps, log=None)
    model.eval()
    return model, images


def time_model_pass(model: TripoSR, images: torch.Tensor, runs: int, tf32: str) -> tuple[float, torch.Tensor]:
    """Median seconds of the model pass as the fast path runs it, and its scene code."""
    run = GraphedModel(model) if images.is_cuda else model
    with torch.inference_mode():
        code, seconds = median_seconds(
            lambda: run(images, tf32=tf32)[0], runs, warmup=3, sync=device_sync(images.device)
        )
    return seconds, code


def measure_code(
    model: TripoSR, exact_code: torch.Tensor, code: torch.Tensor, exact_mesh, options, seconds: float | None
) -> dict:
    with torch.inference_mode():
        mesh = mesh_for(model.field(code.float()), options, method="dense")
    figures = compare_meshes(mesh, exact_mesh, options.resolution)
    return {
        "model_ms": None if seconds is None else seconds * 1000,
        "scene_code_relative_error": float((code.float() - exact_code).abs().mean() / exact_code.abs().mean()),
        "surface_mean_voxels": figures["mean_distance_voxels"],
        "surface_p99_voxels": figures["p99_distance_voxels"],
        "parts_missing": figures["missing_parts"]["visible"],
        "parts_extra": figures["extra_parts"]["visible"],
    }


def print_summary(tables: dict, device: torch.device) -> None:
    """One row per configuration: model time, then each scene's code error and surface mean, and
    the surface mean over the scenes."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {name}; surface moved (voxels, mean) by the configuration's scene code: float32 field, "
        "dense grid, against float32; code = scene code's relative error"
    )
    scenes = list(tables)
    header = f"{'configuration':<50}{'model ms':>9}" + "".join(f"{s[:10] + ' code':>16}{'surface':>9}" for s in scenes)
    print(header + f"{'mean':>8}")
    for label in tables[scenes[0]]:
        rows = [tables[scene][label] for scene in scenes]
        ms = "-" if rows[0]["model_ms"] is None else f"{rows[0]['model_ms']:.1f}"
        line = f"{label:<50}{ms:>9}"
        for row in rows:
            line += f"{row['scene_code_relative_error']:>16.2e}{row['surface_mean_voxels']:>9.3f}"
        mean = statistics.mean(row["surface_mean_voxels"] for row in rows)
        print(line + f"{mean:>8.3f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument(
        "--images",
        nargs="+",
        default=[str(EXAMPLES / "chair.png")],
        help="one fitted scene per image (the random ViT and transformer see each)",
    )
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--fit-sharpness", type=float, default=30.0, help="as benchmarks/pipeline.py")
    parser.add_argument("--fit-steps", type=int, default=3000)
    parser.add_argument("--only", nargs="*", help="configuration names to run (default all)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
