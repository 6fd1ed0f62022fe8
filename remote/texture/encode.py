"""The baked atlas -> image bytes for the GLB (PNG or JPEG), with the MIME type glTF names."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1


def to_bytes(image: np.ndarray, image_format: str) -> tuple[bytes, str]:
    """(H, W, 3) uint8 sRGB -> (encoded bytes, MIME type). JPEG keeps full chroma (4:4:4): halved
    chroma would mix neighbouring charts' colours across the narrow gutters."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)} (got {image_format!r})")
    picture = PIL.Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    out = io.BytesIO()
    if image_format == "jpeg":
        picture.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        picture.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue(), IMAGE_FORMATS[image_format]
