"""The two pieces of server state: the pipeline (loaded once, in the background) and the job gate.

Loading in a background thread lets `/v1/health` answer "loading" while the weights load, which
is what a client polls on a cold GPU container. The gate bounds how many requests may hold a job
at once: one on the device plus a short queue; the rest are answered 503 at once instead of piling
up behind a GPU that is already busy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from remote.pipeline import Pipeline

log = logging.getLogger("image_to_3d.server")


class PipelineHolder:
    """The pipeline, given or loaded once by `loader`; `status` is what `/v1/health` reports."""

    def __init__(self, loader: Callable[[], Pipeline] | None, pipeline: Pipeline | None) -> None:
        if (loader is None) == (pipeline is None):
            raise ValueError("give either a loaded pipeline or a loader, not both or neither")
        self.pipeline = pipeline
        self.error: str | None = None
        self._loader = loader
        self._lock = threading.Lock()
        self._started = pipeline is not None

    def start(self) -> None:
        """Begin loading in a background thread; later calls do nothing (the model loads once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name="load-pipeline", daemon=True).start()

    def _load(self) -> None:
        assert self._loader is not None
        try:
            pipeline = self._loader()
        except Exception as error:  # reported by /v1/health and /v1/generate; the server keeps answering
            self.error = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            log.exception("the model failed to load: %s", self.error)
            return
        self.pipeline = pipeline
        log.info("model ready: %s", pipeline.info)

    @property
    def status(self) -> str:
        if self.pipeline is not None:
            return "ready"
        return "error" if self.error else "loading"


class JobGate:
    """Admits one running job plus `queue_size` waiting ones; `try_enter` refuses the rest at once."""

    def __init__(self, queue_size: int) -> None:
        self.limit = 1 + max(0, queue_size)
        self.active = 0
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        return self.active >= self.limit

    def try_enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1
