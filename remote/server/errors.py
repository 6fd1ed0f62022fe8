"""Every error the API answers has one shape: `{"error": {"code", "message"}}` with its HTTP status.

This replaces FastAPI's own formats (`{"detail": ...}` for 404/405 and its validation-error list
for 422), so a client parses one thing. Errors of status 500 and above also carry the request id,
which the log line of that request carries too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from remote.errors import ImageTo3DError

log = logging.getLogger("image_to_3d.server")


class ApiError(Exception):
    """An error found by the HTTP layer itself (token, content type, size, busy, loading)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(
    status: int, code: str, message: str, request_id: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if status >= 500:
        error["request_id"] = request_id
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def request_id_of(request: Request) -> str | None:
    """The id the request-context middleware gave this request (see middleware.py)."""
    return getattr(request.state, "request_id", None)


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Map our errors, FastAPI's validation errors and Starlette's HTTP errors onto one JSON shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, request_id_of(request), error.headers)

    @app.exception_handler(ImageTo3DError)
    async def pipeline_error(request: Request, error: ImageTo3DError) -> JSONResponse:
        request_id = request_id_of(request)
        headers = None
        if error.status == 503 and error.code != "background_removal_unavailable":
            headers = {"Retry-After": str(retry_after_s)}  # e.g. GPU out of memory: a retry may work
        if error.status >= 500:
            log.error("request %s: %s (%s)", request_id, error.code, error.message)
        return error_response(error.status, error.code, error.message, request_id, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_describe(issue) for issue in error.errors())
        return error_response(422, "invalid_option", f"Invalid option: {problems}.", request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        messages = {
            404: f"There is no {request.url.path}; the API is POST /v1/generate and GET /v1/health.",
            405: f"{request.method} is not allowed on {request.url.path}; see docs/api.md.",
        }
        return error_response(
            error.status_code,
            codes.get(error.status_code, "http_error"),
            messages.get(error.status_code, str(error.detail)),
            request_id_of(request),
            dict(error.headers or {}),
        )


def _describe(issue: Any) -> str:
    """One validation problem as "name: what is wrong (got value)", e.g. for `?resolution=16`."""
    name = ".".join(str(part) for part in issue.get("loc", ()) if part not in ("query", "header", "body"))
    text = f"{name or 'request'}: {issue.get('msg', 'invalid')}"
    if "input" in issue and not isinstance(issue["input"], (dict, list)):
        text += f" (got {issue['input']!r})"
    return text
