"""Clients that try to hold, fill or crash the server, against the real `image-to-3d serve` (uvicorn on
127.0.0.1, tiny model) over raw sockets where a well-behaved HTTP library would hide the attack.

The `guarded` server runs with short deadlines (headers 1.5 s, body 4 s at >= 20 kB/s after 5 s,
answers 2 s, keep-alive 1 s), 12 connections at most and one job plus one waiting, so every deadline
can be seen to fire within a test.
"""

from __future__ import annotations

import io
import json
import resource
import socket
import threading
import time
from pathlib import Path

import PIL.Image
import pytest
import requests

from conftest import EXAMPLES
from live_server import live_server

from remote.server.connections import raise_file_limit

pytestmark = pytest.mark.slow  # live servers (uvicorn)

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 4.0
BODY_MIN_RATE = 20_000
SEND_TIMEOUT = 2.0
KEEP_ALIVE = 1.0
MAX_CONNECTIONS = 12
BODY_LIMIT = 6_000_000
ROBOT = (EXAMPLES / "robot.png").read_bytes()  # cut out already (its own alpha): no background removal
SLOW = "resolution=320"  # the robot at 320 takes tens of seconds on the tiny model on a CPU
FAST = "resolution=32"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    flags = [
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--body-timeout",
        str(BODY_TIMEOUT),
        "--body-min-rate",
        str(BODY_MIN_RATE),
        "--send-timeout",
        str(SEND_TIMEOUT),
        "--keep-alive-timeout",
        str(KEEP_ALIVE),
        "--max-connections",
        str(MAX_CONNECTIONS),
    ]
    with live_server(
        tmp_path_factory.mktemp("guarded"), queue_size=1, max_body_bytes=BODY_LIMIT, extra_args=flags
    ) as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    connection = socket.socket()
    if receive_buffer is not None:  # a small window, so the server's answer cannot all sit in our kernel
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.connect(("127.0.0.1", port_of(url)))
    return connection


def request_head(path: str, length: int | None = None, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: image/png"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(connection: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    connection.settimeout(limit_s)
    started, answer = time.monotonic(), b""
    while True:
        try:
            part = connection.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        answer += part
    return answer, time.monotonic() - started


def json_body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def health(url: str) -> dict:
    response = requests.get(url + "/v1/health", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_active(url: str, active: int, limit_s: float) -> float:
    """Seconds until the server's queue holds exactly `active` requests (fails after limit_s)."""
    started = time.monotonic()
    while health(url)["queue"]["active"] != active:
        assert time.monotonic() - started < limit_s, f"the queue never reached {active}: {health(url)}"
        time.sleep(0.02)
    return time.monotonic() - started


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def log_lines(url, request_id: str) -> list[str]:
    return [line for line in url.log_path.read_text().splitlines() if request_id in line]


# ---------------------------------------------------------------------------------------------
# Holding connections


def test_half_sent_request_is_closed_within_the_header_deadline(guarded):
    with connect(guarded) as connection:
        connection.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        answer, waited = read_until_closed(connection, 10)
    assert HEADER_TIMEOUT - 0.2 < waited < HEADER_TIMEOUT + 1.5
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json_body(answer)["error"]["code"] == "header_timeout"


def test_silent_connection_is_closed_within_the_header_deadline(guarded):
    with connect(guarded) as connection:
        answer, waited = read_until_closed(connection, 10)
    assert answer == b"" and HEADER_TIMEOUT - 0.2 < waited < HEADER_TIMEOUT + 1.5


def test_idle_keep_alive_connection_is_closed(guarded):
    with connect(guarded) as connection:
        connection.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer, waited = read_until_closed(connection, 10)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert waited < KEEP_ALIVE + 1.5


def test_connections_over_the_cap_get_a_json_503_and_the_server_recovers(guarded):
    holders = [connect(guarded) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        with connect(guarded) as extra:
            extra.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer, _ = read_until_closed(extra, 10)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 5" in answer.lower()
        assert json_body(answer)["error"]["code"] == "busy"
    finally:
        for holder in holders:
            holder.close()
    time.sleep(0.3)
    assert health(guarded)["status"] == "ready"  # reachable again once they are gone


def test_serve_raises_its_open_file_limit(guarded):
    """The server runs with the hard limit as its soft limit, and says so at start-up."""
    limits = Path(f"/proc/{guarded.pid}/limits").read_text()
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert soft == hard
    assert f"open-file limit {soft}" in guarded.log_path.read_text()


def test_raise_file_limit_lifts_a_low_soft_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        assert raise_file_limit(MAX_CONNECTIONS) == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------------------------
# Filling memory


def test_stalled_uploads_hold_at_most_the_queue_and_are_released(guarded):
    """Twelve clients each send 4 MB of a declared 5 MB body and stall. Only the two queue slots
    may keep a body (the others are answered 503 busy and their bytes thrown away); the body
    deadline then answers 408 and frees the slots and their memory."""
    before = rss_bytes(guarded.pid)
    part = b"\0" * 4_000_000
    clients = []
    for _ in range(MAX_CONNECTIONS - 2):
        connection = connect(guarded)
        connection.sendall(request_head("/v1/generate?" + FAST, 5_000_000) + part)
        clients.append(connection)
    time.sleep(1.0)
    held = rss_bytes(guarded.pid) - before
    assert held < 25_000_000, f"{held / 1e6:.0f} MB held for {len(clients)} stalled uploads"
    statuses = []
    for connection in clients:
        answer, waited = read_until_closed(connection, BODY_TIMEOUT + 5)
        statuses.append(int(answer.split(b" ", 2)[1]))
        connection.close()
    assert sorted(set(statuses)) == [408, 503], statuses
    assert statuses.count(408) <= 2
    wait_for_active(guarded, 0, 5)
    assert rss_bytes(guarded.pid) - before < 25_000_000


def test_a_trickled_body_is_cut_off_by_the_minimum_rate(guarded):
    with connect(guarded) as connection:
        connection.sendall(request_head("/v1/generate?" + FAST, 1_000_000))
        started = time.monotonic()
        answer = b""
        connection.settimeout(0.5)
        while time.monotonic() - started < BODY_TIMEOUT + 5:
            try:
                connection.sendall(b"\0" * 1000)  # 2 kB/s: far under the minimum rate
                part = connection.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json_body(answer)["error"]["code"] == "body_timeout"
    assert time.monotonic() - started < BODY_TIMEOUT + 1.5


def test_an_answer_nobody_reads_is_dropped_and_frees_the_slot(guarded):
    """The robot at 128 is a 7 MB GLB: more than loopback buffers hold for a 4 KB window."""
    request_id = "never-reads-0001"
    with connect(guarded, receive_buffer=4096) as connection:
        connection.sendall(
            request_head("/v1/generate?resolution=128", len(ROBOT), {"X-Request-ID": request_id}) + ROBOT
        )
        wait_for_active(guarded, 1, 10)
        wait_for_active(guarded, 0, 120)  # the job, then SEND_TIMEOUT without a byte read
    lines = log_lines(guarded, request_id)
    assert len(lines) == 1 and " 499 " in lines[0], lines


# ---------------------------------------------------------------------------------------------
# Clients that leave


def test_disconnect_frees_the_slot_and_is_logged_once_as_499(guarded):
    request_id = "abandoned-job-01"
    connection = connect(guarded)
    connection.sendall(request_head("/v1/generate?" + SLOW, len(ROBOT), {"X-Request-ID": request_id}) + ROBOT)
    wait_for_active(guarded, 1, 10)
    time.sleep(1.0)  # the job is under way
    connection.close()
    freed_after = wait_for_active(guarded, 0, 15)
    started = time.monotonic()
    next_one = requests.post(
        guarded + "/v1/generate?" + FAST, data=ROBOT, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert next_one.status_code == 200
    print(f"disconnect to free slot: {freed_after:.2f} s; next request served in {time.monotonic() - started:.2f} s")
    assert freed_after < 10  # a whole job at this resolution takes several times longer
    time.sleep(0.2)
    lines = log_lines(guarded, request_id)
    assert len(lines) == 1 and " 499 " in lines[0], lines
    assert "Traceback" not in guarded.log_path.read_text()


def test_a_queued_request_whose_client_leaves_never_runs(guarded):
    running = connect(guarded)
    running.sendall(request_head("/v1/generate?" + SLOW, len(ROBOT)) + ROBOT)
    wait_for_active(guarded, 1, 10)
    waiting = connect(guarded)
    waiting.sendall(request_head("/v1/generate?" + FAST, len(ROBOT), {"X-Request-ID": "left-the-queue-1"}) + ROBOT)
    wait_for_active(guarded, 2, 10)
    waiting.close()
    wait_for_active(guarded, 1, 5)  # it left the queue while the first job still runs
    running.close()
    wait_for_active(guarded, 0, 15)
    lines = log_lines(guarded, "left-the-queue-1")
    assert len(lines) == 1 and " 499 " in lines[0], lines


def test_hanging_up_mid_upload_is_499_without_traceback(guarded):
    with connect(guarded) as connection:
        connection.sendall(
            request_head("/v1/generate?" + FAST, 2_000_000, {"X-Request-ID": "hung-up-upload-1"}) + b"\0" * 500_000
        )
        time.sleep(0.3)
    wait_for_active(guarded, 0, 5)
    time.sleep(0.2)
    lines = log_lines(guarded, "hung-up-upload-1")
    assert len(lines) == 1 and " 499 " in lines[0], lines
    assert "Traceback" not in guarded.log_path.read_text()


# ---------------------------------------------------------------------------------------------
# Valid requests that used to crash, and the smaller points


@pytest.mark.parametrize("threshold", ["0.001", "1e6", "1e-300", "1e300"])
def test_a_threshold_with_no_surface_is_400_no_foreground(guarded, threshold):
    response = requests.post(
        guarded + f"/v1/generate?{FAST}&threshold={threshold}",
        data=ROBOT,
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "no_foreground"
    assert "threshold" in response.json()["error"]["message"]


def test_client_request_id_is_kept_when_plain_and_replaced_otherwise(guarded):
    kept = requests.get(guarded + "/v1/health", headers={"X-Request-ID": "blender-1234.abc"}, timeout=5)
    assert kept.headers["X-Request-ID"] == "blender-1234.abc"
    replaced = requests.get(guarded + "/v1/health", headers={"X-Request-ID": "bad id\twith spaces"}, timeout=5)
    assert len(replaced.headers["X-Request-ID"]) == 16 and " " not in replaced.headers["X-Request-ID"]


def test_trailing_slash_is_404_without_a_redirect(guarded):
    response = requests.get(guarded + "/v1/health/", headers={"Host": "evil.example"}, allow_redirects=False, timeout=5)
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0, identity", False),
        ("*", True),
        ("*;q=0", False),
        ("br, gzip;q=0.5", True),
        ("identity", False),
    ],
)
def test_gzip_follows_the_accept_encoding_weights(guarded, accept, gzipped):
    response = requests.post(
        guarded + "/v1/generate?" + FAST,
        data=ROBOT,
        timeout=60,
        headers={"Content-Type": "image/png", "Accept-Encoding": accept},
    )
    assert response.status_code == 200
    assert (response.headers.get("Content-Encoding") == "gzip") is gzipped
    if not gzipped:  # the schema page (Starlette's gzip) honours a refusal too
        schema = requests.get(guarded + "/openapi.json", headers={"Accept-Encoding": accept}, timeout=5)
        assert "Content-Encoding" not in schema.headers


def test_two_authorization_headers_are_refused(tmp_path):
    token = "a-token-of-sixteen-chars"
    with live_server(tmp_path, token=token) as url:
        with connect(url) as connection:
            connection.sendall(
                request_head(
                    "/v1/generate?" + FAST,
                    len(ROBOT),
                    {"Authorization": f"Bearer {token}", "authorization": "Bearer something-else"},
                )
                + ROBOT
            )
            answer, _ = read_until_closed(connection, 10)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert "exactly one" in json_body(answer)["error"]["message"]


def test_offline_server_without_a_rembg_model_serves_cut_out_images(tmp_path):
    """No --rembg-model, no u2net.onnx and no network: degraded (200), cut-outs work, the rest 503."""
    offline = {
        "U2NET_HOME": str(tmp_path / "empty"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    with live_server(tmp_path, rembg_model=False, env=offline, timeout=300) as url:
        status = health(url)
        assert status["status"] == "degraded" and status["background_removal"] == "unavailable"
        cut_out = requests.post(
            url + "/v1/generate?" + FAST, data=ROBOT, headers={"Content-Type": "image/png"}, timeout=60
        )
        assert cut_out.status_code == 200 and cut_out.headers["content-type"] == "model/gltf-binary"
        photo = io.BytesIO()
        PIL.Image.new("RGB", (64, 64), (200, 30, 30)).save(photo, format="JPEG")
        refused = requests.post(
            url + "/v1/generate?" + FAST, data=photo.getvalue(), headers={"Content-Type": "image/jpeg"}, timeout=60
        )
        assert refused.status_code == 503 and "Retry-After" not in refused.headers
        error = refused.json()["error"]
        assert error["code"] == "background_removal_unavailable" and "cut out" in error["message"]


def test_the_guarded_server_still_serves_after_everything(guarded):
    threads = [threading.Thread(target=lambda: requests.get(guarded + "/v1/health", timeout=5)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    response = requests.post(
        guarded + "/v1/generate?" + FAST, data=ROBOT, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert response.status_code == 200
    assert health(guarded)["queue"]["active"] == 0
