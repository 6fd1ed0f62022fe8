"""Load test: N requests, C at a time (threads), against a running server; throughput, latency, outcomes.

    uv run image-to-3d serve --port 8000 &
    uv run python benchmarks/load.py --url http://127.0.0.1:8000 --requests 40 --concurrency 8

or, with the server started (and stopped) by the benchmark itself, on a model folder:

    uv run python benchmarks/load.py --serve path/to/model --requests 300 --concurrency 8 --resolution 256

Busy answers (503 busy/loading) are expected when more requests arrive than the queue holds; other
errors, connection failures and timeouts are not. Each request is one of: ok (200 and a GLB),
busy, error (any other HTTP answer, counted by status and code), connection_failed, timeout.
Latency percentiles are over the ok answers; throughput is ok answers per second of wall time.
Next to the latency it reports the time until the answer's headers (the job and its gzip, without
the download) and the server's own stage medians (its Server-Timing header), so a gap between the
pipeline and what a client waits shows where it is. `--encoding identity` asks for no gzip, as the
add-on does from a server on its own machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


def _addon_client() -> Any:
    """The add-on's own client module (its reading of Server-Timing), loaded from its file.

    Importing it as `blender_addon.client` would run the package's __init__, which needs bpy; a GPU
    host running this benchmark has no Blender. client.py itself is plain Python.
    """
    name = "image_to_3d_addon_client"
    spec = importlib.util.spec_from_file_location(name, ROOT / "blender_addon" / "client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


parse_server_timing = _addon_client().parse_server_timing
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


@dataclass
class Outcome:
    kind: str  # ok | busy | error | connection_failed | timeout
    seconds: float
    detail: str = ""  # for errors: "<status> <code>"
    headers_seconds: float | None = None  # until the answer's headers arrived (the job and its gzip done)
    stages: dict[str, float] | None = None  # the server's own stage times (Server-Timing), seconds


def one_request(
    url: str,
    body: bytes,
    content_type: str,
    params: dict[str, Any],
    token: str | None,
    timeout: float,
    encoding: str = "gzip",
) -> Outcome:
    headers = {"Content-Type": content_type, "Accept-Encoding": encoding}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    start = time.perf_counter()
    try:
        response = requests.post(url + "/v1/generate", data=body, params=params, headers=headers, timeout=timeout)
    except requests.Timeout:
        return Outcome("timeout", time.perf_counter() - start)
    except requests.ConnectionError as error:
        return Outcome("connection_failed", time.perf_counter() - start, type(error).__name__)
    elapsed = time.perf_counter() - start
    if response.status_code == 200 and response.content[:4] == b"glTF":
        stages = parse_server_timing(response.headers.get("Server-Timing", ""))
        return Outcome("ok", elapsed, headers_seconds=response.elapsed.total_seconds(), stages=stages)
    code = _error_code(response)
    if response.status_code == 503 and code in ("busy", "loading"):
        return Outcome("busy", elapsed, code)
    return Outcome("error", elapsed, f"{response.status_code} {code}")


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "not-json" if response.status_code != 200 else "not-a-glb"


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `fraction` of values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(len(sorted_values) * fraction))
    return sorted_values[rank - 1]


def summarise(outcomes: list[Outcome], wall: float, requests_sent: int, concurrency: int) -> dict[str, Any]:
    counts = {kind: 0 for kind in ("ok", "busy", "error", "connection_failed", "timeout")}
    errors: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.kind] += 1
        if outcome.kind == "error":
            errors[outcome.detail] = errors.get(outcome.detail, 0) + 1
    ok = sorted(o.seconds for o in outcomes if o.kind == "ok")
    busy = sorted(o.seconds for o in outcomes if o.kind == "busy")
    answered = [o.stages for o in outcomes if o.kind == "ok" and o.stages is not None]
    stage_names = sorted({name for stages in answered for name in stages})
    server = {name: statistics.median(stages.get(name, 0.0) for stages in answered) for name in stage_names}
    if answered:
        server["total"] = statistics.median(sum(stages.values()) for stages in answered)
    headers = sorted(o.headers_seconds for o in outcomes if o.kind == "ok" and o.headers_seconds is not None)
    return {
        "requests": requests_sent,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "throughput_ok_per_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "latency_ok_s": {
            "p50": percentile(ok, 0.5),
            "p95": percentile(ok, 0.95),
            "mean": statistics.fmean(ok) if ok else None,
        },
        "latency_busy_s": {"p50": percentile(busy, 0.5), "p95": percentile(busy, 0.95)},
        # until the headers: the job, its wait for the device and the gzip, without the download
        "headers_ok_s": {"p50": percentile(headers, 0.5), "p95": percentile(headers, 0.95)},
        # the pipeline's own stage medians (Server-Timing); their total excludes the wait for the device
        "server_stages_s": {name: round(value, 5) for name, value in server.items()},
        "outcomes": counts,
        "errors": errors,
        "lost": counts["connection_failed"] + counts["timeout"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default local)")
    parser.add_argument("--image", type=Path, default=ROOT / "tests/fixtures/examples/chair.png")
    parser.add_argument("--requests", type=int, default=40, help="how many requests in all")
    parser.add_argument("--concurrency", type=int, default=8, help="how many in flight at once")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=None, help="density threshold (default: the server's)")
    parser.add_argument("--token", default=None, help="bearer token, if the server needs one")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--serve",
        metavar="MODEL",
        default=None,
        help="start `image-to-3d serve --model MODEL` on a free local port (queue as deep as --concurrency), "
        "wait until it is ready, run --warmup requests, measure, stop it",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first, one at a time (with --serve)")
    parser.add_argument(
        "--encoding",
        default="gzip",
        help="the Accept-Encoding sent (gzip, as the add-on over a network; identity: uncompressed, as on loopback)",
    )
    args = parser.parse_args()
    if args.serve:
        with served(args.serve, args.concurrency) as (url, ready_s):
            args.url = url
            for _ in range(args.warmup):
                requests.post(
                    url + "/v1/generate",
                    data=args.image.read_bytes(),
                    params=_params(args),
                    headers={"Content-Type": CONTENT_TYPES.get(args.image.suffix.lower(), "image/png")},
                    timeout=args.timeout,
                )
            run(args, {"server_ready_s": ready_s})
    else:
        run(args, {})


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"resolution": args.resolution}
    if args.threshold is not None:
        params["threshold"] = args.threshold
    return params


@contextmanager
def served(model: str, concurrency: int, ready_timeout: float = 300.0) -> Iterator[tuple[str, float]]:
    """`image-to-3d serve` in a child process; yields its URL and the seconds until /v1/health said
    ready (the model loaded and warmed up), and stops it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "remote.cli", "serve", "--port", str(port), "--model", model]
    command += ["--queue-size", str(max(0, concurrency - 1)), "--log-level", "warning"]
    server = subprocess.Popen(command)
    url, start = f"http://127.0.0.1:{port}", time.perf_counter()
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            if time.perf_counter() - start > ready_timeout:
                raise SystemExit(f"the server was not ready after {ready_timeout:.0f} s")
            try:
                status = requests.get(url + "/v1/health", timeout=2).json().get("status")
            except (requests.RequestException, ValueError):
                status = None
            if status == "error":
                raise SystemExit("the server's model failed to load (its log is above)")
            if status in ("ready", "degraded"):
                break
            time.sleep(0.25)
        yield url, time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    """Send the requests and print the report."""

    body = args.image.read_bytes()
    content_type = CONTENT_TYPES.get(args.image.suffix.lower(), "image/png")
    params = _params(args)
    url = args.url.rstrip("/")
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        outcomes = list(
            pool.map(
                lambda _: one_request(url, body, content_type, params, args.token, args.timeout, args.encoding),
                range(args.requests),
            )
        )
    report = summarise(outcomes, time.perf_counter() - start, args.requests, args.concurrency) | extra
    if args.json:
        print(json.dumps(report))
        return
    counts, ok_latency = report["outcomes"], report["latency_ok_s"]
    print(
        f"{args.requests} requests, {args.concurrency} at a time, resolution {args.resolution}: "
        f"{report['wall_s']:.1f} s"
    )
    by_code = f" {report['errors']}" if report["errors"] else ""
    print(
        f"ok {counts['ok']}, busy {counts['busy']}, other errors {counts['error']}{by_code}, "
        f"connection failures {counts['connection_failed']}, timeouts {counts['timeout']}"
    )
    if counts["ok"]:
        print(
            f"throughput {report['throughput_ok_per_s']:.2f} GLB/s; latency p50 {ok_latency['p50']:.2f} s, "
            f"p95 {ok_latency['p95']:.2f} s"
        )
        stages = ", ".join(f"{name} {seconds * 1000:.1f}" for name, seconds in report["server_stages_s"].items())
        print(f"until the headers p50 {report['headers_ok_s']['p50']:.3f} s; server stage medians (ms): {stages}")


if __name__ == "__main__":
    main()
