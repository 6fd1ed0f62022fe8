"""Run under TRITON_INTERPRET=1 by test_fused_field.py: the fused Triton field kernel on the CPU,
against the PyTorch query it replaces, on the tiny reference model. Prints one JSON object."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from image_to_3d_dev.paths import TINY_MODEL
from remote.extraction import extract_mesh
from remote.precision import FAST, apply_policy
from remote.triposr import fused_field
from remote.triposr.model import FusedField
from remote.triposr.weights import load_model


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((actual - expected).abs() / expected.abs().clamp_min(1e-12)).max())


def main() -> None:
    assert fused_field.interpreted(), "run with TRITON_INTERPRET=1"
    fused_field.BLOCK_POINTS = 128  # the interpreter pays per program; the block size changes no numbers
    pixels = np.asarray(Image.open(TINY_MODEL / "input.png").convert("RGB"), dtype=np.float32) / 255.0
    images = torch.from_numpy(pixels)[None]
    points = torch.rand(3000, 3, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1  # some outside the cube
    report: dict = {}
    with torch.inference_mode():
        exact = load_model(TINY_MODEL, device="cpu")
        scene = exact(images)[0]
        density, colour = exact.query_field(scene, points)

        fused = exact.field(scene, FusedField(exact))  # the float32 weights through the kernel: the same numbers
        fused_density, fused_colour = fused.query(points)
        report["float32"] = {
            "dispatched": fused.fused is not None,
            "density": relative(fused_density, density),
            "colour": float((fused_colour - colour).abs().max()),
        }
        threshold = float(density[(points.abs() < 0.87).all(dim=1)].median())  # a surface through the cube
        plain_mesh = extract_mesh(exact.field(scene), resolution=32, threshold=threshold)  # PyTorch ops
        fused_mesh = extract_mesh(fused, resolution=32, threshold=threshold)
        report["mesh"] = {
            "vertices": [len(plain_mesh.vertices), len(fused_mesh.vertices)],
            "faces": [len(plain_mesh.faces), len(fused_mesh.faces)],
            "max_vertex_difference": float(np.abs(plain_mesh.vertices - fused_mesh.vertices).max())
            if plain_mesh.vertices.shape == fused_mesh.vertices.shape
            else None,
            "max_colour_difference": float(np.abs(plain_mesh.colors - fused_mesh.colors).max())
            if plain_mesh.colors.shape == fused_mesh.colors.shape
            else None,
        }

        fast = apply_policy(load_model(TINY_MODEL, device="cpu"), FAST)
        fast_field = fast.field(fast(images)[0], FusedField(fast))
        fast_density, fast_colour = fast_field.query(points)
        report["fast"] = {
            "dispatched": fast_field.fused is not None,
            "weights_dtype": str(fast_field.fused[0].hidden_weights.dtype) if fast_field.fused else None,
            "density": relative(fast_density, density),
            "colour": float((fast_colour - colour).abs().max()),
        }
        # A kernel that is wrong (here: its raw outputs shifted, densities times e) is switched off.
        wrong = apply_policy(load_model(TINY_MODEL, device="cpu"), FAST)
        wrong_kernel = FusedField(wrong)
        wrong_kernel.mlp().__class__ = _Miscompiled
        wrong_field = wrong.field(wrong(images)[0], wrong_kernel)
        report["disagreeing_kernel"] = {
            "dispatched": wrong_field.fused is not None,
            "enabled": wrong_kernel.enabled,
        }
        # With no tolerance at all, the kernel still runs when it is as close to float32 as the
        # PyTorch query in the same dtypes.
        strict = apply_policy(load_model(TINY_MODEL, device="cpu"), FAST)
        strict_kernel = FusedField(strict, tolerance=0.0)
        strict_field = strict.field(strict(images)[0], strict_kernel)
        report["zero_tolerance"] = {
            "dispatched": strict_field.fused is not None,
            "enabled": strict_kernel.enabled,
            "error": strict_kernel.error,
            "reference_error": strict_kernel.reference_error,
        }
        # A kernel that cannot run (here: it raises) is switched off too, and the query still answers.
        failing = apply_policy(load_model(TINY_MODEL, device="cpu"), FAST)
        failing_kernel = FusedField(failing)
        failing_kernel.mlp().__class__ = _Failing
        failing_field = failing.field(failing(images)[0], failing_kernel)
        answer, _ = failing_field.query(points[:10])
        report["failing_kernel"] = {
            "dispatched": failing_field.fused is not None,
            "enabled": failing_kernel.enabled,
            "answers": bool(torch.isfinite(answer).all()),
        }
    print(json.dumps(report))


class _Miscompiled(fused_field.FusedFieldMLP):
    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs) + 1.0


class _Failing(fused_field.FusedFieldMLP):
    def __call__(self, *args, **kwargs):
        raise RuntimeError("no C compiler")


if __name__ == "__main__":
    main()
