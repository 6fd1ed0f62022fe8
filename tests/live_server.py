"""Start the real server (`python -m remote.cli serve`, uvicorn) on 127.0.0.1 for tests.

    with live_server(tmp_path) as url:
        requests.get(url + "/v1/health")

It uses the tiny reference model and a tiny ONNX background-removal model, waits until
`/v1/health` says "ready", and stops the process at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from conftest import TINY_MODEL
from tiny_u2net import build_tiny_u2net

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live_server(
    workdir: Path,
    *,
    token: str | None = None,
    extra_args: list[str] | None = None,
    wait_ready: bool = True,
    timeout: float = 120.0,
) -> Iterator[str]:
    """Yield the base URL of a running server; its log is in workdir/server.log."""
    onnx = workdir / "tiny_u2net.onnx"
    if not onnx.exists():
        build_tiny_u2net(onnx)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_TO_3D_TOKEN"}
    if token is not None:
        env["IMAGE_TO_3D_TOKEN"] = token
    command = [
        sys.executable, "-m", "remote.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--model", str(TINY_MODEL), "--device", "cpu", "--rembg-model", str(onnx), *(extra_args or []),
    ]
    log = open(workdir / f"server-{port}.log", "wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {(workdir / f'server-{port}.log').read_text()}")
            try:
                status = requests.get(url + "/v1/health", timeout=2).json()["status"]
                if status == "ready" or not wait_ready:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready in time")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
