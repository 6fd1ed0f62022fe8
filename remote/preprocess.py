"""Input image -> the square, grey-backed picture TripoSR was trained on.

1. `load_image`: decode PNG, JPEG or WebP (any mode, EXIF orientation applied) into 8-bit RGB or
   RGBA, refusing other formats, damaged files, and images with too many pixels (checked from the
   header, before the pixels are decoded). Plain 8-bit RGB(A) PNGs are decoded by libpng
   (`remote/fast_png.py`), everything else by Pillow. `load_for_device` stops a plain RGBA PNG
   after inflating it, for the GPU to unfilter (remote/png_unfilter.py).
2. `BackgroundRemover`: one rembg session, made on first use and shared by every call.
3. `prepare_image`: upstream TripoSR's preprocessing, exactly: cut the object out (its own alpha,
   or rembg's cutout), crop to it, pad to a centred square where it spans `foreground_ratio` of the
   side, composite over grey 0.5 into uint8, and resize to the model's 512 x 512 input.

Large inputs stay cheap without changing a pixel of the result: the padded square is never built;
its resize is computed from the crop alone (`resize_framed`), a row band at a time.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import PIL.Image
import PIL.ImageOps
import scipy.sparse  # type: ignore[import-untyped]

from remote import options
from remote.fast_png import InflatedPng, inflate_plain_png, plain_png_pixels
from remote.errors import (
    ImageTooLargeError,
    InvalidImageError,
    ModelLoadError,
    NoForegroundError,
)

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
ACCEPTED_NAMES = "PNG, JPEG or WebP"
REMOVE_BACKGROUND_MODES: tuple[str, ...] = options.BY_NAME["remove_background"].choices or ()
MODEL_INPUT_SIDE = 512  # TripoSR's cond_image_size: the model sees a 512 x 512 picture
ROW_CHUNK = 256  # crop rows composited and resampled at a time (bounds the float copies)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


# ---------------------------------------------------------------------------------------------
# Decoding


DEFAULT_MAX_PIXELS = 16_000_000  # a 12 MP phone photo fits; the model itself sees 512 x 512
JPEG_SCALES = (2, 4, 8)  # libjpeg's DCT scaling: a JPEG over the pixel limit decodes at 1/2, 1/4 or 1/8
DECODE_SLOTS = 2  # images decoded at once per process: each full decode holds up to 4 bytes per pixel
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


def load_image(source: bytes | str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> PIL.Image.Image:
    """Decode an image fully into 8-bit RGB or RGBA, or raise an error that says what to do.

    Every pixel is decoded, as upstream does, whenever the image fits `max_pixels`. A JPEG over the
    limit (a 24 MP camera photo) is decoded at the largest reduced scale that fits (libjpeg's DCT
    scaling, Pillow's draft mode) rather than refused; that is the one case where the model's input
    differs from upstream's (docs/api.md, benchmarks/investigations/jpeg_draft.py). `max_pixels` is checked against
    the size that will be decoded, from the header, before any pixel is decoded; Pillow's own
    decompression-bomb check (`PIL.Image.MAX_IMAGE_PIXELS`) stays on as a second guard. At most
    DECODE_SLOTS images are decoded at once, which bounds the decoding memory of a busy server.
    """
    return cast(PIL.Image.Image, _load(source, max_pixels, inflate_only=False))


def load_for_device(
    source: bytes | str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> PIL.Image.Image | InflatedPng:
    """`load_image`, except that a plain 8-bit RGBA PNG (remote/fast_png.py) is only inflated: its
    rows are unfiltered on the GPU (remote/png_unfilter.py, `prepare_inflated_png_tensor`). Same
    checks, same errors: a stream that does not inflate cleanly is decoded by Pillow, which says
    what is wrong with it."""
    return _load(source, max_pixels, inflate_only=True)


def _load(source: bytes | str | Path, max_pixels: int | None, inflate_only: bool) -> PIL.Image.Image | InflatedPng:
    data = _read(source)
    try:
        image: PIL.Image.Image = PIL.Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _reduce_jpeg(image, max_pixels)
        _check_pixels(image.size, max_pixels)
        with _decode_slots:
            if inflate_only and image.format == "PNG" and image.mode == "RGBA":
                inflated = inflate_plain_png(data)
                if inflated is not None:
                    return inflated
            pixels = plain_png_pixels(data) if image.format == "PNG" else None
            if pixels is not None:  # libpng's pixels, Pillow's for every other file (remote/fast_png.py)
                return PIL.Image.fromarray(pixels)
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


def _reduce_jpeg(image: PIL.Image.Image, max_pixels: int | None) -> None:
    """Ask the JPEG decoder for the largest reduced scale that fits `max_pixels`, if the full size does not."""
    width, height = image.size
    if image.format != "JPEG" or max_pixels is None or width * height <= max_pixels:
        return
    for scale in JPEG_SCALES:
        wanted = (math.ceil(width / scale), math.ceil(height / scale))
        if wanted[0] * wanted[1] <= max_pixels:
            image.draft(image.mode, wanted)
            return


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
        try:
            from rembg import new_session  # type: ignore[import-untyped]
        except ImportError as error:  # a broken install (or onnxruntime's native library missing)
            raise ModelLoadError(
                f"rembg could not be imported ({error}); reinstall the packages (`uv sync`)."
            ) from error

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
        """`image` cut out as upstream TripoSR cuts it: rembg's own cutout, RGBA whose alpha is the
        mask and whose colours are multiplied by it (the grey composite then multiplies soft edges
        by the mask a second time, as upstream does; docs/architecture.md says why we keep that).
        """
        session = self.session()
        rgb = image.convert("RGB")
        rgb.info = {}  # no EXIF: rembg applies EXIF orientation again, which would turn the mask
        from rembg import remove  # type: ignore[import-untyped]

        with self._lock:
            self.calls += 1
        return cast(PIL.Image.Image, remove(rgb, session=session))


# ---------------------------------------------------------------------------------------------
# Crop, pad, composite, resize: upstream TripoSR's preprocessing


def prepare_image(
    image: PIL.Image.Image,
    *,
    remove_background: str = "auto",
    foreground_ratio: float = 0.85,
    remover: BackgroundRemover | None = None,
    size: int = MODEL_INPUT_SIDE,
) -> np.ndarray:
    """The model's input: float32 (size, size, 3) in 0..1, exactly what upstream TripoSR's run.py
    and image preprocessor give its model for the same image (docs/architecture.md).

    remove_background:
      "auto"   an image whose alpha has any value below 255 is already cut out and keeps it; any
               other image goes through `remover` (rembg's cutout, as upstream).
      "always" every image goes through `remover`; an existing alpha is first composited onto
               white (what is hidden under transparent pixels is often junk that would confuse the
               mask) and the mask then replaces it.
      "never"  the image's own alpha if it has one, else the whole picture is the object.
    Then upstream's steps: crop to alpha > 0 (`frame_object`), pad to a centred square where the
    object spans `foreground_ratio` of the side, composite over grey in float32 and truncate to
    uint8, and resize to `size` (bilinear, antialiased) as the model's own resize does.
    """
    _check_options(remove_background, foreground_ratio)
    cut = _cut_out(normalise_mode(image), remove_background, remover)
    rgba = np.asarray(cut)
    framing = frame_object(rgba[:, :, 3], foreground_ratio)
    return resize_framed(rgba, framing, size)


def _check_options(remove_background: str, foreground_ratio: float) -> None:
    options.BY_NAME["remove_background"].check(remove_background)
    options.BY_NAME["foreground_ratio"].check(foreground_ratio)


def _cut_out(image: PIL.Image.Image, mode: str, remover: BackgroundRemover | None) -> PIL.Image.Image:
    """RGBA whose alpha marks the object."""
    has_alpha = image.mode == "RGBA"
    if mode == "never" or (mode == "auto" and has_alpha and _lowest_alpha(image) < 255):
        return image if has_alpha else image.convert("RGBA")
    if remover is None:
        raise ValueError("prepare_image needs a BackgroundRemover to remove the background.")
    if has_alpha:
        flat = PIL.Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    return remover(image)


def _lowest_alpha(image: PIL.Image.Image) -> int:
    low, _ = cast(tuple[int, int], image.getchannel("A").getextrema())  # one band: (min, max)
    return low


@dataclass(frozen=True)
class Framing:
    """Where upstream's crop lands in its padded square (all in input pixels).

    The crop is rows `top_row:bottom_row` and columns `left_col:right_col` of the cut-out (the
    last row and column holding alpha > 0 are excluded, as upstream's slicing does); it sits at
    (`top`, `left`) in a square of side `side`.
    """

    top_row: int
    bottom_row: int
    left_col: int
    right_col: int
    side: int
    top: int
    left: int


def frame_object(alpha: np.ndarray, foreground_ratio: float) -> Framing:
    """Upstream's crop and two-step padding for an alpha channel (H, W).

    1. Crop to rows/columns first..last with alpha > 0, the last one excluded.
    2. Pad to a square of side max(h, w): (side - h) // 2 on top, (side - w) // 2 on the left.
    3. Pad to int(side / foreground_ratio): (new - side) // 2 on top and on the left.
    """
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return frame_bounds(None, foreground_ratio)
    return frame_bounds((int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])), foreground_ratio)


def frame_bounds(bounds: tuple[int, int, int, int] | None, foreground_ratio: float) -> Framing:
    """`frame_object` from the first and last rows and columns with alpha > 0 (top, bottom, left,
    right; None when there are none), however they were found."""
    if bounds is None:
        raise NoForegroundError(
            "No object was found in the image (it is fully transparent, or background removal kept "
            "nothing); use an image with a clear subject, or remove_background=never."
        )
    top_row, bottom_row, left_col, right_col = bounds
    height, width = bottom_row - top_row, right_col - left_col
    if height == 0 or width == 0:
        raise NoForegroundError("The object is a single row or column of pixels; use an image with a larger subject.")
    square = max(height, width)
    side = int(square / foreground_ratio)
    margin = (side - square) // 2
    return Framing(
        top_row,
        bottom_row,
        left_col,
        right_col,
        side=side,
        top=(square - height) // 2 + margin,
        left=(square - width) // 2 + margin,
    )


def composite_on_grey(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA (..., 4) -> uint8 RGB over grey 0.5, in upstream's float32 arithmetic and its
    truncation to uint8 (so transparent pixels become 127, not 128)."""
    values = rgba.astype(np.float32) / 255.0
    alpha = values[..., 3:4]
    composite = values[..., :3] * alpha + (1 - alpha) * 0.5
    return (composite * 255.0).astype(np.uint8)


def antialias_weights(in_size: int, out_size: int) -> scipy.sparse.csr_matrix:
    """The (out_size, in_size) matrix of PyTorch's bilinear resize with antialias=True and
    align_corners=False (the triangle filter widened by the scale when shrinking, each row
    normalised), so a resize is `W_rows @ image @ W_cols.T`."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    centres = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centres - support + 0.5).astype(np.int64), 0)  # C's int(): toward zero
    stop = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    taps = np.arange(int((stop - first).max()))
    columns = first[:, None] + taps[None, :]
    weights = np.clip(1.0 - np.abs((columns - centres[:, None] + 0.5) * inverse), 0.0, None)
    weights[columns >= stop[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(out_size), len(taps))
    keep = weights.ravel() > 0
    return scipy.sparse.csr_matrix(
        (weights.ravel()[keep], (rows[keep], columns.ravel()[keep])), shape=(out_size, in_size)
    )


def resize_framed(rgba: np.ndarray, framing: Framing, size: int) -> np.ndarray:
    """The framed square, composited on grey and resized to `size` as the model does, computed
    from the crop alone: the square is grey 127 outside the crop, so only the crop's difference
    from grey needs resampling. Exact for any square size, with memory and time in proportion to
    the crop rather than the padded square."""
    grey = np.float32(127) / np.float32(255)
    rows = cols = antialias_weights(framing.side, size)  # a square: one matrix for both axes
    height = framing.bottom_row - framing.top_row
    width = framing.right_col - framing.left_col
    rows_crop = rows[:, framing.top : framing.top + height]
    cols_crop = cols[:, framing.left : framing.left + width]
    partial = np.empty((height, size, 3), dtype=np.float64)  # crop rows resampled along x
    for start in range(0, height, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, height)
        chunk = rgba[framing.top_row + start : framing.top_row + stop, framing.left_col : framing.right_col]
        offset = composite_on_grey(chunk).astype(np.float32) / np.float32(255) - grey
        for channel in range(3):
            partial[start:stop, :, channel] = (cols_crop @ offset[:, :, channel].T).T
    base = grey * np.outer(np.asarray(rows.sum(axis=1)).ravel(), np.asarray(cols.sum(axis=1)).ravel())
    out = np.stack([base + rows_crop @ partial[:, :, channel] for channel in range(3)], axis=-1)
    return out.astype(np.float32)
