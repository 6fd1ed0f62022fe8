"""Soak: hostile and valid clients together against a real `image-to-3d serve` on loopback, for a few
minutes; reports what a service owner needs to know: nothing lost, no server error, memory bounded.

    uv run python benchmarks/soak.py --duration 180              # starts its own server (tiny model, CPU)
    uv run python benchmarks/soak.py --duration 180 --json       # one JSON object

It starts `image-to-3d serve` on 127.0.0.1 (a free port; the tiny test model and a tiny background-
removal model unless --model/--device say otherwise) with the server's default limits, and runs, at
the same time, until --duration seconds or --max-requests requests (whichever comes first):

- valid: a cut-out PNG, a 24 MP JPEG photo and a 12 MP PNG, at --resolution; 200, or 503 busy;
- slow: a valid upload sent at 100 kB/s (over the minimum body rate); 200, or 503 busy;
- stalled: half an upload, then nothing; the server must answer (408 body_timeout, or 503 busy);
- half-header: half a request line, then nothing; the server must close (408 header_timeout);
- abandoned: a whole valid request, then the client hangs up; nothing to answer;
- oversized: a declared 25 MB body, a chunked body past the limit, a 40 MP PNG; 413;
- non-reader: a valid request whose answer is never read; the server must drop it;
- health: GET /v1/health every 0.5 s; 200.

"Lost" counts requests that expected an answer and got none (reset, closed, or no answer within
the client's own 150 s). 5xx counts server errors; 503 busy is counted apart (the queue working as
designed). Peak memory is the server's VmHWM (peak resident set) from /proc; the budget is the
resident set after warm-up plus, per queue slot, twice the body limit and eight bytes per pixel
of the pixel limit (docs/api.md, "Memory").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import requests

from image_to_3d_dev.paths import EXAMPLES, REPO_ROOT as ROOT, TINY_MODEL

ROBOT = (EXAMPLES / "robot.png").read_bytes()
CLIENT_TIMEOUT_S = 150.0
MAX_BODY_BYTES = 20_000_000  # the server's defaults, which this soak runs with
MAX_PIXELS = 16_000_000
QUEUE_SLOTS = 5


def _encode(image: PIL.Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _photo(size: tuple[int, int], fmt: str) -> bytes:
    """A plain background with a coloured block in the middle (background removal finds it)."""
    image = PIL.Image.new("RGB", size, (235, 235, 235))
    w, h = size
    image.paste((200, 60, 40), (w // 3, h // 4, 2 * w // 3, 3 * h // 4))
    return _encode(image, fmt, quality=85) if fmt == "JPEG" else _encode(image, fmt, compress_level=1)


@dataclass
class Tally:
    """Outcomes per client kind, thread-safe."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str, seconds: float | None = None) -> None:
        with self.lock:
            self.outcomes[f"{kind}: {outcome}"] += 1
            if seconds is not None:
                self.latencies.append(seconds)


class Soak:
    def __init__(self, url: str, duration: float, max_requests: int, resolution: int) -> None:
        self.url = url
        self.host, self.port = "127.0.0.1", int(url.rsplit(":", 1)[1])
        self.end = time.monotonic() + duration
        self.max_requests = max_requests
        self.resolution = resolution
        self.tally = Tally()
        self.images = {
            "cut-out png": (ROBOT, "image/png"),
            "24 MP jpeg": (_photo((6000, 4000), "JPEG"), "image/jpeg"),
            "12 MP png": (_photo((4000, 3000), "PNG"), "image/png"),
        }

    # -- plumbing ---------------------------------------------------------------------------------

    def running(self) -> bool:
        with self.tally.lock:
            if time.monotonic() >= self.end or self.tally.sent >= self.max_requests:
                return False
            self.tally.sent += 1
            return True

    def connect(self, receive_buffer: int | None = None) -> socket.socket:
        connection = socket.socket()
        if receive_buffer is not None:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        connection.settimeout(CLIENT_TIMEOUT_S)
        connection.connect((self.host, self.port))
        return connection

    def head(self, length: int | None, content_type: str = "image/png", chunked: bool = False) -> bytes:
        lines = [
            f"POST /v1/generate?resolution={self.resolution} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Content-Type: {content_type}",
        ]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @staticmethod
    def status_of(connection: socket.socket) -> str:
        """The status code of the answer, or why there was none; reads until the server closes or
        the answer's first line is in."""
        answer = b""
        try:
            while b"\r\n" not in answer:
                part = connection.recv(4096)
                if not part:
                    return "closed without answer" if not answer else "truncated"
                answer += part
        except socket.timeout:
            return "no answer"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        return answer.split(b" ", 2)[1].decode()

    # -- the clients ------------------------------------------------------------------------------

    def valid(self, worker: int) -> None:
        names = list(self.images)
        turn = worker
        while self.running():
            name = names[turn % len(names)]
            turn += 1
            body, content_type = self.images[name]
            started = time.monotonic()
            try:
                response = requests.post(
                    self.url + "/v1/generate",
                    params={"resolution": self.resolution},
                    data=body,
                    headers={"Content-Type": content_type},
                    timeout=CLIENT_TIMEOUT_S,
                )
            except requests.RequestException as error:
                self.tally.add("valid", f"lost ({type(error).__name__})")
                continue
            seconds = time.monotonic() - started
            if response.status_code == 200 and response.content[:4] == b"glTF":
                self.tally.add("valid", "200", seconds)
            else:
                self.tally.add("valid", f"{response.status_code} {_code(response)}")
                if response.status_code == 503:
                    time.sleep(float(response.headers.get("Retry-After", "1")) / 5)

    def slow(self, _: int) -> None:
        rate, piece = 100_000, 10_000
        while self.running():
            try:
                with self.connect() as connection:
                    connection.sendall(self.head(len(ROBOT)))
                    for start in range(0, len(ROBOT), piece):
                        connection.sendall(ROBOT[start : start + piece])
                        time.sleep(piece / rate)
                    self.tally.add("slow", self.status_of(connection))
            except OSError as error:
                self.tally.add("slow", f"refused mid-upload ({type(error).__name__})")

    def stalled(self, _: int) -> None:
        while self.running():
            try:
                with self.connect() as connection:
                    connection.sendall(self.head(2_000_000) + b"\0" * 300_000)
                    self.tally.add("stalled", self.status_of(connection))
            except OSError as error:
                self.tally.add("stalled", f"lost ({type(error).__name__})")

    def half_header(self, _: int) -> None:
        while self.running():
            try:
                with self.connect() as connection:
                    connection.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                    self.tally.add("half-header", self.status_of(connection))
            except OSError as error:
                self.tally.add("half-header", f"lost ({type(error).__name__})")

    def abandoned(self, _: int) -> None:
        while self.running():
            try:
                with self.connect() as connection:
                    connection.sendall(self.head(len(ROBOT)) + ROBOT)
                    time.sleep(0.5)
                self.tally.add("abandoned", "hung up")
            except OSError as error:
                self.tally.add("abandoned", f"refused ({type(error).__name__})")
            time.sleep(1.0)

    def oversized(self, worker: int) -> None:
        turn = worker
        huge_png = _encode(PIL.Image.new("1", (8000, 5000)), "PNG")
        while self.running():
            turn += 1
            try:
                with self.connect() as connection:
                    if turn % 3 == 0:  # declared: refused from Content-Length
                        connection.sendall(self.head(25_000_000))
                    elif turn % 3 == 1:  # chunked past the limit
                        connection.sendall(self.head(None, chunked=True))
                        block = b"\0" * 1_000_000
                        for _ in range(22):
                            connection.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
                        connection.sendall(b"0\r\n\r\n")
                    else:  # 40 MP PNG: a few KB on the wire
                        connection.sendall(self.head(len(huge_png)) + huge_png)
                    self.tally.add("oversized", self.status_of(connection))
            except OSError as error:
                self.tally.add("oversized", f"lost ({type(error).__name__})")

    def non_reader(self, _: int) -> None:
        body = self.images["cut-out png"][0]
        while self.running():
            try:
                connection = self.connect(receive_buffer=4096)
                connection.sendall(self.head(len(body)) + body)
                time.sleep(45)  # longer than the send deadline
                connection.close()
                self.tally.add("non-reader", "gave up reading")
            except OSError as error:
                self.tally.add("non-reader", f"refused ({type(error).__name__})")

    def health(self, _: int) -> None:
        while self.running():
            try:
                status = requests.get(self.url + "/v1/health", timeout=10).status_code
                self.tally.add("health", str(status))
            except requests.RequestException as error:
                self.tally.add("health", f"lost ({type(error).__name__})")
            time.sleep(0.5)

    def run(self, mix: dict[str, int]) -> None:
        threads = [
            threading.Thread(target=getattr(self, name.replace("-", "_")), args=(index,), daemon=True)
            for name, count in mix.items()
            for index in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(0.0, self.end - time.monotonic()) + CLIENT_TIMEOUT_S + 60)


def _code(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "not-json"


def _memory(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(workdir: Path, model: str, device: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    from image_to_3d_dev.tiny_u2net import build_tiny_u2net

    onnx = build_tiny_u2net(workdir / "tiny_u2net.onnx")
    port = _free_port()
    log_path = workdir / "server.log"
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
        model,
        "--device",
        device,
        "--rembg-model",
        str(onnx),
        "--log-level",
        "warning",
    ]
    environment = {k: v for k, v in os.environ.items() if k != "IMAGE_TO_3D_TOKEN"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log_path.read_text()}")
        try:
            if requests.get(url + "/v1/health", timeout=5).status_code == 200:
                return process, url, log_path
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or slow to answer while the model loads
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server did not become ready within 300 s")
        time.sleep(0.2)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180, at most 1800)")
    parser.add_argument("--max-requests", type=int, default=5000, help="stop after this many requests (default 5000)")
    parser.add_argument("--resolution", type=int, default=64, help="resolution of the valid requests (default 64)")
    parser.add_argument("--model", default=str(TINY_MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), 1800.0)
    mix = {
        "valid": 4,
        "slow": 1,
        "stalled": 3,
        "half-header": 3,
        "abandoned": 1,
        "oversized": 2,
        "non-reader": 1,
        "health": 1,
    }

    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        process, url, log_path = start_server(Path(folder), args.model, args.device)
        try:
            soak = Soak(url, duration, args.max_requests, args.resolution)
            for body, content_type in soak.images.values():  # one of each first: the job's own working set
                requests.post(
                    url + "/v1/generate",
                    params={"resolution": args.resolution},
                    data=body,
                    headers={"Content-Type": content_type},
                    timeout=CLIENT_TIMEOUT_S,
                )
            warm = _memory(process.pid, "VmHWM")
            started = time.monotonic()
            soak.run(mix)
            wall = time.monotonic() - started
            after = requests.get(url + "/v1/health", timeout=10)
            peak = _memory(process.pid, "VmHWM")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        log = log_path.read_text()

    outcomes = soak.tally.outcomes
    budget = warm + QUEUE_SLOTS * (2 * MAX_BODY_BYTES + 8 * MAX_PIXELS)
    statuses: Counter[int] = Counter()
    for key, count in outcomes.items():
        first = key.split(": ", 1)[1].split(" ")[0]
        if first.isdigit():
            statuses[int(first)] += count
    no_answer = ("lost", "no answer", "closed without answer", "truncated", "reset")
    lost = sum(count for key, count in outcomes.items() if any(word in key for word in no_answer))
    server_errors = sum(count for status, count in statuses.items() if status >= 500 and status != 503)
    latencies = soak.tally.latencies
    report = {
        "wall_s": round(wall, 1),
        "requests": soak.tally.sent,
        "outcomes": dict(sorted(outcomes.items())),
        "answered": sum(statuses.values()),
        "lost": lost,
        "server_errors_5xx_other_than_503": server_errors,
        "busy_503": statuses[503],
        "valid_200": len(latencies),
        "valid_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "valid_p95_s": round(percentile(latencies, 0.95) or 0.0, 3) if latencies else None,
        "rss_after_warm_up_mb": round(warm / 1e6, 1),
        "peak_rss_mb": round(peak / 1e6, 1),
        "budget_mb": round(budget / 1e6, 1),
        "within_budget": peak <= budget,
        "health_after": after.status_code,
        "queue_after": after.json().get("queue"),
        "tracebacks_in_log": log.count("Traceback"),
    }
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if key == "outcomes":
            print("outcomes:")
            for name, count in value.items():
                print(f"  {name:48s} {count}")
        else:
            print(f"{key:34s} {value}")


if __name__ == "__main__":
    main()
