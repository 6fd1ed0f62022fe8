"""PNG decode: Pillow against libpng through imagecodecs (`remote/fast_png.py`, what load_image
uses for plain 8-bit RGB(A) PNGs since issue #16), OpenCV's imdecode (installed with rembg) and
pyspng (libspng; not a dependency: `uv run --with pyspng==0.1.4 python benchmarks/investigations/png_decode.py`),
on the images of image_to_3d_dev/images.py. Median ms of warm runs, one thread each, and
whether each decoder's pixels equal Pillow's (OpenCV's in BGRA order, compared as such).

"threads": the chair cut-out decoded 40 times by one thread, then 40 times by each of two threads
at once, for Pillow and libpng: a decoder that holds the GIL takes twice as long with two threads;
one that releases it about as long as with one (given two free cores).

"isal": the pixel data inflated by ISA-L (the server's gzip library, 2.5x zlib's inflate here) and
re-wrapped as stored (uncompressed) deflate blocks, so Pillow only unfilters; the time includes the
re-wrapping. It tests whether zlib's inflate inside Pillow is worth replacing.

    uv run python benchmarks/investigations/png_decode.py [--runs 15] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Callable

import cv2
import numpy as np
import PIL.Image
from isal import isal_zlib

from image_to_3d_dev.images import preprocess_images
from image_to_3d_dev.timing import median_ms
from remote.fast_png import plain_png_pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    try:
        import pyspng  # type: ignore[import-not-found]
    except ImportError:
        pyspng = None
    rows = []
    for name, data in preprocess_images().items():
        pillow, pillow_ms = median_ms(lambda: np.asarray(PIL.Image.open(io.BytesIO(data))), args.runs)
        opencv, opencv_ms = median_ms(
            lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), args.runs
        )
        libpng, libpng_ms = median_ms(lambda: plain_png_pixels(data), args.runs)
        isal, isal_ms = median_ms(lambda: np.asarray(PIL.Image.open(io.BytesIO(_inflated_png(data)))), args.runs)
        bgra = pillow[..., [2, 1, 0, 3]] if pillow.shape[-1] == 4 else pillow[..., ::-1]
        row = {
            "image": name,
            "shape": list(pillow.shape),
            "pillow_ms": round(pillow_ms, 2),
            "opencv_ms": round(opencv_ms, 2),
            "opencv_same": bool(np.array_equal(bgra, opencv)),
            "libpng_ms": round(libpng_ms, 2) if libpng is not None else None,
            "libpng_same": bool(np.array_equal(pillow, libpng)) if libpng is not None else None,
            "isal_ms": round(isal_ms, 2),
            "isal_same": bool(np.array_equal(pillow, isal)),
        }
        if pyspng is not None:
            spng, spng_ms = median_ms(lambda: pyspng.load(data), args.runs)
            row |= {"pyspng_ms": round(spng_ms, 2), "pyspng_same": bool(np.array_equal(pillow, spng))}
        rows.append(row)
    chair = preprocess_images()["chair"]
    threads = {
        "pillow": _threads_ms(lambda: np.asarray(PIL.Image.open(io.BytesIO(chair)))),
        "libpng": _threads_ms(lambda: plain_png_pixels(chair)),
    }
    if args.json:
        print(json.dumps({"images": rows, "threads": threads}))
        return
    for name, times in threads.items():
        print(
            f"{name}: 40 decodes {times['one_thread_ms']:.0f} ms, 2 x 40 on two threads {times['two_threads_ms']:.0f} ms"
        )
    for row in rows:
        extra = f" pyspng {row['pyspng_ms']:8.2f} (same {row['pyspng_same']})" if "pyspng_ms" in row else ""
        print(
            f"{row['image']:26s} {'x'.join(map(str, row['shape'])):>12s} pillow {row['pillow_ms']:8.2f} "
            f"opencv {row['opencv_ms']:8.2f} (same {row['opencv_same']}) "
            f"libpng {row['libpng_ms']} (same {row['libpng_same']}) "
            f"isal {row['isal_ms']:8.2f} (same {row['isal_same']}){extra}"
        )


def _threads_ms(decode: Callable[[], object], count: int = 40) -> dict[str, float]:
    """Wall ms for `count` decodes on one thread, and for `count` on each of two threads at once."""

    def work() -> None:
        for _ in range(count):
            decode()

    work()  # warm
    start = time.perf_counter()
    work()
    one = time.perf_counter() - start
    pair = [threading.Thread(target=work) for _ in range(2)]
    start = time.perf_counter()
    for thread in pair:
        thread.start()
    for thread in pair:
        thread.join()
    two = time.perf_counter() - start
    return {"one_thread_ms": round(one * 1e3, 1), "two_threads_ms": round(two * 1e3, 1)}


def _inflated_png(data: bytes) -> bytes:
    """The same PNG with its IDAT chunks inflated by ISA-L and stored again as one uncompressed
    zlib stream (in place of the first IDAT)."""
    parts: list[bytes | None] = [data[:8]]
    compressed = []
    position = 8
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            if not compressed:
                parts.append(None)
            compressed.append(data[position + 8 : position + 8 + length])
        else:
            parts.append(data[position : position + 12 + length])
        position += 12 + length
    stored = zlib.compress(isal_zlib.decompress(b"".join(compressed)), 0)
    idat = (
        struct.pack(">I", len(stored)) + b"IDAT" + stored + struct.pack(">I", zlib.crc32(stored, zlib.crc32(b"IDAT")))
    )
    return b"".join(idat if part is None else part for part in parts)


if __name__ == "__main__":
    main()
