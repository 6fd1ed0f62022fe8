"""Pictures the tests and benchmarks share, and the image as the pipeline gives it to the model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw

from image_to_3d_dev.paths import EXAMPLES, FIXTURES
from remote.preprocess import load_image, prepare_image


def backdrop(size: tuple[int, int], seed: int = 0) -> PIL.Image.Image:
    """A bright, busy background (a gradient with noise), like a room behind the object."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([150 + 80 * x / width, 170 + 60 * y / height, 200 - 50 * x / width], axis=-1)
    noisy = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(noisy, "RGB")


def preprocess_images() -> dict[str, bytes]:
    """PNG bytes by name: the cut-out examples (not the opaque teapot), the upstream-preprocess
    fixtures, and a 4000 x 3000 cut-out (the chair enlarged, a translucent disc beside it)."""
    found = {
        path.stem: path.read_bytes() for path in sorted(EXAMPLES.glob("*.png")) if path.stem != "teapot"
    }  # the teapot is opaque: it would go through rembg
    found |= {path.stem: path.read_bytes() for path in sorted((FIXTURES / "upstream_preprocess").glob("*.png"))}
    big = PIL.Image.new("RGBA", (4000, 3000), (0, 0, 0, 0))
    chair = PIL.Image.open(EXAMPLES / "chair.png").convert("RGBA").resize((2400, 2400))
    big.paste(chair, (800, 300), chair)
    ImageDraw.Draw(big).ellipse((300, 2000, 900, 2600), fill=(200, 40, 40, 200))
    out = io.BytesIO()
    big.save(out, "PNG", compress_level=6)
    found["cutout_4000x3000"] = out.getvalue()
    return found


def model_input(image: Path, device: torch.device | str) -> torch.Tensor:
    """An image that carries its own alpha as the pipeline gives it to the model: (1, S, S, 3) in
    0..1 on `device` (no background removal)."""
    prepared = prepare_image(load_image(image), remove_background="never")
    return torch.from_numpy(prepared).to(device)[None]
