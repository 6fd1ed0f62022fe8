"""Decode + preprocessing, the CPU path (numpy, `prepare_image`) against the device path
(`prepare_image_tensor`: the uint8 picture uploaded, cropped, composited and resized on the device),
with the largest difference between their model inputs.

    uv run python benchmarks/preprocess_device.py --device cuda [--runs 30] [--json]

Images: the three example cut-outs (512² PNG), upstream's parity fixtures (97x131 to 2049x1031,
one with soft alpha) and a 4000x3000 cut-out PNG made here. For each: PNG bytes -> `load_image`
(libpng or Pillow, `remote/fast_png.py`; the same for both paths) and each path's preprocessing to the (512, 512, 3) float32
input on the device (the CPU path's time includes its upload, as the pipeline pays it), median ms of
warm runs with the device synchronised. Prints a table, or one JSON line with --json.
"""

from __future__ import annotations

import argparse
import json

import torch

from image_to_3d_dev.images import preprocess_images
from image_to_3d_dev.timing import device_sync, median_ms
from remote.preprocess import load_image, prepare_image
from remote.preprocess_torch import prepare_image_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--ratio", type=float, default=0.85)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = device_sync(device)
    rows = []
    for name, data in preprocess_images().items():
        picture, decode_ms = median_ms(lambda: load_image(data), args.runs, sync=sync)
        cpu, cpu_ms = median_ms(
            lambda: torch.from_numpy(prepare_image(picture, foreground_ratio=args.ratio)).to(device),
            args.runs,
            sync=sync,
        )
        with torch.inference_mode():
            gpu, gpu_ms = median_ms(
                lambda: prepare_image_tensor(picture, device=device, foreground_ratio=args.ratio), args.runs, sync=sync
            )
        rows.append(
            {
                "image": name,
                "size": list(picture.size),
                "png_bytes": len(data),
                "decode_ms": round(decode_ms, 3),
                "cpu_preprocess_ms": round(cpu_ms, 3),
                "device_preprocess_ms": round(gpu_ms, 3),
                "cpu_total_ms": round(decode_ms + cpu_ms, 3),
                "device_total_ms": round(decode_ms + gpu_ms, 3),
                "max_difference": float((cpu - gpu).abs().max()),
            }
        )
    report = {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "images": rows,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['name']} (torch {report['torch']}), median of {args.runs} warm runs, ms")
    print(
        f"{'image':28s} {'size':>11s} {'decode':>8s} {'cpu prep':>9s} {'dev prep':>9s} {'cpu tot':>8s} {'dev tot':>8s} {'max diff':>9s}"
    )
    for row in rows:
        size = "x".join(map(str, row["size"]))
        print(
            f"{row['image']:28s} {size:>11s} {row['decode_ms']:8.2f} {row['cpu_preprocess_ms']:9.2f} "
            f"{row['device_preprocess_ms']:9.2f} {row['cpu_total_ms']:8.2f} {row['device_total_ms']:8.2f} "
            f"{row['max_difference']:9.2e}"
        )


if __name__ == "__main__":
    main()
