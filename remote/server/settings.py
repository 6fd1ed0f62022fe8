"""Server settings: from `image-to-3d serve` flags, falling back to environment variables.

The environment is what Modal (and containers generally) configure; the token in particular comes
from `IMAGE_TO_3D_TOKEN`, which on Modal is a `modal.Secret`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TOKEN_VARIABLE = "IMAGE_TO_3D_TOKEN"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass
class ServerSettings:
    """Everything the app needs besides the pipeline; every limit is configurable."""

    model: str = field(default_factory=lambda: os.environ.get("IMAGE_TO_3D_MODEL", "stabilityai/TripoSR"))
    device: str | None = field(default_factory=lambda: os.environ.get("IMAGE_TO_3D_DEVICE") or None)
    rembg_model: str | None = field(default_factory=lambda: os.environ.get("IMAGE_TO_3D_REMBG_MODEL") or None)
    precision: str = field(default_factory=lambda: os.environ.get("IMAGE_TO_3D_PRECISION", "auto"))
    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_VARIABLE) or None, repr=False)
    max_body_bytes: int = field(default_factory=lambda: _env_int("IMAGE_TO_3D_MAX_BODY_BYTES", 20_000_000))
    max_pixels: int = field(default_factory=lambda: _env_int("IMAGE_TO_3D_MAX_PIXELS", 40_000_000))
    queue_size: int = field(default_factory=lambda: _env_int("IMAGE_TO_3D_QUEUE_SIZE", 4))
    retry_after_s: int = field(default_factory=lambda: _env_int("IMAGE_TO_3D_RETRY_AFTER", 5))
