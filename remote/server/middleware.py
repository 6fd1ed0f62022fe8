"""Per-request plumbing, as one plain ASGI middleware around the app:

- a request id, in the `X-Request-ID` header of every response and in the log line of the request
  (the client's own `X-Request-ID` when it sends a short, plain one, so both logs share it), with
  the stage times of a generate from its Server-Timing header;
- deadlines for the request body: after a grace period it must arrive at `body_min_rate` bytes per
  second on average, and all of it within `body_timeout_s`; a late body is answered 408
  `body_timeout`. They are here, not in the server, so that they hold on Modal too;
- an error of ours (an exception nothing else handled) becomes a JSON 500 that carries the id,
  logged once with its traceback; a client that went away before its answer was complete is
  logged once, with status 499 (nginx's "client closed request"), without a traceback;
- before an error answer, the unread rest of the request body is read and thrown away (up to
  `drain_limit` bytes, within the body deadlines). Without this, a server that answers early
  (401, 413, 503 ...) and closes makes the client's kernel reset the connection while it is still
  uploading, and clients such as urllib (the Blender add-on's) then report "connection reset"
  instead of the error. Clients that sent `Expect: 100-continue` have not started uploading, so
  nothing is drained for them. An answer sent while part of the body is still unread closes the
  connection (`Connection: close`), so the rest can never hold it open.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remote.server.errors import error_response

log = logging.getLogger("image_to_3d.server")

CLIENT_CLOSED_REQUEST = 499
BODY_GRACE_S = 5.0  # the minimum body rate applies after this long (a slow start is fine)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True)
class BodyLimits:
    """How long a request body may take: `timeout_s` in all, and `min_rate` bytes/s on average
    once `grace_s` has passed (0 turns the rate off)."""

    timeout_s: float = 60.0
    min_rate: int = 50_000
    grace_s: float = BODY_GRACE_S


class BodyTimeout(Exception):
    """The request body did not arrive within its deadlines (see BodyLimits)."""


class _Body:
    """Wraps `receive`: counts the request body, enforces its deadlines, notices a disconnect."""

    def __init__(self, receive: Receive, headers: Headers, limits: BodyLimits) -> None:
        self._receive = receive
        self._limits = limits
        self._start = time.monotonic()
        self.received = 0
        self.complete = False
        self.disconnected = False
        self.timed_out = False
        length = headers.get("content-length", "")
        self.declared = int(length) if length.isdigit() else None
        self.expects_continue = headers.get("expect", "").lower() == "100-continue"
        self.has_body = bool(self.declared) or "chunked" in headers.get("transfer-encoding", "").lower()
        if not self.has_body:
            self.complete = True

    def _deadline(self) -> float:
        """When the next piece of body must have arrived."""
        deadline = self._start + self._limits.timeout_s
        if self._limits.min_rate > 0:
            deadline = min(deadline, self._start + self._limits.grace_s + self.received / self._limits.min_rate)
        return deadline

    async def receive(self) -> Message:
        if self.complete or self.disconnected:  # e.g. waiting for a disconnect: no deadline
            message = await self._receive()
        else:
            try:
                message = await asyncio.wait_for(self._receive(), max(0.0, self._deadline() - time.monotonic()))
            except asyncio.TimeoutError:
                self.timed_out = True
                raise BodyTimeout() from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def drain(self, limit: int) -> None:
        """Read and discard the rest of the body, unless it would take more than `limit` bytes or
        break its deadlines."""
        if self.complete or self.disconnected or self.timed_out:
            return
        if self.expects_continue and self.received == 0:
            return
        if self.declared is not None and self.declared > limit:
            return
        try:
            while not self.complete and not self.disconnected and self.received <= limit:
                await self.receive()
        except BodyTimeout:
            return


class RequestContextMiddleware:
    """Request id, one log line per request, body deadlines, JSON 500s for our bugs, 499 for
    clients that left, body drained before errors."""

    def __init__(self, app: ASGIApp, drain_limit: int, body_limits: BodyLimits | None = None) -> None:
        self.app = app
        self.drain_limit = drain_limit
        self.body_limits = body_limits or BodyLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        body = _Body(receive, headers, self.body_limits)
        start = time.perf_counter()
        status = 0
        stages = ""  # the answer's Server-Timing: the pipeline's stage times, for the log line
        finished = False  # the last byte of the answer was handed to the server
        left_early = False  # the client disconnected before that

        async def receive_noting_disconnect() -> Message:
            nonlocal left_early
            message = await body.receive()
            if message["type"] == "http.disconnect" and not finished:
                left_early = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, finished, stages
            if message["type"] == "http.response.start":
                status = message["status"]
                stages = Headers(raw=message["headers"]).get("server-timing", "")
                if status >= 400:
                    await body.drain(self.drain_limit)
                response_headers = MutableHeaders(scope=message)
                response_headers["X-Request-ID"] = request_id
                if not body.complete:  # the rest of the body must not keep the connection open
                    response_headers["Connection"] = "close"
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive_noting_disconnect, send_with_id)
        except ClientDisconnect:
            left_early = True  # the upload broke off; nobody is there to answer
        except BodyTimeout:
            if not status:
                await error_response(
                    408,
                    "body_timeout",
                    f"The request body did not arrive in time (all of it within {self.body_limits.timeout_s:g} s, "
                    f"at least {self.body_limits.min_rate:,} bytes/s); retry on a faster connection or send a "
                    "smaller image.",
                    request_id,
                )(scope, receive_noting_disconnect, send_with_id)
        except Exception:
            log.exception("request %s failed with an internal error", request_id)
            if status:  # the answer had already begun; the server closes the connection
                raise
            response = error_response(
                500,
                "internal_error",
                f"Internal server error (request id {request_id}); please report it with this id.",
                request_id,
            )
            await response(scope, receive_noting_disconnect, send_with_id)
        finally:
            # The server marks a client dropped for reading nothing of its answer (connections.py).
            if left_early or scope["state"].get("client_stopped_reading"):
                status = CLIENT_CLOSED_REQUEST
            log.info(
                "%s %s %s %d %.0f ms%s",
                request_id,
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000,
                f" stages {stages}" if stages else "",
            )
