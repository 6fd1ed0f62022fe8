"""HTTP client for the image-to-3d API. Pure Python (no bpy), so it is tested outside Blender.

It uses the standard library's urllib rather than the `requests` that Blender bundles: urllib is
part of every Python Blender ships (bundled `requests` is Blender's own dependency, not a promised
API), it follows the 303 redirects Modal answers for requests longer than 150 s, and it honours the
system's proxy settings for remote endpoints. The same client then also runs in plain Python.
"""

from __future__ import annotations

import gzip
import http.client
import ipaddress
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# The stages reported to `progress`, in the order a request normally goes through them.
UPLOADING = "uploading"
WARMING_UP = "warming up"
WAITING = "waiting for the GPU"
GENERATING = "generating"
DOWNLOADING = "downloading"

Progress = Callable[[str, float | None], None]  # (stage, fraction done 0..1 or None)

CHUNK = 64 * 1024
CANCEL_POLL_S = 0.05  # how soon Cancel shuts a request's socket
MAX_RETRY_WAIT_S = 10.0
HEALTH_TIMEOUT_S = 60.0  # a cold Modal container may hold the first request this long
RETRYABLE_503 = ("busy", "loading", "")  # "" : a proxy or gateway's 503 without our JSON body
DEFAULT_MAX_BODY_BYTES = 20_000_000  # the server's upload limit unless started with --max-body-bytes


class ClientError(Exception):
    """A failure with a message that tells the artist what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(ClientError):
    def __init__(self) -> None:
        super().__init__("Cancelled; nothing was imported.")


@dataclass
class GenerateResult:
    glb: bytes
    vertices: int | None = None
    faces: int | None = None
    request_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, from Server-Timing
    transfer_bytes: int | None = None  # the download's size on the wire (gzip-compressed or not)


@dataclass
class ConnectionReport:
    ok: bool  # False: generating would fail (model failed to load, token missing or refused)
    status: str  # "ready", "loading" or what the server said
    message: str


def is_loopback(endpoint: str) -> bool:
    """True for endpoints on this machine (127.0.0.0/8, ::1, localhost)."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_endpoint(endpoint: str) -> str:
    """The base URL: surrounding space, a trailing slash and a pasted `/v1/...` path are dropped."""
    url = endpoint.strip().rstrip("/")
    for suffix in ("/v1/health", "/v1/generate", "/v1", "/docs"):
        if url.endswith(suffix):
            return url[: -len(suffix)].rstrip("/")
    return url


def sniff_content_type(data: bytes) -> str | None:
    """The image type from its first bytes, for the request's Content-Type."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_server_timing(header: str) -> dict[str, float]:
    """`decode;dur=12.5, model;dur=80` -> {"decode": 0.0125, "model": 0.08} (seconds)."""
    timings: dict[str, float] = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    timings[name] = float(value) / 1000.0
                except ValueError:
                    pass
    return timings


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Modal answers 303 to the same result URL every 150 s while a request runs: allow many."""

    max_repeats = 40
    max_redirections = 50


class _RemembersConnection(urllib.request.AbstractHTTPHandler):
    """Keeps each request's connection on the request (`request.connection`), so Cancel can close it."""

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        def connection(*args: Any, **kw: Any) -> Any:
            req.connection = http_class(*args, **kw)
            return req.connection

        return super().do_open(connection, req, **kwargs)


class _HTTPHandler(_RemembersConnection, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_RemembersConnection, urllib.request.HTTPSHandler):
    pass


def _close_on_cancel(request: Any, cancel: threading.Event, finished: threading.Event) -> None:
    """Shut the request's socket when `cancel` is set: the server sees the client leave and stops
    the job, and the thread blocked waiting for the answer wakes up at once. Returns as soon as
    `finished` is set, so the request can join this thread (Blender 4.2 crashes on exit if a
    thread of ours is still alive then)."""
    while not finished.wait(CANCEL_POLL_S):
        if cancel.is_set():
            sock = getattr(getattr(request, "connection", None), "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed
            return


class Client:
    """Talks to one endpoint; `timeout` (seconds) bounds a whole generate call, retries included."""

    def __init__(self, endpoint: str, token: str = "", timeout: float = 300.0, compress: bool | None = None) -> None:
        endpoint = normalize_endpoint(endpoint)
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(
                f"The endpoint '{endpoint}' is not an http:// or https:// URL; fix it in the add-on "
                "preferences (e.g. http://127.0.0.1:8000)."
            )
        self.endpoint = endpoint
        self.token = token.strip()
        self.timeout = float(timeout)
        # A proxy set for the internet cannot reach this machine's own server: skip it for loopback.
        proxies = urllib.request.ProxyHandler({} if is_loopback(endpoint) else None)
        self._opener = urllib.request.build_opener(proxies, _Redirects(), _HTTPHandler(), _HTTPSHandler())
        # Ask for gzip over a network (a GLB shrinks 2-4x; zlib inflates it in milliseconds), not
        # from this machine's own server, where compressing costs more than sending.
        self.compress = not is_loopback(endpoint) if compress is None else compress

    # -- the API ---------------------------------------------------------------------------------

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        """GET /v1/health (this also wakes a scaled-to-zero GPU container). The server answers 503
        with the same JSON while its model loads or after it failed to load."""
        limit = min(self.timeout, HEALTH_TIMEOUT_S) if timeout is None else timeout
        status, headers, body = self._request("GET", "/v1/health", timeout=limit)
        try:
            health = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            health = None
        if status != 200 and not (status == 503 and isinstance(health, dict) and "status" in health):
            raise ClientError(self._error_text(status, headers, body))
        if not isinstance(health, dict) or "status" not in health:
            raise ClientError(
                f"{self.endpoint} answered, but not like an image-to-3d server; check the endpoint URL "
                "in the add-on preferences."
            )
        return health

    def check_token(self) -> None:
        """Raise ClientError if the server refuses our token (or needs one we lack).

        The server checks the token before anything else, so an empty upload learns that without
        running the model: 401 means refused, anything else (400 empty image, 503 loading) accepted.
        """
        status, headers, body = self._request(
            "POST",
            "/v1/generate",
            body=b"",
            timeout=min(self.timeout, HEALTH_TIMEOUT_S),
            headers={"Content-Type": "image/png"},
        )
        if status == 401:
            raise ClientError(self._error_text(status, headers, body))

    def test_connection(self) -> ConnectionReport:
        """What the Test Connection button reports: reachable, model state, token accepted."""
        health = self.health()
        status = str(health.get("status"))
        where = f"{health.get('model')} on {health.get('device')}, server {health.get('version')}"
        if status == "error":
            return ConnectionReport(
                False,
                status,
                (
                    f"Connected, but the server's model failed to load: {health.get('error')}. "
                    "Check the server's log and restart it."
                ),
            )
        if health.get("auth_required") or self.token:
            self.check_token()  # raises with what to do when missing or refused
        token = "token accepted" if health.get("auth_required") else "no token needed"
        if status == "ready":
            return ConnectionReport(True, status, f"Connected: ready ({where}; {token}).")
        if status == "loading":
            return ConnectionReport(
                True,
                status,
                (
                    f"Connected: the GPU is warming up and the model is loading ({where}; {token}). "
                    "Generating now waits until it is ready."
                ),
            )
        return ConnectionReport(False, status, f"Connected, but the server reports '{status}' ({where}).")

    def generate(
        self,
        image: bytes,
        options: dict[str, Any],
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerateResult:
        """POST the image; retry while the server is busy or warming up, until the timeout."""
        content_type = sniff_content_type(image)
        if content_type is None:
            raise ClientError("The image is not PNG, JPEG or WebP; save it in one of those formats.")
        report: Progress = progress or (lambda stage, fraction: None)
        deadline = time.monotonic() + self.timeout
        query = urllib.parse.urlencode({k: v for k, v in options.items() if v is not None})
        backoff = 1.0
        while True:
            _check(cancel)
            upload = _Upload(image, report, cancel)
            try:
                status, headers, body = self._request(
                    "POST",
                    f"/v1/generate?{query}",
                    body=upload,
                    timeout=max(1.0, deadline - time.monotonic()),
                    cancel=cancel,
                    progress=report,
                    headers={"Content-Type": content_type, "Content-Length": str(len(image))},
                )
            except ClientError as error:
                if not upload.finished and _connection_dropped(error.__cause__):
                    # The server answered (413) and closed while we were still sending.
                    raise ClientError(_too_large_text(self._body_limit(len(image), content_type))) from error
                raise
            _check(cancel)
            if status == 200:
                return GenerateResult(
                    glb=body,
                    vertices=_int_or_none(headers.get("X-Mesh-Vertices")),
                    faces=_int_or_none(headers.get("X-Mesh-Faces")),
                    request_id=headers.get("X-Request-ID"),
                    timings=parse_server_timing(headers.get("Server-Timing", "")),
                    transfer_bytes=_int_or_none(headers.get("Content-Length")),
                )
            code = _error_payload(body).get("code", "")
            if status == 413 and code in ("body_too_large", ""):
                raise ClientError(_too_large_text(_limit_in(body)))
            if status != 503 or code not in RETRYABLE_503:
                raise ClientError(self._error_text(status, headers, body))
            report(WARMING_UP if code == "loading" else WAITING, None)
            wait = min(_retry_after(headers) or backoff, MAX_RETRY_WAIT_S)
            if time.monotonic() + wait >= deadline:
                state = "warming up" if code == "loading" else "busy"
                raise ClientError(
                    f"The server was still {state} after {self.timeout:g} s; try again in a moment, "
                    "or raise the timeout in the add-on preferences."
                )
            if cancel is not None:
                if cancel.wait(wait):
                    raise Cancelled()
            else:
                time.sleep(wait)
            backoff = min(backoff * 2, MAX_RETRY_WAIT_S)

    # -- plumbing --------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        body: bytes | _Upload | None = None,
        headers: dict[str, str] | None = None,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange; HTTP errors come back as (status, headers, body), the rest raise."""
        request = urllib.request.Request(self.endpoint + path, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if self.compress:
            request.add_header("Accept-Encoding", "gzip")
        finished = threading.Event()
        watcher = None
        if cancel is not None:
            watcher = threading.Thread(target=_close_on_cancel, args=(request, cancel, finished), daemon=True)
            watcher.start()
        try:
            with self._opener.open(request, timeout=timeout) as response:
                body = _read(response, cancel, progress)
                return response.status, _headers(response.headers), _decoded(body, response.headers)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, _headers(error.headers), _decoded(error.read(), error.headers)
        except TimeoutError as error:  # socket.timeout is TimeoutError
            raise self._timeout_error(timeout) from error
        except urllib.error.URLError as error:
            _check(cancel)  # Cancel shut the connection on purpose
            if isinstance(error.reason, TimeoutError):
                raise self._timeout_error(timeout) from error
            raise ClientError(
                f"Cannot reach the image-to-3d server at {self.endpoint} ({error.reason}). Start it with "
                "`image-to-3d serve`, or check the endpoint URL in the add-on preferences."
            ) from error
        except (OSError, http.client.HTTPException) as error:  # reset, or closed mid-answer
            _check(cancel)  # Cancel shut the connection on purpose
            raise ClientError(
                f"The connection to {self.endpoint} broke ({error}); check that the server is still running "
                "and try again."
            ) from error
        finally:
            finished.set()
            if watcher is not None:
                watcher.join()

    def _body_limit(self, size: int, content_type: str) -> int | None:
        """The server's upload limit, asked without uploading: the size is declared and nothing
        sent (with Expect: 100-continue, so the server answers at once); None if it does not say."""
        try:
            status, _, body = self._request(
                "POST",
                "/v1/generate",
                body=b"",
                timeout=10.0,
                headers={"Content-Type": content_type, "Content-Length": str(size), "Expect": "100-continue"},
            )
        except ClientError:
            return None
        return _limit_in(body) if status == 413 else None

    def _timeout_error(self, timeout: float) -> ClientError:
        return ClientError(
            f"No answer from {self.endpoint} within {timeout:.0f} s; raise the timeout in the add-on "
            "preferences or lower the mesh resolution."
        )

    def _error_text(self, status: int, headers: dict[str, str], body: bytes) -> str:
        error = _error_payload(body)
        message = str(error.get("message") or "")
        if status == 401:
            if not self.token:
                return "The server needs an access token: set it in Preferences > Add-ons > Image to 3D."
            return "The server refused the access token; check the token in Preferences > Add-ons > Image to 3D."
        if status == 404:
            return (
                f"{self.endpoint} has no image-to-3d API (HTTP 404); check the endpoint URL in the add-on "
                "preferences: it is the server's base URL, without /v1."
            )
        if status >= 500 and status != 503:
            request_id = error.get("request_id") or headers.get("X-Request-ID")
            reference = f" (request id {request_id}: the server's log has the details)" if request_id else ""
            text = f"The server failed: {message}" if message else f"The server failed with HTTP {status}"
            return text.rstrip(".") + reference + "."
        if message:
            return f"The server said: {message}"
        return f"The server answered HTTP {status}; check the endpoint URL and the server's log."


class _Upload:
    """The request body, handed to http.client in chunks: reports upload progress, honours cancel.

    Iterating it to the end means the whole image was sent, so the server is now generating.
    """

    def __init__(self, data: bytes, progress: Progress, cancel: threading.Event | None) -> None:
        self.data = data
        self.progress = progress
        self.cancel = cancel
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        total = max(len(view), 1)
        for start in range(0, len(view), CHUNK):
            _check(self.cancel)
            self.progress(UPLOADING, start / total)
            yield bytes(view[start : start + CHUNK])
        self.finished = True
        self.progress(GENERATING, None)


def _read(response: Any, cancel: threading.Event | None, progress: Progress | None) -> bytes:
    """The response body in chunks, so a cancel is noticed and progress shown while downloading."""
    total = _int_or_none(response.headers.get("Content-Length"))
    chunks: list[bytes] = []
    size = 0
    while True:
        _check(cancel)
        if progress is not None:
            progress(DOWNLOADING, size / total if total else None)
        chunk = response.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)


UPLOAD_REFUSED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _connection_dropped(error: BaseException | None) -> bool:
    """A pipe broken or reset by the server (directly, or as urllib's URLError reason)."""
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, BaseException) else None
    return isinstance(error, UPLOAD_REFUSED)


def _limit_in(body: bytes) -> int | None:
    """The byte limit a 413 body states ("... over the server's limit of 20,000,000 bytes ...")."""
    match = re.search(r"limit of ([\d,]+) bytes", str(_error_payload(body).get("message") or ""))
    return int(match.group(1).replace(",", "")) if match else None


def _too_large_text(limit: int | None) -> str:
    where = f"limit {limit / 1e6:g} MB" if limit else f"limit unknown; {DEFAULT_MAX_BODY_BYTES / 1e6:g} MB by default"
    return (
        f"The image is too large for the server ({where}). Use a smaller image, or raise the server's "
        "limit (image-to-3d serve --max-body-bytes)."
    )


def _decoded(body: bytes, headers: Any) -> bytes:
    """The body as sent before any gzip content coding (the only coding this client asks for)."""
    if headers is None or str(headers.get("Content-Encoding", "")).lower() != "gzip":
        return body
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error) as error:
        raise ClientError(f"The server's compressed answer was damaged ({error}); try again.") from error


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def _headers(message: Any) -> dict[str, str]:
    """Headers with the canonical spellings this module looks up, whatever case the server used."""
    wanted = ("Retry-After", "X-Request-ID", "X-Mesh-Vertices", "X-Mesh-Faces", "Server-Timing", "Content-Length")
    present = {str(k).lower(): str(v) for k, v in (message.items() if message is not None else [])}
    return {name: present[name.lower()] for name in wanted if name.lower() in present}


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return max(0.5, float(headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _error_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}
