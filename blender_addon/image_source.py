"""Which images to send, and what to send of each, decided on the main thread without encoding.

Order: the selected reference-image Empties (several make a batch), else the image chosen in the
panel, else the file path, else every image in the panel's folder. `choose_sources` only names
them (cheap enough for the panel's draw); `prepare` turns one choice into a `SourceImage`: a
PNG/JPEG/WebP file of at most 2048 px (pixels.MAX_SIDE) or 10 MB is sent as it is (read in the worker); anything
else has its pixels copied out of Blender here and is downscaled and encoded to PNG in the worker
(pixels.py), so the main thread never encodes. Movies, Render Result, viewer nodes and UDIM tiles get a message that
says what to do; an image sequence sends its current frame's file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import bpy
import numpy as np

from .client import sniff_content_type
from .pixels import MAX_SIDE, downscale, encode_png, image_size

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".exr", ".bmp", ".tga", ".hdr"}
MOVIE_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".m4v", ".gif"}
HEADER_BYTES = 256 * 1024  # enough to find the size in a JPEG with a large EXIF block
# A PNG/JPEG/WebP file up to this size goes as it is even when larger than MAX_SIDE: the server
# resamples it, and sending it costs Blender's main thread nothing, while shrinking it here first
# means copying every pixel out of Blender on the main thread (seconds for a 36-megapixel image).
# Half the server's default upload limit, so a larger file is shrunk rather than refused.
AS_IS_BYTES = 10_000_000


class NoImageError(Exception):
    """No usable input; the message says what to choose or fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class SourceChoice:
    """One input Generate would use now: a reference Empty's image, the panel's image, or a file."""

    kind: str  # "reference", "image" or "file"
    name: str  # the object's name-to-be
    image: bpy.types.Image | None = None
    path: str = ""
    reference_object: str = ""  # the Empty's name, for "reference" choices

    @property
    def label(self) -> str:
        """How messages name it: "reference 'Ref' (chair.png)", "image 'Painted'", "file chair.png"."""
        if self.kind == "reference" and self.image is not None:
            return f"reference '{self.reference_object}' ({self.image.name})"
        if self.image is not None:
            return f"image '{self.image.name}'"
        return f"file {os.path.basename(self.path)}"


@dataclass
class SourceImage:
    """What to send: a file's path or bytes as they are, or pixels to downscale and encode."""

    name: str
    label: str
    path: str = ""
    data: bytes | None = None
    pixels: np.ndarray | None = None  # float RGBA (height, width, 4), top row first
    linear: bool = False  # the pixels are scene-linear (float images) and become sRGB
    note: str = ""  # said with the result, e.g. "frame 3 of the sequence"
    reference_image: str = ""  # the image data-block's name when it came from a reference Empty
    reference_object: str = ""
    sent_size: tuple[int, int] | None = None  # (width, height) of what was sent, once encoded

    def encoded(self) -> bytes:
        """The bytes to upload (worker thread: reads the file, or downscales and encodes the pixels)."""
        if self.pixels is not None:
            small = downscale(self.pixels, MAX_SIDE)
            self.sent_size = (small.shape[1], small.shape[0])
            self.pixels = None  # the full-size copy is no longer needed
            return encode_png(small, linear=self.linear)
        if self.data is None:
            with open(self.path, "rb") as handle:
                self.data = handle.read()
        self.sent_size = image_size(self.data)
        return self.data


def choose_sources(context: bpy.types.Context) -> list[SourceChoice]:
    """The inputs by priority, without reading any pixels: several only for references or a folder."""
    settings = context.scene.image_to_3d
    references: list[SourceChoice] = []
    for obj in _candidate_empties(context):
        image = obj.data
        if isinstance(image, bpy.types.Image):
            references.append(SourceChoice("reference", _stem(image), image=image, reference_object=obj.name))
    if references:
        return references
    if settings.image is not None:
        return [SourceChoice("image", _stem(settings.image), image=settings.image)]
    if settings.filepath:
        path = bpy.path.abspath(settings.filepath)
        return [SourceChoice("file", _name_stem(os.path.basename(path)), path=path)]
    if settings.folder:
        folder = bpy.path.abspath(settings.folder)
        if os.path.isdir(folder):
            names = sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
            return [SourceChoice("file", _name_stem(n), path=os.path.join(folder, n)) for n in names]
    return []


def no_image_error(context: bpy.types.Context) -> NoImageError:
    folder = context.scene.image_to_3d.folder
    if folder:
        return NoImageError(
            f"The folder {bpy.path.abspath(folder)} holds no images (PNG, JPEG, WebP, TIFF, EXR...); "
            "choose another folder in the Image to 3D panel."
        )
    return NoImageError(
        "No image selected: select a reference image (Add > Image > Reference), or choose an image, "
        "file or folder in the Image to 3D panel."
    )


def prepare(context: bpy.types.Context, choice: SourceChoice) -> SourceImage:
    """The choice made ready to send (main thread, no encoding), or NoImageError saying what to do."""
    if choice.image is None:
        if not os.path.isfile(choice.path):
            raise NoImageError(f"The image file {choice.path} does not exist; choose another file in the panel.")
        return _from_file(choice, choice.path, None)
    image = choice.image
    reference = image.name if choice.kind == "reference" else ""
    source = _from_image(context, choice, image)
    source.reference_image, source.reference_object = reference, choice.reference_object
    return source


def _from_image(context: bpy.types.Context, choice: SourceChoice, image: bpy.types.Image) -> SourceImage:
    if image.type == "RENDER_RESULT":
        raise NoImageError(
            f"'{image.name}' is Blender's render output, which add-ons cannot read: save it (Image Editor > "
            "Image > Save As) and choose the saved file."
        )
    if image.type == "COMPOSITING" or image.source == "VIEWER":
        raise NoImageError(
            f"'{image.name}' is the compositor's viewer, which add-ons cannot read: save it (Image Editor > "
            "Image > Save As) and choose the saved file."
        )
    if image.source == "MOVIE":
        raise NoImageError(
            f"'{image.name}' is a movie; Image to 3D needs one still picture. Show the frame you want in the "
            "Image Editor, save it (Image > Save As) and choose the saved file."
        )
    if image.source == "TILED":
        raise NoImageError(f"'{image.name}' is a UDIM tiled image; choose one tile's file in the Image to 3D panel.")
    if image.source == "SEQUENCE":
        frame = _sequence_frame(context, choice)
        path = _frame_path(bpy.path.abspath(image.filepath, library=image.library), frame)
        if not os.path.isfile(path):
            raise NoImageError(
                f"Frame {frame} of the image sequence '{image.name}' ({path}) does not exist; go to a frame "
                "the sequence has, or choose one of its files in the panel."
            )
        source = _from_file(choice, path, None)
        source.note = f"frame {frame} of the sequence"
        return source
    path = ""
    if image.source == "FILE" and image.packed_file is None and image.filepath:
        path = bpy.path.abspath(image.filepath, library=image.library)
    if not image.is_dirty:
        if image.packed_file is not None:
            data = bytes(image.packed_file.data)
            if sniff_content_type(data) and (len(data) <= AS_IS_BYTES or _fits(image_size(data))):
                return SourceImage(choice.name, choice.label, data=data)
        elif path and os.path.isfile(path):
            return _from_file(choice, path, image)
    if path and not image.has_data and not os.path.isfile(path):
        raise NoImageError(
            f"The image '{image.name}' points to a missing file ({path}); relink it (Image > Replace) "
            "or choose another image."
        )
    return _from_pixels(choice, image)


def _from_file(choice: SourceChoice, path: str, image: bpy.types.Image | None) -> SourceImage:
    """A small PNG/JPEG/WebP goes as it is; a large or other file through Blender's own decoder."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if sniff_content_type(head) and (os.path.getsize(path) <= AS_IS_BYTES or _fits(image_size(head))):
        return SourceImage(choice.name, choice.label, path=path)
    if image is not None:
        return _from_pixels(choice, image)
    unreadable = NoImageError(
        f"The file {path} is not a picture Blender can read; save it as PNG, JPEG or WebP, or choose another file."
    )
    try:
        loaded = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as error:
        raise unreadable from error
    try:
        size = cast(Sequence[int], loaded.size)
        if not loaded.has_data and 0 in (int(size[0]), int(size[1])):
            raise unreadable
        return _from_pixels(choice, loaded)
    finally:
        bpy.data.images.remove(loaded)


def _from_pixels(choice: SourceChoice, image: bpy.types.Image) -> SourceImage:
    """The image's current pixels copied out of Blender (the only main-thread work on them)."""
    size = cast(Sequence[int], image.size)  # fake-bpy-module's array type declares no indexing
    width, height = int(size[0]), int(size[1])
    if width == 0 or height == 0:
        raise NoImageError(
            f"The image '{image.name}' has no pixels (its file cannot be read, or it was never painted); "
            "relink it (Image > Replace), or choose another image."
        )
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    rows = pixels.reshape(height, width, 4)[::-1]  # Blender stores rows bottom-up
    return SourceImage(choice.name, choice.label, pixels=rows, linear=bool(image.is_float))


def _fits(size: tuple[int, int] | None) -> bool:
    return size is not None and max(size) <= MAX_SIDE


def _sequence_frame(context: bpy.types.Context, choice: SourceChoice) -> int:
    """The sequence frame shown at the scene's current frame (Blender's image-user rule)."""
    obj = bpy.data.objects.get(choice.reference_object) if choice.reference_object else None
    user = obj.image_user if obj is not None else None
    if user is None or user.frame_duration <= 0:
        return max(1, context.scene.frame_current)
    frame = context.scene.frame_current - user.frame_start + 1
    if user.use_cyclic:
        frame = (frame - 1) % user.frame_duration + 1
    return min(max(frame, 1), user.frame_duration) + user.frame_offset


def _frame_path(path: str, frame: int) -> str:
    """'clip_0001.png' with frame 3 -> 'clip_0003.png' (the last digits of the file's stem)."""
    folder, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    match = re.search(r"(\d+)$", stem)
    if match is None:
        return path
    digits = match.group(1)
    return os.path.join(folder, stem[: match.start()] + str(frame).zfill(len(digits)) + extension)


def _candidate_empties(context: bpy.types.Context) -> list[bpy.types.Object]:
    """Selected image Empties, the active one first."""
    active = context.active_object
    selected = list(getattr(context, "selected_objects", None) or [])
    ordered = ([active] if active is not None and active in selected else []) + [o for o in selected if o != active]
    return [o for o in ordered if o.type == "EMPTY" and o.empty_display_type == "IMAGE"]


def _stem(image: bpy.types.Image) -> str:
    """An image data-block's object name: no duplicate suffix, extension, frame range or frame number."""
    name = _name_stem(image.name)
    if image.source in ("SEQUENCE", "MOVIE"):
        name = re.sub(r"[._ -]*\d+$", "", name) or name
    return name


def _name_stem(name: str) -> str:
    """'chair.png.001' -> 'chair', 'clip_0001-0006.mp4' -> 'clip'."""
    name = re.sub(r"\.\d{3}$", "", name)
    stem, extension = os.path.splitext(name)
    if extension.lower() in IMAGE_EXTENSIONS | MOVIE_EXTENSIONS:
        name = stem
    name = re.sub(r"[._ -]*\d+-\d+$", "", name) or name  # a frame range: 'clip_0001-0006'
    return name or "Image"
