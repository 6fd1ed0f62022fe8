"""How much rembg's cutout (colours multiplied by the mask, upstream's way) changes the model's input
against keeping the photo's colours, on photos with soft edges.

Each example cut-out is put on a textured backdrop to make a photo; its own soft alpha stands in for
the mask rembg would return. Both ways then go through the same crop, pad, composite and resize:

    uv run python benchmarks/investigations/cutout_edges.py
"""

from __future__ import annotations

import argparse

import numpy as np
import PIL.Image

from image_to_3d_dev.images import backdrop
from image_to_3d_dev.paths import EXAMPLES
from remote.preprocess import prepare_image


def compare(name: str) -> dict[str, float]:
    cut = PIL.Image.open(EXAMPLES / f"{name}.png").convert("RGBA")
    mask = cut.getchannel("A")
    photo = backdrop(cut.size)
    photo.paste(cut, mask=mask)
    kept = photo.copy()
    kept.putalpha(mask)  # the photo's colours, the mask as alpha
    multiplied = PIL.Image.composite(photo.convert("RGBA"), PIL.Image.new("RGBA", cut.size, 0), mask)  # rembg's cutout
    a = prepare_image(multiplied, remove_background="never")
    b = prepare_image(kept, remove_background="never")
    difference = np.abs(a - b).max(axis=-1)
    soft = np.asarray(mask)
    return {
        "soft_edge_pixels_in_photo": int(((soft > 0) & (soft < 255)).sum()),
        "max": float(difference.max()),
        "mean": float(difference.mean()),
        "pixels_over_1_255": int((difference > 1 / 255).sum()),
        "brightness_shift": float((a - b).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["chair", "hamburger", "robot"])
    args = parser.parse_args()
    print("image      soft px  max     mean     px>1/255 (of 262144)  brightness")
    for name in args.names:
        r = compare(name)
        print(
            f"{name:10} {r['soft_edge_pixels_in_photo']:7d}  {r['max']:.4f}  {r['mean']:.5f}  "
            f"{r['pixels_over_1_255']:8d}              {r['brightness_shift']:+.5f}"
        )


if __name__ == "__main__":
    main()
