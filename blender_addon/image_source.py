"""Which image to send, as PNG/JPEG/WebP bytes.

Order: the selected reference-image Empty, else the image chosen in the panel, else the file path.
Images without a usable file (generated, packed in another format, edited and unsaved) are encoded
to PNG in memory from their pixels, so nothing is written next to the artist's files.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass

import bpy
import numpy as np

from .client import sniff_content_type


IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".exr", ".bmp", ".tga", ".hdr"}


class NoImageError(Exception):
    pass


@dataclass
class SourceImage:
    name: str
    data: bytes


def find_source(context: bpy.types.Context) -> SourceImage:
    settings = context.scene.image_to_3d
    for obj in _candidate_empties(context):
        image = obj.data
        if isinstance(image, bpy.types.Image):
            return SourceImage(_stem(image.name), image_bytes(image))
    if settings.image is not None:
        return SourceImage(_stem(settings.image.name), image_bytes(settings.image))
    if settings.filepath:
        path = bpy.path.abspath(settings.filepath)
        if not os.path.isfile(path):
            raise NoImageError(f"The image file {path} does not exist; choose another file.")
        with open(path, "rb") as handle:
            return SourceImage(_stem(os.path.basename(path)), handle.read())
    raise NoImageError(
        "No image selected: select a reference image (Add > Image > Reference), or choose an image "
        "or file in the Image to 3D panel."
    )


def _candidate_empties(context: bpy.types.Context) -> list[bpy.types.Object]:
    active = context.active_object
    selected = list(getattr(context, "selected_objects", None) or [])
    ordered = ([active] if active is not None and active in selected else []) + selected
    return [o for o in ordered if o.type == "EMPTY" and o.empty_display_type == "IMAGE"]


def _stem(name: str) -> str:
    """'chair.png.001' -> 'chair': drop Blender's duplicate suffix, then the file extension."""
    name = re.sub(r"\.\d{3}$", "", name)
    stem, extension = os.path.splitext(name)
    return (stem if extension.lower() in IMAGE_EXTENSIONS else name) or "Image"


def image_bytes(image: bpy.types.Image) -> bytes:
    """The image as encoded bytes: its packed or on-disk file when usable, else PNG of its pixels."""
    if not image.is_dirty:
        if image.packed_file is not None:
            data = bytes(image.packed_file.data)
            if sniff_content_type(data):
                return data
        elif image.source == "FILE" and image.filepath:
            path = bpy.path.abspath(image.filepath, library=image.library)
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    data = handle.read()
                if sniff_content_type(data):
                    return data
    return encode_png(image)


def encode_png(image: bpy.types.Image) -> bytes:
    """RGBA 8-bit PNG of the image's current pixels (float images converted from linear to sRGB)."""
    size: tuple[int, int] = tuple(image.size)  # type: ignore[arg-type, assignment]
    width, height = int(size[0]), int(size[1])
    if width == 0 or height == 0:
        raise NoImageError(f"The image '{image.name}' has no pixels; load or paint it first.")
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    rgba = pixels.reshape(height, width, 4)[::-1]  # Blender stores rows bottom-up
    if image.is_float:
        rgb = np.clip(rgba[..., :3], 0.0, 1.0)
        rgba = np.concatenate(
            [np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055), rgba[..., 3:]], axis=2
        )
    data = np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8)
    raw = b"".join(b"\x00" + data[row].tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
