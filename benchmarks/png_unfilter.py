"""PNG decode split in two (remote/png_unfilter.py): libdeflate's inflate on the host, then the rows
unfiltered on the GPU, against libpng's whole decode on the host, for the cut-outs of
image_to_3d_dev/images.py. Median ms of warm runs (the GPU's work timed with CUDA events), and
whether the GPU's pixels equal libpng's. --sweep also times other block shapes of the kernel.

    uv run python benchmarks/png_unfilter.py [--runs 30] [--sweep] [--json]     (CUDA only)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from image_to_3d_dev.images import preprocess_images
from image_to_3d_dev.timing import device_sync, event_ms, median_ms
from remote import png_unfilter
from remote.fast_png import inflate_plain_png, plain_png_pixels

SHAPES = ((128, 2), (256, 4), (256, 8), (512, 4), (512, 8), (1024, 8))  # (rows a block, warps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda")
    sync = device_sync(device)
    rows = []
    for name, data in preprocess_images().items():
        inflated = inflate_plain_png(data)
        if inflated is None:
            continue
        expected = plain_png_pixels(data)
        scanlines = torch.from_numpy(inflated.scanlines.copy()).to(device)
        row: dict[str, object] = {
            "image": name,
            "shape": list(inflated.scanlines.shape),
            "filters": np.bincount(inflated.scanlines[:, 0], minlength=5).tolist(),
            "libpng_ms": round(median_ms(lambda: plain_png_pixels(data), args.runs)[1], 3),
            "inflate_ms": round(median_ms(lambda: inflate_plain_png(data), args.runs)[1], 3),
            "upload_ms": round(
                median_ms(lambda: torch.from_numpy(inflated.scanlines.copy()).to(device), args.runs, sync=sync)[1], 3
            ),
        }
        shapes = SHAPES if args.sweep else ((png_unfilter.ROWS, png_unfilter.NUM_WARPS),)
        for lanes, warps in shapes:
            png_unfilter.NUM_WARPS = warps
            pixels = png_unfilter.unfilter(scanlines, inflated.channels, rows=lanes)
            row[f"unfilter_{lanes}x{warps}_ms"] = round(
                event_ms(lambda: png_unfilter.unfilter(scanlines, inflated.channels, rows=lanes), args.runs), 3
            )
            row[f"same_{lanes}x{warps}"] = bool(np.array_equal(pixels.cpu().numpy(), expected))
        rows.append(row)
    checked = png_unfilter.agrees(device)
    if args.json:
        print(json.dumps({"device": torch.cuda.get_device_name(device), "self_check": checked, "images": rows}))
        return
    print(json.dumps({"device": torch.cuda.get_device_name(device), "self_check": checked}))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
