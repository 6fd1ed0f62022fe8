"""How a job's bytes come in and go out: the upload read while its queue slot is held, a watch for a
client that leaves, and the GLB answer sent in chunks with gzip when the client accepts it.

Sending in chunks matters for memory: each chunk waits until the client has taken the previous
one, so an answer nobody reads stays in the process (and keeps its slot) instead of piling up in
the socket's buffer after the slot is given back. The server drops a connection whose client reads
nothing for the send deadline (connections.py), which ends the wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from isal import igzip
from starlette.middleware.gzip import GZipMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from remote.errors import JobCancelledError

CHUNK_BYTES = 64 * 1024  # asyncio's default high-water mark: one chunk in flight per connection
GZIP_LEVEL = 2  # ISA-L's level 2: 6% larger than zlib's level 1 in a quarter of its time (docs/performance.md)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (RFC 9110: `gzip;q=0` or `*;q=0` refuse it)."""
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, parameters = part.strip().partition(";")
        weight = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if name.strip():
            weights[name.strip().lower()] = weight
    if "gzip" in weights:
        return weights["gzip"] > 0
    return weights.get("*", 0.0) > 0


class NegotiatedGZipMiddleware(GZipMiddleware):
    """Starlette's gzip, but only for clients whose Accept-Encoding really allows it (Starlette
    looks for the word "gzip" and so compresses for `gzip;q=0` too)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not accepts_gzip(Headers(scope=scope).get("accept-encoding", "")):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def read_body(receive: Receive, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The request body, counted while it streams: a chunked or lying client is stopped at `limit`
    bytes; a client that hangs up mid-upload ends it with JobCancelledError (logged as 499)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise JobCancelledError("The client disconnected during the upload.")
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large()
        if not message.get("more_body", False):
            return bytes(body)


class DisconnectWatch:
    """Notices the client hanging up while its job runs; `gone` may be asked from any thread.

    Once the body is read, an ASGI server's `receive` returns only when the client disconnects
    (or the answer is complete), so one waiting task is enough."""

    def __init__(self, receive: Receive) -> None:
        self._gone = threading.Event()
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._gone.set()

    def gone(self) -> bool:
        return self._gone.is_set()

    def stop(self) -> None:
        self._task.cancel()


def encode_answer(glb: bytes, gzip_accepted: bool) -> tuple[bytes, dict[str, str]]:
    """The answer's bytes and its encoding headers (run it in a worker thread: gzip takes time).

    ISA-L (python-isal) writes the same gzip format as zlib, so every client inflates it as before;
    at zlib's level 1 the compression took as long as the whole pipeline (docs/performance.md)."""
    if not gzip_accepted:
        return glb, {}
    return igzip.compress(glb, GZIP_LEVEL, mtime=0), {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}


class ChunkedResponse(Response):
    """A Response whose body goes out CHUNK_BYTES at a time; `on_done` runs once it is all sent
    or the sending ended (the client left), which is when the job's queue slot is given back."""

    def __init__(self, content: bytes, media_type: str, headers: dict[str, str], on_done: Callable[[], None]) -> None:
        super().__init__(content=content, media_type=media_type, headers=headers)
        self._on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            view = memoryview(self.body)
            start = 0
            while True:
                end = min(start + CHUNK_BYTES, len(view))
                await send({"type": "http.response.body", "body": bytes(view[start:end]), "more_body": end < len(view)})
                if end >= len(view):
                    break
                start = end
        finally:
            self._on_done()
