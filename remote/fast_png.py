"""The common PNG, a plain 8-bit RGB or RGBA picture, decoded by libpng through imagecodecs.

Why: Pillow's PNG decoder is the largest host stage of a warm request (a 512² cut-out takes about
1.7x as long in Pillow as in libpng; docs/performance.md), and imagecodecs releases the GIL while it
decodes, so concurrent requests still decode side by side.

Only files whose pixels both decoders must agree on take this path: bit depth 8, colour type RGB or
RGBA, not interlaced, no transparency key (tRNS), not animated (acTL), and nothing Pillow reads an
EXIF orientation from (an eXIf chunk, or a text chunk whose keyword names EXIF or XMP). Every other
file, and any file libpng refuses, is left to Pillow, which decodes it as before and words the
error for a damaged one.

Where the rows are unfiltered on the GPU (remote/png_unfilter.py), `inflate_plain_png` does the
host's half instead: the same plain files, their compressed stream inflated by libdeflate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# By name: imagecodecs loads codecs on first use. deflate_decode is libdeflate's when the size is given.
from imagecodecs import deflate_decode, png_decode  # type: ignore[import-untyped]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # PNG colour type -> channels: 2 is RGB, 6 is RGBA
REFUSED_CHUNKS = (b"tRNS", b"eXIf", b"acTL")  # a colour key, EXIF, animation: Pillow's business
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
KEYWORD_BYTES = 80  # PNG keywords are at most 79 bytes, then a NUL
FILTER_TYPES = 5  # a row's filter: none, Sub, Up, Average, Paeth (remote/png_unfilter.py)


def plain_png_pixels(data: bytes) -> np.ndarray | None:
    """uint8 (height, width, 3 or 4) pixels of a plain 8-bit RGB(A) PNG, or None for Pillow to decode."""
    shape = plain_png_shape(data)
    if shape is None:
        return None
    try:
        pixels = png_decode(data)
    except Exception:  # libpng refused the file: Pillow decodes it again and says what is wrong
        return None
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.shape != shape:
        return None
    return pixels


@dataclass(frozen=True)
class InflatedPng:
    """A plain PNG inflated but not unfiltered: its rows as stored, each led by its filter type.

    `data` is the file itself, for the host's decoder where the device's path does not apply."""

    data: bytes
    scanlines: np.ndarray  # uint8 (height, 1 + width * channels)
    channels: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL's Image.size."""
        return (self.scanlines.shape[1] - 1) // self.channels, self.scanlines.shape[0]


def inflate_plain_png(data: bytes) -> InflatedPng | None:
    """A plain 8-bit RGB(A) PNG's scanlines, inflated by libdeflate, or None for the host's decoders:
    not plain, a stream that does not inflate to exactly the rows the header describes (libdeflate
    checks the stream's own checksum), or a filter type PNG does not define."""
    walked = _walk(data)
    if walked is None:
        return None
    (height, width, channels), compressed = walked
    row_bytes = 1 + width * channels
    try:
        rows = deflate_decode(b"".join(data[start:stop] for start, stop in compressed), out=height * row_bytes)
    except Exception:  # a damaged stream: Pillow decodes it and says what is wrong
        return None
    if len(rows) != height * row_bytes:
        return None
    scanlines = np.frombuffer(rows, dtype=np.uint8).reshape(height, row_bytes)
    if int(scanlines[:, 0].max()) >= FILTER_TYPES:
        return None
    return InflatedPng(data, scanlines, channels)


def plain_png_shape(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, channels) when every chunk of `data` up to IEND says this PNG is plain, else None.

    Walks the chunk headers only (no decompression); a file that ends early is not plain.
    """
    walked = _walk(data)
    return None if walked is None else walked[0]


def _walk(data: bytes) -> tuple[tuple[int, int, int], list[tuple[int, int]]] | None:
    """A plain PNG's shape and where its IDAT chunks' bodies are (start, stop), or None."""
    if not data.startswith(SIGNATURE):
        return None
    position = len(SIGNATURE)
    shape = None
    compressed: list[tuple[int, int]] = []
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        body = position + 8
        if body + length + 4 > len(data):
            return None
        if shape is None:
            shape = _header_shape(kind, data[body : body + length])
            if shape is None:
                return None
        elif kind in REFUSED_CHUNKS or (kind in TEXT_CHUNKS and _names_metadata(data, body, length)):
            return None
        if kind == b"IDAT":
            compressed.append((body, body + length))
        if kind == b"IEND":
            return shape, compressed
        position = body + length + 4
    return None


def _header_shape(kind: bytes, header: bytes) -> tuple[int, int, int] | None:
    """The shape an IHDR chunk describes, if it is an 8-bit, non-interlaced RGB or RGBA image."""
    if kind != b"IHDR" or len(header) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in CHANNELS or compression or filtering or interlace or not width or not height:
        return None
    return height, width, CHANNELS[colour]


def _names_metadata(data: bytes, body: int, length: int) -> bool:
    """Whether a text chunk's keyword is one Pillow reads an orientation from (EXIF or XMP)."""
    keyword = data[body : body + min(length, KEYWORD_BYTES)].split(b"\0", 1)[0].lower()
    return b"exif" in keyword or b"xmp" in keyword
