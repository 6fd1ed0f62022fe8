"""The FastAPI application: one image in, one GLB out, and errors a client can act on.

The same app runs under `image-to-3d serve` (uvicorn) and on Modal (`@modal.asgi_app`). The model
loads in a background thread so `/v1/health` answers at once (503 "loading", then 200 "ready"). One
job runs on the device at a time, a few more may wait, and beyond that the answer is 503 with
Retry-After. A request holds its queue slot from the first byte of its upload to the last byte of
its answer, so the queue bounds memory too; a client that hangs up frees its slot at the job's next
stage. The contract is written down in docs/api.md.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from remote import environment
from remote import options as declared
from remote.options import GenerateOptions
from remote.pipeline import Pipeline
from remote.server.errors import ApiError, install_error_handlers
from remote.server.jobs import JobGate, PipelineHolder
from remote.server.middleware import BodyLimits, RequestContextMiddleware
from remote.server.settings import TOKEN_VARIABLE, ServerSettings, running_on_modal
from remote.server.transfer import (
    ChunkedResponse,
    DisconnectWatch,
    NegotiatedGZipMiddleware,
    accepts_gzip,
    encode_answer,
    read_body,
)

log = logging.getLogger("image_to_3d.server")

ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/webp")
GLB_TYPE = "model/gltf-binary"
GZIP_MIN_BYTES = 1024  # smaller answers (health, errors) are not worth a gzip header
DRAIN_FACTOR = 2  # before an error answer, read and drop up to this many times the body limit
LOAD_FAILED = "The model failed to load; the server's log has the details. Fix the cause and restart the server."

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string", "description": "only for 5xx answers"},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def service_version() -> str:
    """The installed package's version, which `/v1/health` reports; where the source is added
    without installing it (the Modal image), IMAGE_TO_3D_VERSION says it."""
    try:
        return metadata.version("image-to-3d")
    except metadata.PackageNotFoundError:
        return environment.get(environment.VERSION, "unknown") or "unknown"


def default_loader(settings: ServerSettings) -> Callable[[], Pipeline]:
    """Load the pipeline the settings describe; open background removal and warm up the GPU path
    before the first request."""

    def load() -> Pipeline:
        pipeline = Pipeline.load(
            model=settings.model,
            device=settings.device,
            rembg_model_path=settings.rembg_model,
            max_pixels=settings.max_pixels,
            precision=settings.precision,
        )
        pipeline.open_background_removal()  # degraded, not dead, when rembg cannot load
        pipeline.warm_up()
        return pipeline

    return load


def create_app(
    settings: ServerSettings | None = None,
    pipeline_loader: Callable[[], Pipeline] | None = None,
    pipeline: Pipeline | None = None,
) -> FastAPI:
    """The API around `pipeline` (already loaded), or one that `pipeline_loader` returns (called
    once, in a background thread, when the app starts), or else one loaded from `settings`.

    A given pipeline keeps its own pixel limit; the loaders here pass `settings.max_pixels`.
    """
    settings = settings or ServerSettings()
    if running_on_modal():  # every path that serves on Modal comes through here
        settings.require_token("on Modal")
    if pipeline is not None and pipeline_loader is not None:
        raise ValueError("create_app takes a pipeline or a pipeline_loader, not both")
    if pipeline is None and pipeline_loader is None:
        pipeline_loader = default_loader(settings)
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
        redirect_slashes=False,  # its redirect would be built from the client's Host header
        # With a token the server is meant for one client; strangers get no map of the API. (Else
        # FastAPI's own paths.)
        docs_url=None if settings.token else "/docs",
        redoc_url=None if settings.token else "/redoc",
        openapi_url=None if settings.token else "/openapi.json",
    )
    app.state.holder, app.state.gate, app.state.settings = holder, gate, settings
    body_limits = BodyLimits(timeout_s=settings.body_timeout_s, min_rate=settings.body_min_rate)
    app.add_middleware(
        RequestContextMiddleware, drain_limit=DRAIN_FACTOR * settings.max_body_bytes, body_limits=body_limits
    )
    # gzip for clients that allow it, for the schema pages; the GLB answer compresses itself
    # (transfer.py), in a worker thread, so its size is known and it can go out in chunks.
    app.add_middleware(NegotiatedGZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=1)
    install_error_handlers(app, settings.retry_after_s)
    # Header checks run before the query is validated and before any of the body is read. The token
    # check is part of the route only when a token is configured, so the OpenAPI schema lists the
    # bearer scheme exactly when it is required. (async: FastAPI runs sync ones in a thread.)
    checks = [Depends(_token_check(settings.token))] if settings.token else []
    checks += [Depends(_check_content_type), Depends(_size_check(settings.max_body_bytes))]

    @app.get(
        "/v1/health",
        summary="Is the service ready? Cheap; never loads anything.",
        response_class=JSONResponse,
        responses={
            200: {"description": "status ready, or degraded (background removal unavailable)"},
            503: {"description": "status loading (with Retry-After) or error (the model failed to load)"},
        },
    )
    async def health() -> JSONResponse:
        current = holder.pipeline
        info = current.info if current is not None else {}
        status = holder.status
        if current is not None and not current.background_removal:
            status = "degraded"
        body: dict[str, Any] = {
            "status": status,
            "model": info.get("model", settings.model),
            "revision": info.get("revision"),
            "device": info.get("device", settings.device),
            "version": service_version(),
            "auth_required": settings.token is not None,
            "queue": {"active": gate.active, "limit": gate.limit},
        }
        if current is not None:
            body["background_removal"] = "ready" if current.background_removal else "unavailable"
        if status == "error":
            body["error"] = LOAD_FAILED
        headers = {"Retry-After": str(settings.retry_after_s)} if status == "loading" else None
        return JSONResponse(body, status_code=200 if current is not None else 503, headers=headers)

    @app.post(
        "/v1/generate",
        summary="Image in (the raw request body), GLB out",
        description="The body is the image file; options are query parameters. See docs/api.md.",
        response_class=Response,
        dependencies=checks,
        responses=_generate_responses(),
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "the image file itself (not a form), at most the server's body limit",
                "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in ACCEPTED_TYPES},
            }
        },
    )
    async def generate(
        request: Request,
        options: GenerateOptions = Depends(_query_options()),
    ) -> Response:
        current = _available_pipeline(holder, settings.retry_after_s)
        # The slot is taken before the upload is read and given back after the answer is sent, so
        # (1 + queue_size) requests at most hold a body, a job or an answer in memory.
        if not gate.try_enter():
            raise _busy(settings.retry_after_s)
        watch: DisconnectWatch | None = None

        def done() -> None:
            gate.leave()
            if watch is not None:
                watch.stop()

        try:
            body = await read_body(
                request.receive, settings.max_body_bytes, lambda: _too_large(settings.max_body_bytes)
            )
            watch = DisconnectWatch(request.receive)
            result = await run_in_threadpool(current.generate, body, options, watch.gone)
            del body
            content, encoding = await run_in_threadpool(
                encode_answer, result.glb, accepts_gzip(request.headers.get("accept-encoding", ""))
            )
        except BaseException:
            done()
            raise
        timing = ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in result.timings.items())
        headers = {
            "Server-Timing": timing,
            "X-Mesh-Vertices": str(result.vertex_count),
            "X-Mesh-Faces": str(result.face_count),
            **encoding,
        }
        return ChunkedResponse(content, GLB_TYPE, headers, on_done=done)

    return app


def _query_options() -> Callable[..., GenerateOptions]:
    """A dependency whose parameters are the declared options (remote/options.py) as query
    parameters, with their bounds (so pydantic checks them and the OpenAPI schema lists them)."""

    def query_options(**values: Any) -> GenerateOptions:
        return GenerateOptions(**values).validate()

    query_options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=option.annotation,
                default=Query(option.default, description=option.help, **option.query_constraints()),
            )
            for option in declared.OPTIONS
        ],
        return_annotation=GenerateOptions,
    )
    return query_options


def _token_check(token: str) -> Callable[..., Awaitable[None]]:
    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description=f"the server's {TOKEN_VARIABLE}")

    async def check_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        sent = request.headers.getlist("authorization")
        if not sent:
            raise ApiError(
                401,
                "unauthorized",
                "This server needs an access token: send 'Authorization: Bearer <token>'.",
                challenge,
            )
        if len(sent) > 1:  # which one counts would depend on the proxy in between: refuse both
            raise ApiError(
                401,
                "unauthorized",
                "Send exactly one Authorization header ('Authorization: Bearer <token>').",
                challenge,
            )
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ApiError(
                401,
                "unauthorized",
                "The access token is wrong; check the token in your settings "
                "(the header must read 'Authorization: Bearer <token>').",
                challenge,
            )

    return check_token


async def _check_content_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ACCEPTED_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be one of {', '.join(ACCEPTED_TYPES)} (got {kind or 'none'}); "
            "send the PNG, JPEG or WebP file itself as the request body.",
        )


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"The request body is over the server's limit of {limit:,} bytes; send a smaller image "
        "(or raise the limit with --max-body-bytes).",
    )


def _size_check(limit: int) -> Callable[[Request], Awaitable[None]]:
    async def check_declared_size(request: Request) -> None:
        """Refuse from Content-Length alone, before any of the body is read."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)

    return check_declared_size


def _busy(retry_after_s: int) -> ApiError:
    return ApiError(
        503, "busy", "The server is busy with other requests; retry shortly.", {"Retry-After": str(retry_after_s)}
    )


def _available_pipeline(holder: PipelineHolder, retry_after_s: int) -> Pipeline:
    """The loaded pipeline, or the error that says why there is none (yet)."""
    if holder.pipeline is not None:
        return holder.pipeline
    if holder.error:
        raise ApiError(500, "model_load_failed", LOAD_FAILED)
    raise ApiError(
        503,
        "loading",
        "The model is still loading (the GPU is warming up); retry shortly.",
        {"Retry-After": str(retry_after_s)},
    )


def _generate_responses() -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of every answer of POST /v1/generate."""
    error = {"application/json": {"schema": _ERROR_SCHEMA}}
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The mesh as binary glTF.",
            "content": {GLB_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "headers": {
                "Server-Timing": {
                    "description": "one `stage;dur=<ms>` entry per pipeline stage",
                    "schema": {"type": "string"},
                },
                "X-Mesh-Vertices": {"description": "vertex count", "schema": {"type": "integer"}},
                "X-Mesh-Faces": {"description": "triangle count", "schema": {"type": "integer"}},
            },
        },
    }
    for status, text in {
        400: "Not an image, corrupt or truncated, or no object found (invalid_image, no_foreground)",
        401: "Missing or wrong bearer token (unauthorized)",
        408: "The request body did not arrive in time (body_timeout)",
        413: "Body over the byte limit or image over the pixel limit (body_too_large, image_too_large)",
        415: "Content-Type is not image/png, image/jpeg or image/webp (unsupported_media_type)",
        422: "An option is out of range (invalid_option)",
        500: "Our bug; the body carries the request id (internal_error, model_load_failed)",
        503: "Busy, model still loading, or GPU out of memory; see Retry-After (busy, loading, gpu_out_of_memory); "
        "or background removal unavailable on this server (background_removal_unavailable, no Retry-After)",
    }.items():
        responses[status] = {"description": text, "content": error}
    retry = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
    responses[503]["headers"] = retry
    return responses
