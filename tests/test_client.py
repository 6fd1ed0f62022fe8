"""The add-on's pure-Python HTTP client (no bpy) against the real server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import io
import sys
import threading
import time

import pytest
import trimesh

from conftest import EXAMPLES
from live_server import ROOT, free_port, live_server

pytestmark = pytest.mark.slow  # a live server (uvicorn) per module

_spec = importlib.util.spec_from_file_location("addon_client", ROOT / "blender_addon" / "client.py")
client_module = importlib.util.module_from_spec(_spec)
sys.modules["addon_client"] = client_module  # loaded from its file alone: no bpy, no add-on package
_spec.loader.exec_module(client_module)
Client, ClientError, Cancelled = client_module.Client, client_module.ClientError, client_module.Cancelled

TOKEN = "client-token"
CHAIR = (EXAMPLES / "chair.png").read_bytes()
SLOW = {"resolution": 256}  # about 3 s on the tiny model on a CPU: long enough to keep the server busy


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("client"), token=TOKEN, queue_size=0) as url:
        yield url


def stage_changes(calls: list[tuple[str, float | None]]) -> list[str]:
    stages: list[str] = []
    for stage, _ in calls:
        if not stages or stages[-1] != stage:
            stages.append(stage)
    return stages


def wait_until_idle(server: str) -> None:
    deadline = time.monotonic() + 120
    while Client(server, TOKEN, 10).health()["queue"]["active"]:
        assert time.monotonic() < deadline, "the server stayed busy"
        time.sleep(0.05)


def occupy(server: str) -> threading.Thread:
    """Keep the one-job server busy with a slow request; returns once the server says it is busy."""
    slow = threading.Thread(target=lambda: Client(server, TOKEN, 120).generate(CHAIR, SLOW))
    slow.start()
    deadline = time.monotonic() + 60
    while True:
        queue = Client(server, TOKEN, 10).health()["queue"]
        if queue["active"] >= queue["limit"]:
            return slow
        assert slow.is_alive() and time.monotonic() < deadline, "the slow request never occupied the server"
        time.sleep(0.02)


def test_health_and_generate(server):
    client = Client(server, TOKEN, timeout=60)
    assert client.health()["status"] == "ready"
    calls: list[tuple[str, float | None]] = []
    result = client.generate(CHAIR, {"resolution": 32, "target_faces": None}, progress=lambda *a: calls.append(a))
    (mesh,) = trimesh.load(io.BytesIO(result.glb), file_type="glb", process=False).geometry.values()
    assert (result.vertices, result.faces) == (len(mesh.vertices), len(mesh.faces)) and result.faces > 0
    assert result.request_id and list(result.timings) == ["decode", "preprocess", "model", "extraction", "color", "glb"]
    assert stage_changes(calls) == ["uploading", "generating", "downloading"]
    downloads = [fraction for stage, fraction in calls if stage == "downloading"]
    assert downloads[0] == 0.0 and downloads == sorted(downloads) and downloads[-1] == pytest.approx(1.0)


def test_upload_progress_of_a_large_image(server):
    """A few MB go up in chunks, each reported; the server's answer to the (bad) image is passed on."""
    big = CHAIR[:8] + bytes(3_000_000)  # a PNG signature, then zeros: the server refuses it as damaged
    calls: list[tuple[str, float | None]] = []
    with pytest.raises(ClientError, match="The server said: .*damaged"):
        Client(server, TOKEN, timeout=60).generate(big, {"resolution": 32}, progress=lambda *a: calls.append(a))
    uploads = [fraction for stage, fraction in calls if stage == "uploading"]
    assert len(uploads) > 40 and uploads == sorted(uploads) and uploads[-1] > 0.95


def test_endpoint_as_pasted(server):
    assert Client(f"  {server}/v1/health/ ", TOKEN).endpoint == server
    assert Client(server + "/v1", TOKEN).health()["status"] == "ready"
    with pytest.raises(ClientError, match="no image-to-3d API .* without /v1"):
        Client(server + "/api", TOKEN).health()


def test_token_errors_say_what_to_do(server):
    with pytest.raises(ClientError, match="needs an access token: set it in Preferences > Add-ons"):
        Client(server, "", timeout=30).generate(CHAIR, {"resolution": 32})
    with pytest.raises(ClientError, match="refused the access token; check the token"):
        Client(server, "wrong", timeout=30).generate(CHAIR, {"resolution": 32})


def test_connection_report(server):
    report = Client(server, TOKEN).test_connection()
    assert report.ok and report.status == "ready"
    assert "ready" in report.message and "token accepted" in report.message and "cpu" in report.message
    with pytest.raises(ClientError, match="refused the access token"):
        Client(server, "wrong").test_connection()
    with pytest.raises(ClientError, match="needs an access token"):
        Client(server, "").test_connection()


def test_server_error_text_is_passed_on(server):
    with pytest.raises(ClientError, match="The server said: .*foreground_ratio"):
        Client(server, TOKEN, timeout=30).generate(CHAIR, {"resolution": 32, "foreground_ratio": 0.1})
    with pytest.raises(ClientError, match="not PNG, JPEG or WebP"):
        Client(server, TOKEN, timeout=30).generate(b"GIF89a...", {"resolution": 32})


def test_unreachable_server():
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClientError, match="Cannot reach the image-to-3d server .* `image-to-3d serve`"):
        Client(endpoint, timeout=5).health()
    with pytest.raises(ClientError, match="Cannot reach the image-to-3d server"):
        Client(endpoint, timeout=5).generate(CHAIR, {})


def test_bad_endpoint_url():
    with pytest.raises(ClientError, match="not an http"):
        Client("ftp://example.org")
    with pytest.raises(ClientError, match="not an http"):
        Client("127.0.0.1:8000")


def test_no_answer_within_the_timeout(server):
    with pytest.raises(ClientError, match="No answer from .* within 1 s; raise the timeout"):
        Client(server, TOKEN, timeout=1).generate(CHAIR, SLOW)
    wait_until_idle(server)  # the server finishes the abandoned job before the next test


def test_busy_server_is_retried_until_it_is_free(server):
    """With no queue, a second request meets 503 busy and must retry, then succeed."""
    slow = occupy(server)
    calls: list[tuple[str, float | None]] = []
    result = Client(server, TOKEN, timeout=120).generate(CHAIR, {"resolution": 32}, progress=lambda *a: calls.append(a))
    slow.join()
    assert result.glb[:4] == b"glTF"
    assert stage_changes(calls)[:3] == ["uploading", "generating", "waiting for the GPU"]
    assert stage_changes(calls)[-3:] == ["uploading", "generating", "downloading"]


def test_busy_until_the_timeout_gives_up(server):
    slow = occupy(server)
    try:
        with pytest.raises(ClientError, match="still busy after 1.5 s; try again in a moment, or raise the timeout"):
            Client(server, TOKEN, timeout=1.5).generate(CHAIR, {"resolution": 32})
    finally:
        slow.join()


def test_cancel_while_waiting(server):
    slow = occupy(server)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            Client(server, TOKEN, timeout=60).generate(CHAIR, {"resolution": 32}, cancel=cancel)
        assert time.monotonic() - started < 2.0  # noticed during the retry wait, not after it
    finally:
        slow.join()


def test_a_server_whose_model_failed(tmp_path):
    """A real 500: the message carries the server's text and the request id to look up in its log."""
    missing = tmp_path / "no-such-model"
    with live_server(tmp_path, extra_args=["--model", str(missing)], wait_ready=False) as url:
        client = Client(url, timeout=30)
        deadline = time.monotonic() + 60
        while client.health()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        report = client.test_connection()
        assert not report.ok and "model failed to load" in report.message and "log" in report.message
        assert str(missing) not in report.message  # the server keeps paths to its log
        with pytest.raises(
            ClientError,
            match=r"(?s)The server failed: The model failed to load.* \(request id \S+: "
            r"the server's log has the details\)",
        ):
            client.generate(CHAIR, {"resolution": 32})
        assert "no token needed" not in report.message  # a failed model is reported, not the token


def test_loopback_detection():
    assert client_module.is_loopback("http://127.0.0.1:8000")
    assert client_module.is_loopback("http://127.1.2.3:8000")
    assert client_module.is_loopback("http://localhost:8000")
    assert client_module.is_loopback("http://[::1]:8000")
    assert not client_module.is_loopback("https://me--image-to-3d.modal.run")
    assert not client_module.is_loopback("http://10.0.0.5:8000")
    assert not client_module.is_loopback("http://localhost.example.com:8000")


def test_server_timing_parsing():
    assert client_module.parse_server_timing('decode;dur=12.5, model;desc="x";dur=80, bad;dur=x') == {
        "decode": 0.0125,
        "model": 0.08,
    }


def test_gzip_is_asked_for_over_a_network_and_inflated(server):
    assert Client("https://example.org").compress and not Client(server).compress  # loopback sends as is
    plain = Client(server, TOKEN, timeout=60).generate(CHAIR, {"resolution": 32})
    packed = Client(server, TOKEN, timeout=60, compress=True).generate(CHAIR, {"resolution": 32})
    assert packed.glb == plain.glb and plain.transfer_bytes == len(plain.glb)
    assert packed.transfer_bytes is not None and packed.transfer_bytes < len(packed.glb) / 1.5


@pytest.mark.parametrize("size", [150_000, 3_000_000])
def test_an_image_over_the_upload_limit_says_so(tmp_path, size):
    """Just over the limit the server answers 413; far over it, it closes while we still send
    (a broken pipe or reset): both say the image is too large, with the server's limit."""
    with live_server(tmp_path, max_body_bytes=100_000) as url:
        with pytest.raises(ClientError) as raised:
            Client(url, "", timeout=60).generate(CHAIR[:8] + bytes(size), {"resolution": 32})
    assert raised.value.message.startswith("The image is too large for the server (limit 0.1 MB)")
    assert "Cannot reach" not in raised.value.message


def test_the_default_upload_limit_is_the_servers():
    from remote.server.settings import ServerSettings

    assert client_module.DEFAULT_MAX_BODY_BYTES == ServerSettings().max_body_bytes
