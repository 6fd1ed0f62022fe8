"""The CPU front of the Modal deployment: the same HTTP API, with the GPU reached only for real work.

On Modal the FastAPI app of `remote.server.app` runs in a small CPU container. It answers
`/v1/health`, every 401, 413, 415, 422 and every unreadable or oversized image itself; only an
authenticated request with valid options and a decodable image becomes one call of the GPU class
(`Service.generate` in remote/modal_app.py). So strangers never start or keep a GPU container.

`GpuRunner` is what the app sees as its pipeline: `generate(image_bytes, options)` and `info`,
the two things `create_app` uses of a Pipeline. The call to the GPU is a plain callable, which
keeps Modal out of this module and lets the tests put a local pipeline behind it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from remote.errors import ImageTo3DError
from remote.pipeline import GenerateOptions, GenerateResult
from remote.preprocess import load_image
from remote.server.app import create_app
from remote.server.settings import ServerSettings

log = logging.getLogger("image_to_3d.front")

# image bytes, GenerateOptions as a dict -> GenerateResult; on Modal `Service().generate.remote`.
GpuCall = Callable[[bytes, dict[str, Any]], GenerateResult]


class GpuUnavailableError(ImageTo3DError):
    """The GPU worker could not take the job (it failed to start, or the call failed on Modal)."""

    code = "gpu_unavailable"
    status = 503


class GpuRunner:
    """Checks what can be checked on the CPU, then runs the job on the GPU through `call_gpu`."""

    def __init__(self, call_gpu: GpuCall, *, max_pixels: int | None, info: dict[str, Any]) -> None:
        self._call_gpu = call_gpu
        self.max_pixels = max_pixels
        self.info = info
        self.gpu_calls = 0

    def generate(self, image: bytes, options: GenerateOptions | None = None) -> GenerateResult:
        """Refuse bad options and images that do not decode (or are over the pixel limit) here;
        send the rest to the GPU. Errors of ours from the GPU side keep their code and status."""
        options = (options or GenerateOptions()).validate()
        start = time.perf_counter()
        load_image(image, self.max_pixels)  # raises InvalidImageError / ImageTooLargeError
        checked = time.perf_counter() - start
        self.gpu_calls += 1
        try:
            result = self._call_gpu(image, dataclasses.asdict(options))
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


def create_front_app(
    call_gpu: GpuCall, settings: ServerSettings | None = None, *, gpu_name: str = "cuda"
) -> FastAPI:
    """The API of `remote.server.app` around a GpuRunner; the token rule applies as everywhere."""
    from remote.weights_cache import TRIPOSR_REPO, TRIPOSR_REVISION

    settings = settings or ServerSettings()
    info = {"model": TRIPOSR_REPO, "revision": TRIPOSR_REVISION, "device": gpu_name}
    runner = GpuRunner(call_gpu, max_pixels=settings.max_pixels, info=info)
    app = create_app(settings, pipeline=runner)  # type: ignore[arg-type]  # duck-typed: generate + info
    app.state.runner = runner
    return app
