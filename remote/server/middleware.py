"""Per-request plumbing, as one plain ASGI middleware around the app:

- a request id, in the `X-Request-ID` header of every response and in the log line of the request
  (with the stage times of a generate, from its Server-Timing header; never a header of the request);
- an error of ours (an exception nothing else handled) becomes a JSON 500 that carries the id,
  logged once with its traceback;
- before an error answer, the unread rest of the request body is read and thrown away (up to
  `drain_limit` bytes). Without this, a server that answers early (401, 413, 503 ...) and closes
  makes the client's kernel reset the connection while it is still uploading, and clients such as
  urllib (the Blender add-on's) then report "connection reset" instead of the error. Clients that
  sent `Expect: 100-continue` have not started uploading, so nothing is drained for them.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remote.server.errors import error_response

log = logging.getLogger("image_to_3d.server")


class _Body:
    """Wraps `receive` to know how much of the request body has arrived and whether all of it has."""

    def __init__(self, receive: Receive, headers: Headers) -> None:
        self._receive = receive
        self.received = 0
        self.complete = False
        self.disconnected = False
        length = headers.get("content-length", "")
        self.declared = int(length) if length.isdigit() else None
        self.expects_continue = headers.get("expect", "").lower() == "100-continue"
        self.has_body = bool(self.declared) or "chunked" in headers.get("transfer-encoding", "").lower()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def drain(self, limit: int) -> None:
        """Read and discard the rest of the body, unless it would take more than `limit` bytes."""
        if self.complete or self.disconnected or not self.has_body:
            return
        if self.expects_continue and self.received == 0:
            return
        if self.declared is not None and self.declared > limit:
            return
        while not self.complete and not self.disconnected and self.received <= limit:
            await self.receive()


class RequestContextMiddleware:
    """Request id, one log line per request, JSON 500s for our bugs, body drained before errors."""

    def __init__(self, app: ASGIApp, drain_limit: int) -> None:
        self.app = app
        self.drain_limit = drain_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        body = _Body(receive, Headers(scope=scope))
        start = time.perf_counter()
        status = 0
        stages = ""  # the answer's Server-Timing: the pipeline's stage times, for the log line

        async def send_with_id(message: Message) -> None:
            nonlocal status, stages
            if message["type"] == "http.response.start":
                status = message["status"]
                stages = Headers(raw=message["headers"]).get("server-timing", "")
                if status >= 400:
                    await body.drain(self.drain_limit)
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, body.receive, send_with_id)
        except Exception:
            log.exception("request %s failed with an internal error", request_id)
            if status:  # the answer had already begun; the server closes the connection
                raise
            response = error_response(
                500, "internal_error",
                f"Internal server error (request id {request_id}); please report it with this id.",
                request_id,
            )
            await response(scope, body.receive, send_with_id)
        finally:
            log.info(
                "%s %s %s %d %.0f ms%s", request_id, scope["method"], scope["path"], status,
                (time.perf_counter() - start) * 1000, f" stages {stages}" if stages else "",
            )
