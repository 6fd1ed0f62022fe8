"""The one place the package reads environment variables (the standard library only).

The server's settings (`IMAGE_TO_3D_*`, docs/api.md "Settings") are turned into values and checked
by `remote.server.settings`; this module only names the variables and reads them, at call time, so
a test or a container that sets one is seen.
"""

from __future__ import annotations

import os

TOKEN = "IMAGE_TO_3D_TOKEN"
# ServerSettings field -> variable; the token is read on its own (never a flag, never logged).
SERVER_SETTINGS = {
    "model": "IMAGE_TO_3D_MODEL",
    "device": "IMAGE_TO_3D_DEVICE",
    "rembg_model": "IMAGE_TO_3D_REMBG_MODEL",
    "precision": "IMAGE_TO_3D_PRECISION",
    "max_body_bytes": "IMAGE_TO_3D_MAX_BODY_BYTES",
    "max_pixels": "IMAGE_TO_3D_MAX_PIXELS",
    "queue_size": "IMAGE_TO_3D_QUEUE_SIZE",
    "retry_after_s": "IMAGE_TO_3D_RETRY_AFTER",
    "header_timeout_s": "IMAGE_TO_3D_HEADER_TIMEOUT",
    "body_timeout_s": "IMAGE_TO_3D_BODY_TIMEOUT",
    "body_min_rate": "IMAGE_TO_3D_BODY_MIN_RATE",
    "send_timeout_s": "IMAGE_TO_3D_SEND_TIMEOUT",
    "keep_alive_s": "IMAGE_TO_3D_KEEP_ALIVE",
    "max_connections": "IMAGE_TO_3D_MAX_CONNECTIONS",
}
VERSION = "IMAGE_TO_3D_VERSION"  # /v1/health's version where the package is not installed (Modal)
GPU_SNAPSHOT = "IMAGE_TO_3D_GPU_SNAPSHOT"  # "1" at `modal deploy`: try Modal's GPU memory snapshot
MODAL_IS_REMOTE = "MODAL_IS_REMOTE"  # Modal sets it to "1" inside its containers
TRITON_INTERPRET = "TRITON_INTERPRET"  # Triton's own: "1" runs kernels on the CPU (tests)


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value; unset and empty both mean `default`."""
    return os.environ.get(name) or default


def is_on(name: str) -> bool:
    """True when the variable is "1"."""
    return os.environ.get(name) == "1"


def running_on_modal() -> bool:
    """True inside a Modal container."""
    return is_on(MODAL_IS_REMOTE)
