"""Input image -> the square, grey-backed picture TripoSR was trained on.

1. `load_image`: decode PNG, JPEG or WebP (any mode, EXIF orientation applied), refusing anything
   else, and refusing images with too many pixels before their pixels are decoded.
2. `BackgroundRemover`: one rembg session, made on first use and reused.
3. `prepare_image`: cut out the object (its own alpha, or rembg), crop to it, pad to a centred
   square where the object spans `foreground_ratio` of the side, composite over grey 0.5.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

from remote.errors import ImageTooLargeError, InvalidImageError, InvalidOptionError, NoForegroundError

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP"}
REMOVE_BACKGROUND_MODES = ("auto", "always", "never")
MAX_SIDE = 1024  # the model resizes to 512; a larger square only costs transfer time
GREY = 0.5


def load_image(source: bytes | str | Path, max_pixels: int | None = 40_000_000) -> PIL.Image.Image:
    """Decode an image fully into 8-bit RGB or RGBA, or raise an error that says what to do."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"No such image file: {path}.")
        data = path.read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise InvalidImageError("The image is empty (0 bytes); send a PNG, JPEG or WebP file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(io.BytesIO(data), formats=sorted(ACCEPTED_FORMATS))
            _check_pixels(image, max_pixels)
            image.load()
    except (ImageTooLargeError, InvalidImageError):
        raise
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(
            f"The image is too large to decode safely ({error}); scale it down and retry."
        ) from error
    except PIL.UnidentifiedImageError as error:
        raise InvalidImageError(
            "This is not a PNG, JPEG or WebP image (or the file is damaged); send one of those formats."
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(
            f"The image could not be decoded ({error}); the file is probably truncated or corrupt. "
            "Save it again and retry."
        ) from error
    return _normalise_mode(PIL.ImageOps.exif_transpose(image))


def _check_pixels(image: PIL.Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} ({width * height / 1e6:.1f} MP), over the limit of "
            f"{max_pixels / 1e6:.1f} MP; scale it down and retry."
        )


def _normalise_mode(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any Pillow mode -> 8-bit RGB, or RGBA when the image carries transparency."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(grey).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    return image.convert("RGBA" if has_alpha else "RGB")


class BackgroundRemover:
    """One rembg (u2net) session, created on first use and shared by every call.

    With `model_path`, rembg's custom-session path loads that ONNX file and nothing is downloaded.
    Without, rembg's own u2net session is used: it looks for `u2net.onnx` under U2NET_HOME
    (default ~/.u2net) and downloads it only when the file is missing or its MD5 is wrong.
    """

    def __init__(self, model_path: str | Path | None = None) -> None:
        self.model_path = Path(model_path).expanduser() if model_path else None
        self._session: Any = None
        self._lock = threading.Lock()
        self.calls = 0

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                from rembg import new_session

                if self.model_path is not None:
                    if not self.model_path.is_file():
                        raise InvalidOptionError(
                            f"The background-removal model {self.model_path} does not exist; "
                            "point --rembg-model at u2net.onnx, or leave it out to use rembg's default."
                        )
                    self._session = new_session("u2net_custom", model_path=str(self.model_path))
                else:
                    self._session = new_session("u2net")
            return self._session

    def __call__(self, image: PIL.Image.Image) -> PIL.Image.Image:
        from rembg import remove

        session = self.session()
        self.calls += 1
        return remove(image.convert("RGB"), session=session).convert("RGBA")


def prepare_image(
    image: PIL.Image.Image,
    *,
    remove_background: str = "auto",
    foreground_ratio: float = 0.85,
    remover: BackgroundRemover | None = None,
) -> np.ndarray:
    """The model's input: float32 (S, S, 3) in 0..1, object centred on grey (see module doc).

    "auto" keeps an image's own transparency and sends opaque images through rembg; "always" sends
    every image through rembg (its existing alpha is first flattened onto grey); "never" uses the
    image's alpha if it has any, else the whole picture as the object.
    """
    if remove_background not in REMOVE_BACKGROUND_MODES:
        raise InvalidOptionError(
            f"remove_background must be one of auto, always, never (got {remove_background!r})."
        )
    if not 0.5 <= foreground_ratio <= 1.0:
        raise InvalidOptionError(f"foreground_ratio must be between 0.5 and 1.0 (got {foreground_ratio}).")
    rgba = _cut_out(image, remove_background, remover)
    alpha = rgba[:, :, 3]
    rows = np.flatnonzero(alpha.max(axis=1))
    cols = np.flatnonzero(alpha.max(axis=0))
    if len(rows) == 0:
        raise NoForegroundError(
            "No object was found in the image (it is fully transparent or the background removal "
            "kept nothing); use an image with a clear subject, or remove_background=never."
        )
    crop = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return _square_on_grey(crop, foreground_ratio)


def _cut_out(image: PIL.Image.Image, mode: str, remover: BackgroundRemover | None) -> np.ndarray:
    has_alpha = image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255
    if mode == "never" or (mode == "auto" and has_alpha):
        return np.asarray(image.convert("RGBA"))
    if remover is None:
        raise InvalidOptionError("Background removal was needed but no remover was given.")
    if image.mode == "RGBA":
        flat = PIL.Image.new("RGB", image.size, (128, 128, 128))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    return np.asarray(remover(image))


def _square_on_grey(crop: np.ndarray, foreground_ratio: float) -> np.ndarray:
    """Pad the crop to a centred square whose side is its longer side / ratio; composite over grey."""
    height, width = crop.shape[:2]
    side = max(height, width)
    scale = min(1.0, MAX_SIDE * foreground_ratio / side)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        crop = np.asarray(PIL.Image.fromarray(crop, "RGBA").resize(size, PIL.Image.Resampling.LANCZOS))
        height, width = crop.shape[:2]
        side = max(height, width)
    square = int(round(side / foreground_ratio))
    top = (square - height) // 2
    left = (square - width) // 2
    rgba = crop.astype(np.float32) / 255.0
    alpha = rgba[:, :, 3:4]
    out = np.full((square, square, 3), GREY, dtype=np.float32)
    out[top : top + height, left : left + width] = rgba[:, :, :3] * alpha + GREY * (1.0 - alpha)
    return out
