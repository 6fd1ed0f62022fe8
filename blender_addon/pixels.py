"""Pixels to the PNG the server gets: downscaled to what the model can use, encoded. numpy only, no bpy.

This runs in the worker thread, so a large painted image never freezes Blender: the main thread
only copies the pixels out of Blender (`Image.pixels.foreach_get`), everything else happens here.
`image_size` reads the size from a PNG, JPEG or WebP file's header without decoding it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# Painted or generated images are shrunk to this long side before upload. The model's input is
# 512 px (remote/preprocess.py), resampled from the object's crop of the full image, so an object
# spanning a quarter of the image's long side still reaches it with every pixel it can use.
MAX_SIDE = 2048


def downscale(rgba: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Float RGBA (height, width, 4) shrunk by a whole factor until its long side is <= max_side.

    Each output pixel is the mean of a factor x factor block, averaged with premultiplied alpha so
    the colour under transparent pixels does not bleed into the edge. Edge rows and columns are
    repeated to fill the last block.
    """
    height, width = rgba.shape[:2]
    factor = -(-max(height, width) // max_side)
    if factor <= 1:
        return rgba
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h or pad_w:
        rgba = np.pad(rgba, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    alpha = rgba[..., 3:4]
    premultiplied = np.concatenate([rgba[..., :3] * alpha, alpha], axis=2)
    blocks = premultiplied.reshape(rgba.shape[0] // factor, factor, rgba.shape[1] // factor, factor, 4)
    mean = blocks.mean(axis=(1, 3), dtype=np.float32)
    coverage = mean[..., 3:4]
    colour = np.divide(mean[..., :3], coverage, out=np.zeros_like(mean[..., :3]), where=coverage > 1e-6)
    return np.concatenate([colour, coverage], axis=2)


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)


def encode_png(rgba: np.ndarray, linear: bool = False) -> bytes:
    """RGBA 8-bit PNG of float pixels (height, width, 4), top row first; `linear` colours become sRGB."""
    if linear:
        rgba = np.concatenate([linear_to_srgb(rgba[..., :3]), rgba[..., 3:]], axis=2)
    height, width = rgba.shape[:2]
    data = np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8).reshape(height, width * 4)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), data], axis=1).tobytes()  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or WebP file's first bytes; None when it cannot tell."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame header (SOFn) follows a chain of length-prefixed segments."""
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return int(width), int(height)
        position += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return int(width & 0x3FFF), int(height & 0x3FFF)
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None
