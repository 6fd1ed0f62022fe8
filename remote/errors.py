"""Errors that reach a user: each carries a stable code, an HTTP status and a message that says what to do.

The pipeline, the CLI and the HTTP service all raise and report these, so a bad image gives the same
words whichever way it came in.
"""

from __future__ import annotations


class ImageTo3DError(Exception):
    """Base class: an error whose message is meant for the user."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImageError(ImageTo3DError):
    """The input is not a readable PNG, JPEG or WebP image (garbage, truncated, empty)."""

    code = "invalid_image"
    status = 400


class NoForegroundError(ImageTo3DError):
    """Background removal (or the image's own alpha) left nothing to reconstruct."""

    code = "no_foreground"
    status = 400


class ImageTooLargeError(ImageTo3DError):
    """The decoded image has more pixels than the configured limit (decompression-bomb guard)."""

    code = "image_too_large"
    status = 413


class InvalidOptionError(ImageTo3DError):
    """A generation option is outside its allowed range."""

    code = "invalid_option"
    status = 422


class GpuOutOfMemoryError(ImageTo3DError):
    """The device ran out of memory; the message names the setting to lower."""

    code = "gpu_out_of_memory"
    status = 503


class ModelLoadError(ImageTo3DError):
    """The model files are missing, corrupt or do not match the published checkpoint."""

    code = "model_load_failed"
    status = 500


class BackgroundRemovalUnavailableError(ImageTo3DError):
    """The image needs background removal, but its model could not be loaded on this server."""

    code = "background_removal_unavailable"
    status = 503


class JobCancelledError(ImageTo3DError):
    """The client went away, so its job stopped between stages (status 499: client closed request)."""

    code = "client_closed_request"
    status = 499
