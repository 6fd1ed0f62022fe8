"""What sending the GLB answer costs the server's event loop, by chunk size.

The service sends its answer CHUNK_BYTES at a time (remote/server/transfer.py, ChunkedResponse),
each `send` awaited, so an answer nobody reads stays in the process. Every chunk is a trip through
uvicorn and h11 on the event loop, holding the GIL that the job threads also need. This serves one
answer of --bytes random bytes with the real ChunkedResponse under uvicorn (h11, as the product runs
it) in a child process, downloads it --requests times with --concurrency clients, and reports the
server process's CPU time (user + system, from /proc: Linux only) per answer for each chunk size.

    uv run python benchmarks/investigations/answer_chunks.py [--bytes 3670000] [--requests 200]
        [--concurrency 8] [--chunks 65536,262144,1048576]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def serve(port: int, chunk: int, size: int) -> None:
    """The child: one route answering `size` random bytes through ChunkedResponse."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    from remote.server import transfer

    transfer.CHUNK_BYTES = chunk
    body = os.urandom(size)

    async def answer(_request: object) -> transfer.ChunkedResponse:
        return transfer.ChunkedResponse(body, "model/gltf-binary", {}, on_done=lambda: None)

    app = Starlette(routes=[Route("/answer", answer)])
    uvicorn.run(app, host="127.0.0.1", port=port, http="h11", log_level="warning")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(chunk: int, size: int, count: int, concurrency: int) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen([sys.executable, __file__, "--child", f"{port},{chunk},{size}"])
    url = f"http://127.0.0.1:{port}/answer"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=5).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sessions = [requests.Session() for _ in range(concurrency)]

        def fetch(index: int) -> int:
            return len(sessions[index % concurrency].get(url, timeout=60).content)

        for index in range(concurrency):  # connections open before the clock starts
            fetch(index)
        before, start = cpu_seconds(child.pid), time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            sizes = list(pool.map(fetch, range(count)))
        wall, cpu = time.perf_counter() - start, cpu_seconds(child.pid) - before
        assert all(got == size for got in sizes)
        return {
            "chunk_bytes": chunk,
            "server_cpu_ms_per_answer": round(1000 * cpu / count, 3),
            "answers_per_s": round(count / wall, 1),
        }
    finally:
        child.terminate()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=int, default=3_670_000, help="answer size (the fitted scene's GLB: 3.67 MB)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chunks", default="65536,262144,1048576")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        port, chunk, size = map(int, args.child.split(","))
        serve(port, chunk, size)
        return
    rows = [measure(int(c), args.bytes, args.requests, args.concurrency) for c in args.chunks.split(",")]
    print(json.dumps({"bytes": args.bytes, "concurrency": args.concurrency, "rows": rows}))


if __name__ == "__main__":
    main()
