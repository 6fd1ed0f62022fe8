"""Start the real server (`python -m remote.cli serve`, uvicorn) on 127.0.0.1 for tests.

    from live_server import live_server

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        with live_server(tmp_path_factory.mktemp("server"), token="t", queue_size=0) as url:
            yield url                      # "http://127.0.0.1:<free port>"

    requests.get(server + "/v1/health")

It runs the tiny reference model (tests/fixtures/triposr_tiny) on the CPU with a tiny ONNX
background-removal model built into `workdir` (or none, with `rembg_model=False`), waits until
`/v1/health` answers 200 ("ready", or "degraded" without background removal; unless
`wait_ready=False`), and stops the process at the end (SIGTERM, then SIGKILL after 15 s). The URL it
yields is a plain `str`; its `log_path` attribute names the server's log file (stdout and stderr),
its `pid` the server's process id.
The server never sees an `IMAGE_TO_3D_TOKEN` from the caller's environment, only `token`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from conftest import TINY_MODEL
from image_to_3d_dev.tiny_u2net import build_tiny_u2net

ROOT = Path(__file__).resolve().parents[1]


class ServerURL(str):
    """The base URL of a running test server; `log_path` is where its output goes."""

    log_path: Path
    pid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_in_process(app: object) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn in a thread of this process (for loaders and pipelines
    that a test controls); yield its URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def live_server(
    workdir: Path,
    *,
    token: str | None = None,
    max_body_bytes: int | None = None,
    max_pixels: int | None = None,
    queue_size: int | None = None,
    extra_args: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    rembg_model: bool = True,
    timeout: float = 120.0,
) -> Iterator[ServerURL]:
    """Run `image-to-3d serve` with the tiny models until the block ends; yield its base URL.

    token, max_body_bytes, max_pixels and queue_size set the server's; extra_args are more `serve`
    flags; env adds environment variables. With wait_ready=False the URL comes as soon as the server
    answers at all (its model may still be loading).
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "remote.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        str(TINY_MODEL),
        "--device",
        "cpu",
    ]
    if rembg_model:
        onnx = workdir / "tiny_u2net.onnx"
        if not onnx.exists():
            build_tiny_u2net(onnx)
        command += ["--rembg-model", str(onnx)]
    limits = {"--max-body-bytes": max_body_bytes, "--max-pixels": max_pixels, "--queue-size": queue_size}
    command += [part for flag, value in limits.items() if value is not None for part in (flag, str(value))]
    command += extra_args or []
    environment = {k: v for k, v in os.environ.items() if k != "IMAGE_TO_3D_TOKEN"}
    environment.update(env or {})
    if token is not None:
        environment["IMAGE_TO_3D_TOKEN"] = token

    url = ServerURL(f"http://127.0.0.1:{port}")
    url.log_path = workdir / f"server-{port}.log"
    with open(url.log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        url.pid = process.pid
        try:
            _wait_until_up(process, url, wait_ready, timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(process: subprocess.Popen[bytes], url: ServerURL, wait_ready: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{url.log_path.read_text()}")
        try:
            answer = requests.get(url + "/v1/health", timeout=5)
            health = answer.json()
        except (requests.ConnectionError, requests.Timeout):
            # Not listening yet, or busy importing in the loader thread (rembg's import holds the
            # GIL for stretches; on a loaded CI machine a health answer once took over 2 s).
            health = None
        if health is not None:
            if answer.status_code == 200 or not wait_ready:
                return
            if health["status"] == "error":
                raise RuntimeError(f"the server's model failed to load: {health.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n{url.log_path.read_text()}")
        time.sleep(0.1)
