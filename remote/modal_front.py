"""The CPU front of the Modal deployment: the same HTTP API, with the GPU reached only for real work.

On Modal the FastAPI app of `remote.server.app` runs in a small CPU container. It answers
`/v1/health`, every 401, 413, 415, 422 and every unreadable or oversized image itself; only an
authenticated request with valid options and a decodable image becomes one call of the GPU class
(`Service.generate` in remote/modal_app.py). So strangers never start or keep a GPU container.

`GpuRunner` is what the app sees as its pipeline: `generate(image_bytes, options, cancelled)`,
`info` and `background_removal`, what `create_app` uses of a Pipeline. The GPU is reached through
`spawn(image_bytes, options) -> GpuCall`, the shape of Modal's `Service().generate.spawn` and its
FunctionCall (`get(timeout)`, `cancel()`): this keeps Modal out of this module, lets the tests put a
local pipeline behind it, and lets a client that hangs up cancel its GPU job, as on a local server.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import FastAPI

from remote.errors import ImageTo3DError, JobCancelledError
from remote.pipeline import Cancelled, GenerateOptions, GenerateResult
from remote.preprocess import load_image
from remote.server.app import create_app
from remote.server.settings import ServerSettings

log = logging.getLogger("image_to_3d.front")

POLL_S = 0.5  # how often a waiting request looks whether its client is still there


class GpuCall(Protocol):
    """A job under way on the GPU: Modal's FunctionCall, as `.spawn` returns it."""

    def get(self, timeout: float | None = None) -> GenerateResult:
        """The result; raises the builtin TimeoutError if it is not there within `timeout`."""
        ...

    def cancel(self) -> None:
        """Stop the job (Modal cancels the input; the GPU container stays up for the next)."""
        ...


# image bytes, GenerateOptions as a dict -> the started job; on Modal `Service().generate.spawn`.
Spawn = Callable[[bytes, dict[str, Any]], GpuCall]


def _never() -> bool:
    return False


class GpuUnavailableError(ImageTo3DError):
    """The GPU worker could not take the job (it failed to start, or the call failed on Modal)."""

    code = "gpu_unavailable"
    status = 503


class GpuRunner:
    """Checks what can be checked on the CPU, then runs the job on the GPU through `call_gpu`."""

    background_removal = True  # only the GPU side knows; its 503 comes back with its code

    def __init__(self, spawn: Spawn, *, max_pixels: int | None, info: dict[str, Any]) -> None:
        self._spawn = spawn
        self.max_pixels = max_pixels
        self.info = info
        self.gpu_calls = 0

    def generate(
        self, image: bytes, options: GenerateOptions | None = None, cancelled: Cancelled = _never
    ) -> GenerateResult:
        """Refuse bad options and images that do not decode (or are over the pixel limit) here;
        send the rest to the GPU and wait, cancelling the GPU job if `cancelled()` turns True.
        Errors of ours from the GPU side keep their code and status."""
        options = (options or GenerateOptions()).validate()
        start = time.perf_counter()
        load_image(image, self.max_pixels)  # raises InvalidImageError / ImageTooLargeError
        checked = time.perf_counter() - start
        if cancelled():
            raise JobCancelledError("The client closed the connection before its job started.")
        self.gpu_calls += 1
        try:
            result = _wait(self._spawn(image, dataclasses.asdict(options)), cancelled)
        except ImageTo3DError:
            raise
        except Exception as error:  # Modal's own failures: the container could not start, a timeout...
            log.exception("the GPU call failed")
            raise GpuUnavailableError(
                f"The GPU worker could not run this job ({type(error).__name__}); retry in a minute. "
                "If it keeps failing, the deployment's logs say why (`modal app logs image-to-3d`)."
            ) from None
        result.timings = {"check": checked, **result.timings}
        return result


def _wait(call: GpuCall, cancelled: Cancelled) -> GenerateResult:
    """The job's result; cancel the job as soon as its client has gone."""
    while True:
        try:
            return call.get(timeout=POLL_S)
        except TimeoutError:  # builtin: not there yet (Modal's own errors are not TimeoutError)
            if cancelled():
                call.cancel()
                raise JobCancelledError("The client closed the connection; its GPU job was cancelled.") from None


def create_front_app(spawn: Spawn, settings: ServerSettings | None = None, *, gpu_name: str = "cuda") -> FastAPI:
    """The API of `remote.server.app` around a GpuRunner; the token rule applies as everywhere."""
    from remote.weights_cache import TRIPOSR_REPO, TRIPOSR_REVISION

    settings = settings or ServerSettings()
    info = {"model": TRIPOSR_REPO, "revision": TRIPOSR_REVISION, "device": gpu_name}
    runner = GpuRunner(spawn, max_pixels=settings.max_pixels, info=info)
    app = create_app(settings, pipeline=runner)  # type: ignore[arg-type]  # duck-typed: generate + info
    app.state.runner = runner
    return app
