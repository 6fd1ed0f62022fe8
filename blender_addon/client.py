"""HTTP client for the image-to-3d API. Pure Python (no bpy), so it is tested outside Blender.

It uses the standard library's urllib rather than the `requests` Blender bundles: nothing to
import that a Blender build might lack, and the client stays usable from any Python.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

STAGES = ("connecting", "warming up", "uploading and generating", "waiting for the GPU", "downloading")


class ClientError(Exception):
    """A failure with a message that tells the artist what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(ClientError):
    def __init__(self) -> None:
        super().__init__("Cancelled; nothing was imported.")


def is_loopback(endpoint: str) -> bool:
    """True for endpoints on this machine (127.0.0.0/8, ::1, localhost)."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sniff_content_type(data: bytes) -> str | None:
    """The image type from its first bytes, for the request's Content-Type."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class Client:
    """Talks to one endpoint; `timeout` bounds a whole generate call, retries included."""

    def __init__(self, endpoint: str, token: str = "", timeout: float = 300.0) -> None:
        endpoint = endpoint.strip().rstrip("/")
        if not urllib.parse.urlsplit(endpoint).scheme in ("http", "https"):
            raise ClientError(f"The endpoint '{endpoint}' is not an http:// or https:// URL; fix it in the add-on preferences.")
        self.endpoint = endpoint
        self.token = token.strip()
        self.timeout = timeout

    def health(self, timeout: float = 30.0) -> dict[str, Any]:
        """GET /v1/health (this also wakes a scaled-to-zero GPU container)."""
        status, _, body = self._request("GET", "/v1/health", timeout=timeout)
        if status != 200:
            raise ClientError(self._error_text(status, body))
        return json.loads(body)

    def generate(
        self,
        image: bytes,
        options: dict[str, Any],
        progress: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bytes:
        """POST the image; retry while the server is busy or warming up, until the timeout."""
        content_type = sniff_content_type(image)
        if content_type is None:
            raise ClientError("The image is not PNG, JPEG or WebP; save it in one of those formats.")
        report = progress or (lambda stage: None)
        deadline = time.monotonic() + self.timeout
        query = urllib.parse.urlencode({k: v for k, v in options.items() if v is not None})
        delay = 1.0
        while True:
            self._check_cancel(cancel)
            report("uploading and generating")
            remaining = deadline - time.monotonic()
            status, headers, body = self._request(
                "POST", f"/v1/generate?{query}", body=image, timeout=max(1.0, remaining),
                headers={"Content-Type": content_type}, progress=report,
            )
            self._check_cancel(cancel)
            if status == 200:
                return body
            if status != 503:
                raise ClientError(self._error_text(status, body))
            code = _error_code(body)
            report("warming up" if code == "loading" else "waiting for the GPU")
            wait = min(float(headers.get("Retry-After") or delay), 10.0)
            if time.monotonic() + wait >= deadline:
                raise ClientError(
                    f"The server stayed {'busy' if code == 'busy' else 'unavailable'} for {self.timeout:.0f} s; "
                    "try again in a moment, or raise the timeout in the add-on preferences."
                )
            if cancel is not None and cancel.wait(wait):
                raise Cancelled()
            if cancel is None:
                time.sleep(wait)
            delay = min(delay * 2, 10.0)

    def _check_cancel(self, cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout: float,
        headers: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.endpoint + path, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if progress:
                    progress("downloading")
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers or {}), error.read()
        except (socket.timeout, TimeoutError) as error:
            raise ClientError(
                f"No answer from {self.endpoint} within {timeout:.0f} s; raise the timeout in the add-on "
                "preferences or lower the mesh resolution."
            ) from error
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise ClientError(
                    f"No answer from {self.endpoint} within {timeout:.0f} s; raise the timeout in the add-on "
                    "preferences or lower the mesh resolution."
                ) from error
            raise ClientError(
                f"Cannot reach the image-to-3d server at {self.endpoint} ({reason}). Start it with "
                "`image-to-3d serve`, or check the endpoint URL in the add-on preferences."
            ) from error
        except (ConnectionError, OSError) as error:
            raise ClientError(
                f"The connection to {self.endpoint} failed ({error}); check that the server is running."
            ) from error

    def _error_text(self, status: int, body: bytes) -> str:
        message = _error_message(body)
        if status == 401:
            if not self.token:
                return "The server needs an access token: set it in Preferences > Add-ons > Image to 3D."
            return "The server refused the access token; check the token in Preferences > Add-ons > Image to 3D."
        if message:
            return f"The server said: {message}"
        return f"The server answered HTTP {status}; check the endpoint URL and the server's log."


def _error_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _error_message(body: bytes) -> str:
    return str(_error_payload(body).get("message") or "")


def _error_code(body: bytes) -> str:
    return str(_error_payload(body).get("code") or "")
