"""`image-to-3d serve`: run the HTTP API with uvicorn on this machine."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from remote.server.settings import TOKEN_VARIABLE, ServerSettings

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    from remote.cli import add_model_arguments

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API the Blender add-on talks to",
        description="Run the HTTP API (docs/api.md). Without IMAGE_TO_3D_TOKEN set it listens on "
        "127.0.0.1 only; set the token to listen on other addresses.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    add_model_arguments(serve)
    defaults = ServerSettings()
    serve.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    serve.add_argument("--max-pixels", type=int, default=defaults.max_pixels)
    serve.add_argument("--queue-size", type=int, default=defaults.queue_size,
                       help="requests that may wait while one runs; more get 503 busy")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(run=run_serve)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from remote.server.app import create_app

    settings = ServerSettings(
        model=args.model,
        device=args.device,
        rembg_model=str(args.rembg_model) if args.rembg_model else None,
        max_body_bytes=args.max_body_bytes,
        max_pixels=args.max_pixels,
        queue_size=args.queue_size,
        precision="float32" if args.exact else "auto",
    )
    if settings.token is None and not is_loopback(args.host):
        print(
            f"error: refusing to listen on {args.host} without an access token; set {TOKEN_VARIABLE} "
            "or use --host 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    auth = "token required" if settings.token else f"no token ({TOKEN_VARIABLE} unset): loopback only"
    print(f"image-to-3d serving on http://{args.host}:{args.port} ({auth}); model {settings.model}", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0
