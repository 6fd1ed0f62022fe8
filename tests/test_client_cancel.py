"""The add-on's Cancel frees the server: the client shuts its connection, the server stops the job.

Against the real `image-to-3d serve` on 127.0.0.1 with the tiny model; the client is the add-on's
`client.py`, loaded from its file alone (no bpy).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time

import pytest
import requests
import uvicorn

from conftest import EXAMPLES
from live_server import ROOT, free_port, live_server

from remote.server.app import create_app
from remote.server.settings import ServerSettings

pytestmark = pytest.mark.slow  # a live server (uvicorn)

_spec = importlib.util.spec_from_file_location("addon_client_cancel", ROOT / "blender_addon" / "client.py")
client_module = importlib.util.module_from_spec(_spec)
sys.modules["addon_client_cancel"] = client_module
_spec.loader.exec_module(client_module)

ROBOT = (EXAMPLES / "robot.png").read_bytes()  # already cut out: the job is all model and extraction
SLOW = {"resolution": 320}  # tens of seconds on the tiny model on a CPU


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("cancel"), queue_size=0) as url:
        yield url


def active(url: str) -> int:
    return requests.get(url + "/v1/health", timeout=5).json()["queue"]["active"]


def test_cancel_while_generating_frees_the_server(server):
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def generate() -> None:
        try:
            client_module.Client(server, timeout=300).generate(ROBOT, SLOW, cancel=cancel)
        except BaseException as error:  # the test looks at what it was
            outcome.append(error)

    worker = threading.Thread(target=generate)
    worker.start()
    deadline = time.monotonic() + 30
    while active(server) == 0:
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.02)
    time.sleep(1.0)  # uploaded; the job runs
    cancel.set()
    cancelled_at = time.monotonic()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the client kept waiting for the answer after Cancel"
    assert len(outcome) == 1 and isinstance(outcome[0], client_module.Cancelled), outcome
    while active(server) != 0:
        assert time.monotonic() - cancelled_at < 10, "the server kept the job after Cancel"
        time.sleep(0.02)
    print(f"Cancel to free slot: {time.monotonic() - cancelled_at:.2f} s")
    answer = requests.post(
        server + "/v1/generate?resolution=32", data=ROBOT, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert answer.status_code == 200  # the next Generate does not wait behind the cancelled one
    time.sleep(0.2)
    assert " 499 " in server.log_path.read_text()


def test_health_while_loading_is_read_from_the_503():
    """The server answers 503 with its health JSON while loading; the client reports the state."""
    release = threading.Event()

    def loader():
        assert release.wait(60)
        raise RuntimeError("never loads")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ServerSettings(token=None), pipeline_loader=loader),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        client = client_module.Client(f"http://127.0.0.1:{port}", timeout=30)
        assert client.health()["status"] == "loading"
        report = client.test_connection()
        assert report.ok and "warming up" in report.message
        release.set()
        deadline = time.monotonic() + 10
        while client.health()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.health()["status"] == "error"
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=15)
