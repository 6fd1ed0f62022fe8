"""Load test: N concurrent requests against a running server; throughput, latency, outcomes.

    uv run image-to-3d serve --port 8000 &
    uv run python benchmarks/load.py --url http://127.0.0.1:8000 --requests 40 --concurrency 8

Busy answers (503) are expected when more requests arrive than the queue holds; crashes (other
5xx) and lost requests (connection errors, timeouts) are not. Only loopback URLs are sensible here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def one_request(url: str, body: bytes, params: dict, token: str | None, timeout: float) -> tuple[str, float]:
    headers = {"Content-Type": "image/png"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    start = time.perf_counter()
    try:
        response = requests.post(url + "/v1/generate", data=body, params=params, headers=headers, timeout=timeout)
    except requests.RequestException:
        return "lost", time.perf_counter() - start
    elapsed = time.perf_counter() - start
    if response.status_code == 200:
        return "ok", elapsed
    if response.status_code == 503:
        return "busy", elapsed
    return f"http_{response.status_code}", elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--image", default=str(ROOT / "tests/fixtures/examples/chair.png"))
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--token", default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    body = Path(args.image).read_bytes()
    params = {"resolution": args.resolution}
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(
            lambda _: one_request(args.url, body, params, args.token, args.timeout), range(args.requests)
        ))
    wall = time.perf_counter() - start
    outcomes: dict[str, int] = {}
    for outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    ok = sorted(seconds for outcome, seconds in results if outcome == "ok")
    report = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "wall_s": wall,
        "throughput_ok_per_s": len(ok) / wall,
        "p50_s": statistics.median(ok) if ok else None,
        "p95_s": ok[min(len(ok) - 1, int(0.95 * len(ok)))] if ok else None,
        "outcomes": outcomes,
    }
    print(f"{args.requests} requests, {args.concurrency} at a time, {wall:.1f} s")
    print(f"ok {outcomes.get('ok', 0)}, busy {outcomes.get('busy', 0)}, lost {outcomes.get('lost', 0)}, "
          f"other {sum(v for k, v in outcomes.items() if k.startswith('http_'))}")
    if ok:
        print(f"throughput {report['throughput_ok_per_s']:.2f} GLB/s; latency p50 {report['p50_s']:.2f} s, "
              f"p95 {report['p95_s']:.2f} s")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
