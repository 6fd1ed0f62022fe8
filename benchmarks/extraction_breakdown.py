"""Where the default path's time goes, step by step, with the device synced between steps.

    python benchmarks/extraction_breakdown.py --decoder-gain 3 --device cuda

Builds full-size random weights (as `pipeline.py --random-weights`; image_to_3d_dev/scenes.py), picks the benchmark's
threshold, then times each step of image -> GLB on its own (median of warm runs): the field query
at several chunk sizes, the band's bookkeeping, marching cubes, welding, normals, colours, the
host copies and the GLB. It guides optimisation; `pipeline.py` is the benchmark of record.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from image_to_3d_dev.paths import EXAMPLES
from image_to_3d_dev.images import model_input
from image_to_3d_dev.scenes import random_weights_threshold, save_random_model, scene_code_for
from image_to_3d_dev.timing import device_sync, median_seconds
from remote import extraction
from remote.extraction import Mesh, band_density, coarse_size_for, vertex_normals, weld
from remote.glb import mesh_to_glb
from remote.marching_cubes import marching_cubes
from remote.pipeline import Pipeline
from remote.triposr.weights import resolve_device


def timed(label: str, fn, device: torch.device, runs: int = 5):
    """Median wall time of `fn` over warm runs (synced), printed; returns fn's last result."""
    result, seconds = median_seconds(fn, runs, sync=device_sync(device))
    print(f"{label:<44}{seconds * 1000:>9.2f} ms")
    return result


def model_pass_with_cuda_graph(pipeline: Pipeline, image: Path, device: torch.device) -> None:
    """The model pass eager, and replayed as one CUDA graph (remote/triposr/cuda_graph.py)."""
    from remote.triposr.cuda_graph import GraphedModel

    images = model_input(image, device)
    graphed = GraphedModel(pipeline.model)
    with torch.inference_mode():
        eager = timed("model pass (eager)", lambda: pipeline.model(images), device)
        replayed = timed("model pass (CUDA graph replay)", lambda: graphed(images), device)
    print(f"  graph vs eager: max difference {(replayed.float() - eager.float()).abs().max():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder-gain", type=float, default=3.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--image", default=str(EXAMPLES / "chair.png"))
    parser.add_argument("--model-only", action="store_true", help="time the model pass only")
    args = parser.parse_args()
    device = resolve_device(args.device)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("remote.extraction").setLevel(logging.DEBUG)
    resolution = args.resolution
    with tempfile.TemporaryDirectory() as folder:
        model_dir = save_random_model(Path(folder), args.decoder_gain)
        pipeline = Pipeline.load(model=model_dir, device=device.type, precision="auto")
        if args.model_only:
            model_pass_with_cuda_graph(pipeline, Path(args.image), device)
            return
        threshold = random_weights_threshold(pipeline, Path(args.image), resolution)
    scene_code = scene_code_for(pipeline, Path(args.image))
    if device.type == "cuda":
        model_pass_with_cuda_graph(pipeline, Path(args.image), device)
    field = pipeline.field(scene_code)
    policy = pipeline.policy  # the band's stride and margin, as generate uses them
    total = resolution**3
    with torch.inference_mode():
        points = torch.rand(total, 3, device=device) * 1.74 - 0.87
        for chunk in (262_144, 1 << 20, 1 << 22):
            timed(
                f"query all {total} points, {chunk} a chunk",
                lambda: [field.density(p) for p in points.split(chunk)],  # noqa: F821 (runs before the del)
                device,
            )
        del points
        volume = timed(
            "band_density (coarse + band query)",
            lambda: band_density(
                field,
                resolution,
                0.87,
                threshold,
                1 << 20,
                coarse_stride=policy.coarse_stride,
                band_log_margin=policy.band_log_margin,
            ),
            device,
        )
        coarse = coarse_size_for(resolution, policy.coarse_stride)
        timed(f"coarse grid only ({coarse}^3)", lambda: extraction.dense_density(field, coarse, 0.87, 262_144), device)
        soup = timed("marching cubes", lambda: marching_cubes(volume, threshold), device)
        print(f"  soup: {len(soup[0])} vertices, {len(soup[1])} faces")
        vertices_i, faces = timed("weld", lambda: weld(*soup), device)
        vertices = (vertices_i * (2.0 * 0.87 / (resolution - 1)) - 0.87).float()
        print(f"  welded: {len(vertices)} vertices, {len(faces)} faces")
        timed("vertex normals", lambda: vertex_normals(vertices, faces), device)
        colors = timed("colour query", lambda: field.color(vertices).float().clamp(0, 1), device)
        timed(
            "host copies (vertices, faces, colours)",
            lambda: (vertices.cpu().numpy(), faces.to(torch.int32).cpu().numpy(), colors.cpu().numpy()),
            device,
        )
    mesh = Mesh(vertices=vertices.cpu().numpy(), faces=faces.to(torch.int32).cpu().numpy(), colors=colors.cpu().numpy())
    timed("GLB", lambda: mesh_to_glb(mesh, normals=False), device)


if __name__ == "__main__":
    main()
