"""Fit a full-size random TripoSR so that its field for one image is the analytic shape, and
compare its mesh with the analytic one (the fit: image_to_3d_dev/fitted_scene.py, which says what is
fitted and why).

    uv run python benchmarks/fitted_scene.py --device cpu --steps 300 --batch-points 8192 --resolution 128
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from image_to_3d_dev.analytic_field import AnalyticField
from image_to_3d_dev.images import model_input
from image_to_3d_dev.fitted_scene import (
    DEFAULT_BATCH_POINTS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_STEPS,
    compare_with_target,
    fit_scene,
    fit_statistics,
    frozen_planes,
    save_model,
)
from image_to_3d_dev.paths import EXAMPLES
from remote.extraction import extract_mesh


def main() -> None:
    from remote.triposr.weights import build_random_model, resolve_device

    args = parse_args()
    device = resolve_device(args.device)
    start = time.perf_counter()
    model = build_random_model(device=device, decoder_gain=args.decoder_gain, seed=args.seed)
    images = model_input(args.image, device)
    planes = frozen_planes(model, images)
    print(f"random model and its planes: {time.perf_counter() - start:.1f} s")
    target = AnalyticField(threshold=args.threshold, device=str(device))
    before = fit_statistics(model, planes, target, threshold=args.threshold)
    print("before the fit:", _rounded(before))
    stats = fit_scene(
        model,
        images,
        target,
        planes=planes,
        threshold=args.threshold,
        steps=args.steps,
        batch_points=args.batch_points,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    print(f"fit: {stats['seconds']:.1f} s for {args.steps} steps of {args.batch_points} points")
    print("after the fit:", _rounded(stats))
    with torch.inference_mode():
        scene_code = model.post_processor(planes)[0]  # what model(images) gives, without the transformer again
        options = {"resolution": args.resolution, "threshold": args.threshold, "method": "dense"}
        fitted = extract_mesh(model.field(scene_code), **options)
        analytic = extract_mesh(target, **options)
    comparison = compare_with_target(fitted, analytic, args.resolution)
    print(f"mesh at resolution {args.resolution}, fitted vs analytic:", _rounded(comparison))
    if args.save:
        print(f"saved to {save_model(model, args.save)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-points", type=int, default=DEFAULT_BATCH_POINTS)
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--resolution", type=int, default=256, help="of the meshes compared")
    parser.add_argument("--threshold", type=float, default=25.0)
    parser.add_argument("--image", type=Path, default=EXAMPLES / "chair.png")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights and of the fit's points")
    parser.add_argument("--decoder-gain", type=float, default=3.0, help="of the random MLP the fit starts from")
    parser.add_argument("--save", type=Path, help="folder to write config.yaml + model.safetensors to")
    return parser.parse_args()


def _rounded(figures: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in figures.items()}


if __name__ == "__main__":
    main()
