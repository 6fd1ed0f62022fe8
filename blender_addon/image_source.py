"""Which image to send, as PNG/JPEG/WebP bytes.

Order: the selected reference-image Empty, else the image chosen in the panel, else the file path.
Images without a usable file (generated, packed in another format, edited and unsaved) are encoded
to PNG in memory from their pixels, so nothing is written next to the artist's files. The panel
calls `choose_source` too, so it shows the same image that Generate will send.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import bpy
import numpy as np

from .client import sniff_content_type

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".exr", ".bmp", ".tga", ".hdr"}


class NoImageError(Exception):
    """No usable input; the message says what to choose or fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class SourceChoice:
    """What Generate would use now: a reference Empty's image, the panel's image, or a file."""

    kind: str  # "reference", "image" or "file"
    name: str  # the object's name-to-be
    image: bpy.types.Image | None = None
    path: str = ""


@dataclass
class SourceImage:
    name: str
    data: bytes
    reference_image: str = ""  # the image data-block's name when it came from a reference Empty


def choose_source(context: bpy.types.Context) -> SourceChoice | None:
    """The input by priority, without reading any pixels (cheap enough for the panel's draw)."""
    settings = context.scene.image_to_3d
    for obj in _candidate_empties(context):
        image = obj.data
        if isinstance(image, bpy.types.Image):
            return SourceChoice("reference", _stem(image.name), image=image)
    if settings.image is not None:
        return SourceChoice("image", _stem(settings.image.name), image=settings.image)
    if settings.filepath:
        path = bpy.path.abspath(settings.filepath)
        return SourceChoice("file", _stem(os.path.basename(path)), path=path)
    return None


def find_source(context: bpy.types.Context) -> SourceImage:
    """The chosen input's name and encoded bytes, or NoImageError saying what to do."""
    choice = choose_source(context)
    if choice is None:
        raise NoImageError(
            "No image selected: select a reference image (Add > Image > Reference), or choose an image "
            "or file in the Image to 3D panel."
        )
    if choice.image is not None:
        reference = choice.image.name if choice.kind == "reference" else ""
        return SourceImage(choice.name, image_bytes(choice.image), reference)
    if not os.path.isfile(choice.path):
        raise NoImageError(f"The image file {choice.path} does not exist; choose another file in the panel.")
    with open(choice.path, "rb") as handle:
        return SourceImage(choice.name, handle.read())


def _candidate_empties(context: bpy.types.Context) -> list[bpy.types.Object]:
    """Selected image Empties, the active one first."""
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
    path = ""
    if image.source == "FILE" and image.packed_file is None and image.filepath:
        path = bpy.path.abspath(image.filepath, library=image.library)
    if not image.is_dirty:
        if image.packed_file is not None:
            data = bytes(image.packed_file.data)
            if sniff_content_type(data):
                return data
        elif path and os.path.isfile(path):
            with open(path, "rb") as handle:
                data = handle.read()
            if sniff_content_type(data):
                return data
    if path and not image.has_data and not os.path.isfile(path):
        raise NoImageError(
            f"The image '{image.name}' points to a missing file ({path}); relink it (Image > Replace) "
            "or choose another image."
        )
    return encode_png(image)


def encode_png(image: bpy.types.Image) -> bytes:
    """RGBA 8-bit PNG of the image's current pixels (float images converted from linear to sRGB)."""
    size = cast(Sequence[int], image.size)  # fake-bpy-module's array type declares no indexing
    width, height = int(size[0]), int(size[1])
    if width == 0 or height == 0:
        raise NoImageError(f"The image '{image.name}' has no pixels; load or paint it first.")
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    rgba = pixels.reshape(height, width, 4)[::-1]  # Blender stores rows bottom-up
    if image.is_float:
        rgb = np.clip(rgba[..., :3], 0.0, 1.0)
        srgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)
        rgba = np.concatenate([srgb, rgba[..., 3:]], axis=2)
    data = np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8).reshape(height, width * 4)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), data], axis=1).tobytes()  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
