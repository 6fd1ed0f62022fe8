"""The FastAPI application: one image in, one GLB out, and errors a client can act on.

The same app runs under `image-to-3d serve` (uvicorn) and on Modal (`@modal.asgi_app`). The model
loads in a background thread so `/v1/health` answers at once ("loading", then "ready"). One job
runs on the device at a time; a few more may wait; beyond that the answer is 503 with Retry-After.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from remote.errors import ImageTo3DError
from remote.pipeline import GenerateOptions, Pipeline
from remote.server.settings import ServerSettings

log = logging.getLogger("image_to_3d.server")

ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/webp")
GLB_TYPE = "model/gltf-binary"


def service_version() -> str:
    try:
        return metadata.version("image-to-3d")
    except metadata.PackageNotFoundError:
        return "unknown"


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class PipelineHolder:
    """The pipeline, loaded once in the background; its state is what `/v1/health` reports."""

    def __init__(self, loader: Callable[[], Pipeline] | None, pipeline: Pipeline | None) -> None:
        self.pipeline = pipeline
        self.error: str | None = None
        self._loader = loader
        self._started = threading.Event()
        if pipeline is not None:
            self._started.set()

    def start(self) -> None:
        if self._started.is_set() or self._loader is None:
            return
        self._started.set()
        threading.Thread(target=self._load, name="load-pipeline", daemon=True).start()

    def _load(self) -> None:
        assert self._loader is not None
        try:
            self.pipeline = self._loader()
            log.info("model ready on %s", self.pipeline.info.get("device"))
        except Exception as error:  # reported by /v1/health; the server keeps answering
            self.error = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            log.exception("model failed to load")

    @property
    def status(self) -> str:
        if self.pipeline is not None:
            return "ready"
        return "error" if self.error else "loading"


class JobGate:
    """One job on the device, at most `queue_size` waiting; the rest are turned away at once."""

    def __init__(self, queue_size: int) -> None:
        self.limit = 1 + max(0, queue_size)
        self.active = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def create_app(
    settings: ServerSettings | None = None,
    pipeline_loader: Callable[[], Pipeline] | None = None,
    pipeline: Pipeline | None = None,
) -> FastAPI:
    """The API around a pipeline that is given, or loaded by `pipeline_loader` (default: from settings)."""
    settings = settings or ServerSettings()
    if pipeline is None and pipeline_loader is None:
        def pipeline_loader() -> Pipeline:
            return Pipeline.load(
                model=settings.model, device=settings.device,
                rembg_model_path=settings.rembg_model, max_pixels=settings.max_pixels,
                precision=settings.precision,
            )
    holder = PipelineHolder(pipeline_loader, pipeline)
    gate = JobGate(settings.queue_size)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder.start()
        yield

    app = FastAPI(
        title="image-to-3d",
        version=service_version(),
        description="Turn one picture into a vertex-coloured 3D mesh (TripoSR). See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.holder, app.state.gate, app.state.settings = holder, gate, settings
    _install_error_handlers(app)

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Any]) -> Response:
        request.state.request_id = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        log.info(
            "%s %s %s %d %.0f ms", request.state.request_id, request.method, request.url.path,
            response.status_code, (time.perf_counter() - start) * 1000,
        )
        return response

    @app.get("/v1/health", summary="Is the model loaded? Cheap; never loads anything.")
    async def health() -> dict[str, Any]:
        info = holder.pipeline.info if holder.pipeline is not None else {}
        body: dict[str, Any] = {
            "status": holder.status,
            "model": info.get("model", settings.model),
            "revision": info.get("revision"),
            "device": info.get("device", settings.device),
            "version": service_version(),
            "auth_required": settings.token is not None,
            "queue": {"active": gate.active, "limit": gate.limit},
        }
        if holder.error:
            body["error"] = holder.error
        return body

    @app.post(
        "/v1/generate",
        summary="Image in (raw body), GLB out",
        response_class=Response,
        responses={
            200: {"content": {GLB_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                  "description": "The mesh as binary glTF; Server-Timing, X-Mesh-Vertices and X-Mesh-Faces headers."},
            400: {"description": "Not an image, corrupt, or no object found"},
            401: {"description": "Missing or wrong bearer token"},
            413: {"description": "Body or decoded image too large"},
            415: {"description": "Content-Type is not image/png, image/jpeg or image/webp"},
            422: {"description": "An option is out of range"},
            503: {"description": "Busy or still loading; retry after Retry-After seconds"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in ACCEPTED_TYPES},
            }
        },
    )
    async def generate(
        request: Request,
        resolution: int = Query(256, ge=32, le=512, description="marching-cubes grid size"),
        threshold: float = Query(25.0, gt=0, le=1e6, description="density at the surface"),
        foreground_ratio: float = Query(0.85, ge=0.5, le=1.0, description="share of the image side the object spans"),
        remove_background: Literal["auto", "always", "never"] = Query("auto"),
        target_faces: int | None = Query(None, ge=100, le=10_000_000, description="decimate to about N faces"),
    ) -> Response:
        _check_token(request, settings.token)
        _check_content_type(request)
        body = await _read_body(request, settings.max_body_bytes)
        options = GenerateOptions(
            resolution=resolution, threshold=threshold, foreground_ratio=foreground_ratio,
            remove_background=remove_background, target_faces=target_faces,
        ).validate()
        retry = {"Retry-After": str(settings.retry_after_s)}
        if holder.pipeline is None:
            if holder.error:
                raise ApiError(500, "model_load_failed", f"The model failed to load: {holder.error}")
            raise ApiError(503, "loading", "The model is still loading (the GPU is warming up); retry shortly.", retry)
        if not gate.try_enter():
            raise ApiError(503, "busy", "The server is busy with other requests; retry shortly.", retry)
        try:
            result = await run_in_threadpool(holder.pipeline.generate, body, options)
        finally:
            gate.leave()
        timing = ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in result.timings.items())
        return Response(
            content=result.glb,
            media_type=GLB_TYPE,
            headers={
                "Server-Timing": timing,
                "X-Mesh-Vertices": str(result.vertex_count),
                "X-Mesh-Faces": str(result.face_count),
            },
        )

    return app


def _check_token(request: Request, token: str | None) -> None:
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise ApiError(401, "unauthorized", "This server needs an access token: send 'Authorization: Bearer <token>'.",
                       {"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "The access token is wrong; check the token in your settings.",
                       {"WWW-Authenticate": "Bearer"})


def _check_content_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ACCEPTED_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be one of {', '.join(ACCEPTED_TYPES)} (got {kind or 'none'}); "
                       "send the image file itself as the request body.")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes whether or not Content-Length tells the truth."""
    too_large = ApiError(413, "body_too_large", f"The request body is over the limit of {limit / 1e6:.0f} MB; send a smaller image.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(request: Request, status: int, code: str, message: str,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if status >= 500:
        error["request_id"] = getattr(request.state, "request_id", None)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(request, error.status, error.code, error.message, error.headers)

    @app.exception_handler(ImageTo3DError)
    async def pipeline_error(request: Request, error: ImageTo3DError) -> JSONResponse:
        headers = {"Retry-After": "10"} if error.status == 503 else None
        return _error_response(request, error.status, error.code, error.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'] if part != 'query')}: {issue['msg']}"
            for issue in error.errors()
        )
        return _error_response(request, 422, "invalid_option", f"Invalid option: {problems}.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = {
            404: f"There is no {request.url.path}; the API is POST /v1/generate and GET /v1/health.",
            405: f"{request.method} is not allowed on {request.url.path}; see docs/api.md.",
        }.get(error.status_code, str(error.detail))
        return _error_response(request, error.status_code, code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.exception("request %s failed with an internal error", request_id)
        response = _error_response(request, 500, "internal_error",
                                   f"Internal server error (request id {request_id}); please report it.")
        response.headers["X-Request-ID"] = request_id or ""
        return response
