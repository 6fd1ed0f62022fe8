"""How much decoding a large JPEG at reduced scale (load_image's draft mode) changes the model's
input against decoding every pixel, as upstream does.

Each example cut-out is enlarged to a camera-sized photo on a busy backdrop and saved as a JPEG;
its own alpha, at the decoded size, stands in for rembg's mask. Both decodes then go through the
same cutout, crop, pad, composite and resize:

    uv run python benchmarks/investigations/jpeg_draft.py
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import PIL.Image

from image_to_3d_dev.images import backdrop
from image_to_3d_dev.paths import EXAMPLES
from remote.preprocess import load_image, prepare_image


def photo_jpeg(name: str, long_side: int) -> tuple[bytes, PIL.Image.Image]:
    """A JPEG (quality 92) of the example on a backdrop, and the example's alpha at that size."""
    cut = PIL.Image.open(EXAMPLES / f"{name}.png").convert("RGBA")
    scale = long_side / max(cut.size)
    cut = cut.resize((round(cut.width * scale), round(cut.height * scale)), PIL.Image.Resampling.LANCZOS)
    photo = backdrop(cut.size)
    photo.paste(cut, mask=cut.getchannel("A"))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue(), cut.getchannel("A")


def model_input(decoded: PIL.Image.Image, alpha: PIL.Image.Image) -> np.ndarray:
    mask = alpha.resize(decoded.size, PIL.Image.Resampling.BILINEAR)
    cutout = PIL.Image.composite(decoded.convert("RGBA"), PIL.Image.new("RGBA", decoded.size, 0), mask)
    return prepare_image(cutout, remove_background="never")


def compare(name: str, long_side: int) -> dict[str, float]:
    data, alpha = photo_jpeg(name, long_side)
    started = time.perf_counter()
    reduced = load_image(data)
    reduced_s = time.perf_counter() - started
    started = time.perf_counter()
    with PIL.Image.open(io.BytesIO(data)) as image:
        full = image.convert("RGB")  # every pixel, as upstream's Image.open(...).convert
    full_s = time.perf_counter() - started
    difference = np.abs(model_input(reduced, alpha) - model_input(full, alpha)).max(axis=-1)
    return {
        "decoded": f"{reduced.width}x{reduced.height}",
        "max": float(difference.max()),
        "mean": float(difference.mean()),
        "pixels_over_1_255": int((difference > 1 / 255).sum()),
        "reduced_ms": 1000 * reduced_s,
        "full_ms": 1000 * full_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["chair", "hamburger", "robot"])
    parser.add_argument("--long-side", type=int, default=4500)
    args = parser.parse_args()
    print(f"photo long side {args.long_side} px, JPEG quality 92")
    print("image      decoded    max     mean     px>1/255 (of 262144)  reduced ms  full ms")
    for name in args.names:
        r = compare(name, args.long_side)
        print(
            f"{name:10} {r['decoded']:10} {r['max']:.4f}  {r['mean']:.5f}  {r['pixels_over_1_255']:<22d}"
            f"{r['reduced_ms']:10.0f}  {r['full_ms']:7.0f}"
        )


if __name__ == "__main__":
    main()
