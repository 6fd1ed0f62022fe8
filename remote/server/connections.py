"""What `image-to-3d serve` does per TCP connection, where an ASGI app cannot see: uvicorn's settings
plus the deadlines uvicorn does not have.

uvicorn 0.54 (its h11 protocol, the one installed) brings the idle keep-alive timeout
(`timeout_keep_alive`), the header size limit (h11's 16 KiB) and the listen backlog. It has no
deadline for a request's headers (a connection that sends half a request line is kept forever: the
keep-alive timer only runs between requests) and no deadline for an answer the client never reads.
Both live below ASGI, so `GuardedH11Protocol` adds them to uvicorn's own h11 protocol:

- headers: from the connection's start (or the end of the previous answer) the request line and
  headers must arrive within `header_timeout_s`; otherwise 408 (if a request had begun) and close;
- sending: while the client does not read (the socket's write buffer is full) for `send_timeout_s`,
  the connection is dropped, which frees the answer's memory and tells the app the client is gone;
- connection cap: beyond `max_connections` open connections, a request is answered with the API's
  JSON 503 `busy` and the connection closed. This is uvicorn's `limit_concurrency` rule, whose own
  answer is a plain-text 503 without Retry-After; the API promises one JSON error shape.

Deadlines for the request body (a minimum rate and a total) are in the ASGI middleware, so they
hold on Modal too (middleware.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from remote.server.settings import ServerSettings

log = logging.getLogger("image_to_3d.server")


def _raw_error(status: int, reason: str, code: str, message: str, headers: dict[str, str]) -> bytes:
    """One complete HTTP/1.1 error answer in the API's JSON shape, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a send deadline and a JSON connection cap.

    `guarded_protocol(settings)` makes the subclass with the settings' values."""

    header_timeout_s = 10.0
    send_timeout_s = 30.0
    max_connections = 256
    retry_after_s = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._request_begun = False

    # -- headers --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.app = self._over_capacity  # this connection's requests get the JSON 503
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and data:
            self._request_begun = True
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_headers()  # the next request's headers (uvicorn's keep-alive timer also runs)

    def _await_headers(self) -> None:
        self._cancel_header_timer()
        self._request_begun = False
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._request_begun:  # a request began but its headers did not finish: say why we close
            self.transport.write(
                _raw_error(
                    408,
                    "Request Timeout",
                    "header_timeout",
                    f"The request headers did not arrive within {self.header_timeout_s:g} s; send the whole "
                    "request at once and retry.",
                    {},
                )
            )
            log.info("closed a connection whose request headers took over %g s", self.header_timeout_s)
        self.transport.close()

    # -- sending --------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.send_timeout_s, self._client_stopped_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_send_timer()

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _client_stopped_reading(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            if self.cycle is not None:  # the request's log line says 499, not the status it began with
                self.cycle.scope["state"]["client_stopped_reading"] = True
            self.transport.abort()  # drops the unsent bytes; connection_lost tells the app

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_send_timer()
        super().connection_lost(exc)

    # -- the cap --------------------------------------------------------------------------------

    async def _over_capacity(self, scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "busy",
                    "message": f"The server has too many open connections ({self.max_connections}); retry shortly.",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    (b"retry-after", str(self.retry_after_s).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def guarded_protocol(settings: ServerSettings) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with the deadlines and the cap of `settings`."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "send_timeout_s": settings.send_timeout_s,
            "max_connections": settings.max_connections,
            "retry_after_s": settings.retry_after_s,
        },
    )


FILES_PER_CONNECTION = 4  # the cap's connections, with room for the model's files, logs and threads


def raise_file_limit(max_connections: int) -> int:
    """Raise this process's open-file limit to its hard limit, and return the new limit.

    Every connection holds a file descriptor; a server that runs out stops accepting (and asyncio
    logs an error for each attempt), so the limit must sit well above the connection cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, error)
    if soft != resource.RLIM_INFINITY and soft < FILES_PER_CONNECTION * max_connections:
        log.warning(
            "the open-file limit (%d) is low for %d connections; lower --max-connections or raise `ulimit -n`",
            soft,
            max_connections,
        )
    return int(soft)


def uvicorn_config(app: Any, settings: ServerSettings, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn configuration `serve` runs: the guarded protocol and uvicorn's own limits."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # the app logs one line per request itself, with its request id
        http=guarded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works
        backlog=2048,
        # Our own connection cap answers first (JSON); uvicorn's stays as a backstop at twice it.
        limit_concurrency=2 * settings.max_connections,
        timeout_graceful_shutdown=5,
    )
