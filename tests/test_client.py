"""The add-on's pure-Python HTTP client (no bpy) against the real server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import io
import threading
import time

import pytest
import trimesh

from conftest import EXAMPLES
from live_server import ROOT, free_port, live_server

_spec = importlib.util.spec_from_file_location("addon_client", ROOT / "blender_addon" / "client.py")
client_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(client_module)
Client, ClientError, Cancelled = client_module.Client, client_module.ClientError, client_module.Cancelled

TOKEN = "client-token"
CHAIR = (EXAMPLES / "chair.png").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("client"), token=TOKEN, extra_args=["--queue-size", "0"]) as url:
        yield url


def test_health_and_generate(server):
    client = Client(server, TOKEN, timeout=60)
    assert client.health()["status"] == "ready"
    stages: list[str] = []
    glb = client.generate(CHAIR, {"resolution": 32, "target_faces": None}, progress=stages.append)
    (mesh,) = trimesh.load(io.BytesIO(glb), file_type="glb").geometry.values()
    assert len(mesh.faces) > 0
    assert stages == ["uploading and generating", "downloading"]


def test_token_errors_say_what_to_do(server):
    with pytest.raises(ClientError, match="needs an access token"):
        Client(server, "", timeout=30).generate(CHAIR, {"resolution": 32})
    with pytest.raises(ClientError, match="refused the access token"):
        Client(server, "wrong", timeout=30).generate(CHAIR, {"resolution": 32})


def test_server_error_text_is_passed_on(server):
    with pytest.raises(ClientError, match="foreground_ratio"):
        Client(server, TOKEN, timeout=30).generate(CHAIR, {"resolution": 32, "foreground_ratio": 0.1})
    with pytest.raises(ClientError, match="not PNG, JPEG or WebP"):
        Client(server, TOKEN, timeout=30).generate(b"GIF89a...", {"resolution": 32})


def test_unreachable_server():
    with pytest.raises(ClientError, match="Cannot reach the image-to-3d server"):
        Client(f"http://127.0.0.1:{free_port()}", timeout=5).health()


def test_bad_endpoint_url():
    with pytest.raises(ClientError, match="not an http"):
        Client("ftp://example.org")


def test_busy_server_is_retried_until_it_is_free(server):
    """With no queue, a second request meets 503 busy and must retry, then succeed."""
    slow = threading.Thread(target=lambda: Client(server, TOKEN, 120).generate(CHAIR, {"resolution": 192}))
    slow.start()
    time.sleep(0.3)
    stages: list[str] = []
    glb = Client(server, TOKEN, timeout=120).generate(CHAIR, {"resolution": 32}, progress=stages.append)
    slow.join()
    assert glb[:4] == b"glTF"
    assert "waiting for the GPU" in stages


def test_busy_until_the_timeout_gives_up(server):
    slow = threading.Thread(target=lambda: Client(server, TOKEN, 120).generate(CHAIR, {"resolution": 256}))
    slow.start()
    time.sleep(0.3)
    try:
        with pytest.raises(ClientError, match="stayed busy"):
            Client(server, TOKEN, timeout=1.5).generate(CHAIR, {"resolution": 32})
    finally:
        slow.join()


def test_cancel_while_waiting(server):
    slow = threading.Thread(target=lambda: Client(server, TOKEN, 120).generate(CHAIR, {"resolution": 256}))
    slow.start()
    time.sleep(0.3)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    try:
        with pytest.raises(Cancelled):
            Client(server, TOKEN, timeout=60).generate(CHAIR, {"resolution": 32}, cancel=cancel)
    finally:
        slow.join()


def test_loopback_detection():
    assert client_module.is_loopback("http://127.0.0.1:8000")
    assert client_module.is_loopback("http://localhost:8000")
    assert client_module.is_loopback("http://[::1]:8000")
    assert not client_module.is_loopback("https://me--image-to-3d.modal.run")
