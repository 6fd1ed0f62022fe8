"""Input image -> the square, grey-backed picture TripoSR was trained on.

1. `load_image`: decode PNG, JPEG or WebP (any mode, EXIF orientation applied) into 8-bit RGB or
   RGBA, refusing other formats, damaged files, and images with too many pixels (checked from the
   header, before the pixels are decoded).
2. `BackgroundRemover`: one rembg session, made on first use and shared by every call.
3. `prepare_image`: cut the object out (its own alpha, or rembg), crop to it, pad to a centred
   square where it spans `foreground_ratio` of the side, composite over grey 0.5.

Large inputs stay cheap: cropping, resizing and the alpha bounding box run in Pillow (C), the
background-removal mask is computed on a reduced copy and only scaled up over the object's box, and
numpy only sees the final square (at most `MAX_SIDE` pixels on a side).
"""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import PIL.Image
import PIL.ImageOps

from remote.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidOptionError,
    ModelLoadError,
    NoForegroundError,
)

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
ACCEPTED_NAMES = "PNG, JPEG or WebP"
REMOVE_BACKGROUND_MODES = ("auto", "always", "never")
FOREGROUND_RATIO_RANGE = (0.5, 1.0)
MAX_SIDE = 1024  # the model resizes to 512; a larger square only costs time
MASK_SIDE = 1024  # rembg's u2net sees 320x320, so a mask from a 1024-pixel copy loses nothing
MASK_MARGIN = 2  # mask pixels kept around the object's box: bilinear upscaling spreads one pixel
GREY = 0.5
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


# ---------------------------------------------------------------------------------------------
# Decoding


DEFAULT_MAX_PIXELS = 16_000_000  # a 12 MP phone photo fits; the model itself sees 512 x 512
DECODE_SIDE = 2048  # JPEGs are decoded at 1/2, 1/4 or 1/8 scale while their long side stays at least this
DECODE_SLOTS = 2  # images decoded at once per process: each full decode holds up to 4 bytes per pixel
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


def load_image(source: bytes | str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> PIL.Image.Image:
    """Decode an image fully into 8-bit RGB or RGBA, or raise an error that says what to do.

    A large JPEG is decoded at reduced scale (libjpeg's DCT scaling, Pillow's draft mode) while
    its long side stays at least DECODE_SIDE pixels: the object is later cropped and scaled to at
    most MAX_SIDE, so the full-size pixels would be thrown away. `max_pixels` is checked against
    the size that will be decoded, from the header, before any pixel is decoded; Pillow's own
    decompression-bomb check (`PIL.Image.MAX_IMAGE_PIXELS`) stays on as a second guard. At most
    DECODE_SLOTS images are decoded at once, which bounds the decoding memory of a busy server.
    """
    data = _read(source)
    try:
        image: PIL.Image.Image = PIL.Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _reduce_jpeg(image)
        _check_pixels(image.size, max_pixels)
        with _decode_slots:
            image.load()  # decode every pixel now, so a truncated file fails here
            image = PIL.ImageOps.exif_transpose(image)
            return normalise_mode(image)
    except (ImageTooLargeError, InvalidImageError):
        raise
    except PIL.Image.DecompressionBombError as error:
        limits = [limit for limit in (max_pixels, PIL.Image.MAX_IMAGE_PIXELS) if limit is not None]
        raise ImageTooLargeError(
            f"The image is too large to decode safely ({error}); scale it down to at most "
            f"{min(limits) / 1e6:.1f} MP and retry."
        ) from error
    except PIL.UnidentifiedImageError as error:
        raise InvalidImageError(_unsupported_message(data)) from error
    except Exception as error:  # decoders of untrusted bytes raise many types
        raise InvalidImageError(
            f"The image could not be decoded ({error}); the file is probably truncated or corrupt. "
            "Save or export it again and retry."
        ) from error


def _reduce_jpeg(image: PIL.Image.Image) -> None:
    """Ask the JPEG decoder for the smallest scale whose long side is still >= DECODE_SIDE."""
    if image.format != "JPEG" or max(image.size) <= DECODE_SIDE:
        return
    scale = DECODE_SIDE / max(image.size)
    wanted = (max(1, math.ceil(image.width * scale)), max(1, math.ceil(image.height * scale)))
    image.draft(image.mode, wanted)


def _read(source: bytes | str | Path) -> bytes:
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise InvalidImageError(f"No such image file: {path}. Check the path and retry.")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InvalidImageError(f"The image file {path} could not be read ({error}).") from error
    else:
        data = bytes(source)
    if not data:
        raise InvalidImageError(f"The image is empty (0 bytes); send a {ACCEPTED_NAMES} file.")
    return data


def _unsupported_message(data: bytes) -> str:
    """Name the format when Pillow knows it (GIF, BMP, ...), so the user knows what to convert."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as other:
            found = other.format
    except Exception:  # only used to word the message
        found = None
    if found:
        return f"{found} images are not accepted; convert the image to {ACCEPTED_NAMES} and retry."
    return f"This is not a {ACCEPTED_NAMES} image (or the file is damaged); send one of those formats."


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} ({width * height / 1e6:.1f} MP), over the limit of "
            f"{max_pixels / 1e6:.1f} MP; scale it down and retry."
        )


def normalise_mode(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any Pillow mode -> 8-bit RGB, or RGBA when the image carries transparency.

    16-bit greyscale is scaled (0..65535 -> 0..255), not clipped; a tRNS colour key (greyscale,
    RGB or palette) becomes an alpha channel. Pillow itself already reduces 16-bit RGB(A) PNGs to
    8 bits per channel by keeping the high byte.
    """
    if image.mode == "RGBA" or (image.mode == "RGB" and "transparency" not in image.info):
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_8_bit(image)
    transparent = image.mode in ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if transparent else "RGB")


def _sixteen_bit_to_8_bit(image: PIL.Image.Image) -> PIL.Image.Image:
    values = np.asarray(image).astype(np.int64)
    grey = ((np.clip(values, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)  # rounded
    key = image.info.get("transparency")
    if isinstance(key, int):
        alpha = np.where(values == key, 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA")
    return PIL.Image.fromarray(grey, "L").convert("RGB")


# ---------------------------------------------------------------------------------------------
# Background removal


class BackgroundRemover:
    """One rembg u2net session, created on first use (under a lock) and shared by every call.

    With `model_path`, rembg's "u2net_custom" session loads that ONNX file: nothing is downloaded,
    and a missing file is refused here, at construction. Without it, rembg 2.0.69's "u2net"
    session asks pooch for `u2net.onnx` in `$U2NET_HOME` (default `$XDG_DATA_HOME/.u2net`, else
    `~/.u2net`): pooch downloads it only when the file is absent, or when its MD5 differs from
    `60024c5c889badc19c04ad937298a77b` (set `MODEL_CHECKSUM_DISABLED` to skip that check); a file
    that is present and matches is used as is. ONNX Runtime picks its CUDA provider when the
    session opens, so call `session()` once at start-up to pay that cost before the first image.
    """

    def __init__(self, model_path: str | Path | None = None) -> None:
        self.model_path = Path(model_path).expanduser() if model_path is not None else None
        if self.model_path is not None and not self.model_path.is_file():
            raise ModelLoadError(
                f"The background-removal model {self.model_path} does not exist; point --rembg-model "
                "at a u2net.onnx file, or leave it out to use rembg's default u2net."
            )
        self._session: Any = None
        self._lock = threading.Lock()
        self.calls = 0  # masks computed; tests and logs use it to see whether removal ran

    def session(self) -> Any:
        """The rembg session, opened on the first call."""
        with self._lock:
            if self._session is None:
                self._session = self._open()
            return self._session

    def _open(self) -> Any:
        from rembg import new_session  # type: ignore[import-untyped]

        if self.model_path is not None:
            try:
                return new_session("u2net_custom", model_path=str(self.model_path))
            except Exception as error:  # onnxruntime raises its own types
                raise ModelLoadError(
                    f"The background-removal model {self.model_path} could not be loaded ({error}); "
                    "point --rembg-model at a valid u2net.onnx file."
                ) from error
        try:
            return new_session("u2net")
        except Exception as error:  # pooch/requests/onnxruntime raise their own types
            raise ModelLoadError(
                f"rembg's u2net model could not be loaded or downloaded ({error}); put u2net.onnx in "
                "U2NET_HOME (default ~/.u2net) or pass --rembg-model PATH."
            ) from error

    def mask(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """The foreground mask (mode "L", same size as `image`): 255 object, 0 background."""
        session = self.session()
        rgb = image.convert("RGB")
        rgb.info = {}  # no EXIF: rembg applies EXIF orientation again, which would turn the mask
        from rembg import remove  # type: ignore[import-untyped]

        with self._lock:
            self.calls += 1
        mask = remove(rgb, session=session, only_mask=True)
        return mask.convert("L")

    def __call__(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """`image` cut out: RGBA with the original colours and the mask as (straight) alpha.

        rembg's default cutout multiplies the colours by the mask; with the grey composite that
        would darken soft edges twice, so the colours are kept as they are.
        """
        cut = image.convert("RGB")
        cut.putalpha(self.mask(image))
        return cut


# ---------------------------------------------------------------------------------------------
# Crop, pad, composite


def prepare_image(
    image: PIL.Image.Image,
    *,
    remove_background: str = "auto",
    foreground_ratio: float = 0.85,
    remover: BackgroundRemover | None = None,
) -> np.ndarray:
    """The model's input: float32 (S, S, 3) in 0..1, the object centred on grey 0.5.

    remove_background:
      "auto"   an image whose alpha has any value below 255 is already cut out and keeps it; any
               other image goes through `remover`.
      "always" every image goes through `remover`; an existing alpha is first composited onto
               white (what is hidden under transparent pixels is often junk that would confuse the
               mask) and the mask then replaces it.
      "never"  the image's own alpha if it has one, else the whole picture is the object.
    The object's bounding box (alpha > 0) is padded to a centred square whose side is
    int(longest side / foreground_ratio); the colours are composited as rgb * a + 0.5 * (1 - a).
    When that square would be larger than `MAX_SIDE` (1024), the cropped object is scaled down
    first so the side stays at most 1024: the model resizes its input to 512 anyway, and a small
    array keeps the host-to-GPU copy and the numpy work cheap for 2-40 MP photos.
    """
    _check_options(remove_background, foreground_ratio)
    cut = _cut_out(normalise_mode(image), remove_background, remover)
    box = cut.getchannel("A").getbbox()
    if box is None:
        raise NoForegroundError(
            "No object was found in the image (it is fully transparent, or background removal kept "
            "nothing); use an image with a clear subject, or remove_background=never."
        )
    subject = _limit_size(cut.crop(box), foreground_ratio)
    return _square_on_grey(np.asarray(subject), foreground_ratio)


def _check_options(remove_background: str, foreground_ratio: float) -> None:
    if remove_background not in REMOVE_BACKGROUND_MODES:
        raise InvalidOptionError(
            f"remove_background must be one of {', '.join(REMOVE_BACKGROUND_MODES)} "
            f"(got {remove_background!r})."
        )
    low, high = FOREGROUND_RATIO_RANGE
    if not low <= foreground_ratio <= high:
        raise InvalidOptionError(f"foreground_ratio must be between {low} and {high} (got {foreground_ratio}).")


def _cut_out(image: PIL.Image.Image, mode: str, remover: BackgroundRemover | None) -> PIL.Image.Image:
    """RGBA whose alpha marks the object (it may be a crop of `image` that holds the whole object)."""
    has_alpha = image.mode == "RGBA"
    if mode == "never" or (mode == "auto" and has_alpha and _lowest_alpha(image) < 255):
        return image if has_alpha else image.convert("RGBA")
    if remover is None:
        raise ValueError("prepare_image needs a BackgroundRemover to remove the background.")
    if has_alpha:
        flat = PIL.Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    return _remove_background(image, remover)


def _lowest_alpha(image: PIL.Image.Image) -> int:
    low, _ = cast(tuple[int, int], image.getchannel("A").getextrema())  # one band: (min, max)
    return low


def _remove_background(image: PIL.Image.Image, remover: BackgroundRemover) -> PIL.Image.Image:
    """Mask a reduced copy, then scale the mask up only over the object's box (plus a margin)."""
    scale = MASK_SIDE / max(image.size)
    if scale >= 1.0:
        cut = image.copy()
        cut.putalpha(remover.mask(image))
        return cut
    small_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(small_size, PIL.Image.Resampling.LANCZOS, reducing_gap=2.0)
    mask = remover.mask(small)
    box = mask.getbbox()
    if box is None:
        small.putalpha(mask)
        return small  # fully transparent: the caller reports that no object was found
    scale_x, scale_y = image.width / small.width, image.height / small.height
    left, top = max(box[0] - MASK_MARGIN, 0), max(box[1] - MASK_MARGIN, 0)
    right, bottom = min(box[2] + MASK_MARGIN, small.width), min(box[3] + MASK_MARGIN, small.height)
    full_box = (
        math.floor(left * scale_x),
        math.floor(top * scale_y),
        min(math.ceil(right * scale_x), image.width),
        min(math.ceil(bottom * scale_y), image.height),
    )
    cut = image.crop(full_box)
    mask_box = (full_box[0] / scale_x, full_box[1] / scale_y, full_box[2] / scale_x, full_box[3] / scale_y)
    cut.putalpha(mask.resize(cut.size, PIL.Image.Resampling.BILINEAR, box=mask_box))
    return cut


def _limit_size(subject: PIL.Image.Image, foreground_ratio: float) -> PIL.Image.Image:
    """Shrink the object so the padded square is at most MAX_SIDE (Pillow resizes RGBA premultiplied)."""
    longest = max(subject.size)
    limit = int(MAX_SIDE * foreground_ratio)
    if longest <= limit:
        return subject
    scale = limit / longest
    size = (max(1, round(subject.width * scale)), max(1, round(subject.height * scale)))
    return subject.resize(size, PIL.Image.Resampling.LANCZOS, reducing_gap=3.0)


def _square_on_grey(subject: np.ndarray, foreground_ratio: float) -> np.ndarray:
    """Centre the RGBA crop in a square of side int(longest / ratio) and composite it over grey."""
    height, width = subject.shape[:2]
    side = max(int(max(height, width) / foreground_ratio), height, width)
    top, left = (side - height) // 2, (side - width) // 2
    rgba = subject.astype(np.float32) / 255.0
    alpha = rgba[:, :, 3:4]
    square = np.full((side, side, 3), GREY, dtype=np.float32)
    square[top : top + height, left : left + width] = rgba[:, :, :3] * alpha + GREY * (1.0 - alpha)
    return square
