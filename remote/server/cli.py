"""`image-to-3d serve`: run the HTTP API with uvicorn on this machine.

Flags override the environment variables of `remote.server.settings`; a flag left out leaves the
environment (or the built-in default) in charge. Without a token the server listens on loopback
only: anyone who can reach the port could otherwise use the GPU.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from remote.model_flags import add_model_arguments
from remote.server.settings import MIN_TOKEN_LENGTH, TOKEN_VARIABLE, ServerSettings, SettingsError, running_on_modal

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
LOG_LEVELS = ("debug", "info", "warning", "error")


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve` on the `image-to-3d` command's subparsers."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API the Blender add-on talks to",
        description=f"Run the HTTP API (docs/api.md). Without {TOKEN_VARIABLE} set it listens on "
        f"127.0.0.1 only; set the token (at least {MIN_TOKEN_LENGTH} characters) to listen on other "
        "addresses. Flags override the IMAGE_TO_3D_* environment variables.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    add_model_arguments(serve)
    serve.add_argument("--max-body-bytes", type=int, help="largest request body (default 20000000)")
    serve.add_argument(
        "--max-pixels",
        type=int,
        help="largest decoded image, width x height (default 16000000; big JPEGs decode reduced)",
    )
    serve.add_argument(
        "--queue-size", type=int, help="requests that may wait while one runs; more get 503 busy (default 4)"
    )
    serve.add_argument(
        "--retry-after",
        type=int,
        dest="retry_after_s",
        help="seconds a 503 answer tells the client to wait (default 5)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        dest="header_timeout_s",
        help="seconds for a request's line and headers to arrive (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        dest="body_timeout_s",
        help="seconds for a whole request body to arrive (default 60)",
    )
    serve.add_argument(
        "--body-min-rate",
        type=int,
        help="bytes per second a body must average after 5 s; 0: no minimum (default 50000)",
    )
    serve.add_argument(
        "--send-timeout",
        type=float,
        dest="send_timeout_s",
        help="seconds a client may read nothing of its answer before it is dropped (default 30)",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        type=float,
        dest="keep_alive_s",
        help="seconds an idle connection stays open between requests (default 5)",
    )
    serve.add_argument(
        "--max-connections", type=int, help="open connections; beyond this a request gets 503 busy (default 256)"
    )
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    # None marks "not given" so the environment applies (add_model_arguments has its own defaults).
    serve.set_defaults(run=run_serve, model=None, device=None, rembg_model=None, precision=None)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """ServerSettings from the environment, with the flags that were given in place."""
    return ServerSettings.with_overrides(
        {
            "model": args.model,
            "device": args.device,
            "rembg_model": str(args.rembg_model) if args.rembg_model else None,
            "precision": args.precision,
            "max_body_bytes": args.max_body_bytes,
            "max_pixels": args.max_pixels,
            "queue_size": args.queue_size,
            "retry_after_s": args.retry_after_s,
            "header_timeout_s": args.header_timeout_s,
            "body_timeout_s": args.body_timeout_s,
            "body_min_rate": args.body_min_rate,
            "send_timeout_s": args.send_timeout_s,
            "keep_alive_s": args.keep_alive_s,
            "max_connections": args.max_connections,
        }
    )


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    """Check the settings, say how the server is reachable, then run uvicorn until interrupted."""
    import uvicorn

    from remote.server.app import create_app
    from remote.server.connections import raise_file_limit, uvicorn_config

    settings = settings_from_args(args)
    exposed = not is_loopback(args.host)
    try:
        if running_on_modal():
            settings.require_token("on Modal")
        elif exposed:
            settings.require_token(f"on {args.host}")
    except SettingsError as error:
        hint = "" if running_on_modal() else " Or listen on loopback only: --host 127.0.0.1."
        print(f"error: {error.message}{hint}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.token:
        auth = f"token required ({TOKEN_VARIABLE} is set)"
        if exposed:
            auth += "; plain HTTP sends it readable on the network, so put TLS in front of this port"
    else:
        auth = f"no token ({TOKEN_VARIABLE} unset): listening on loopback only"
    files = raise_file_limit(settings.max_connections)
    print(
        f"image-to-3d serving on http://{args.host}:{args.port} ({auth}); model {settings.model}; "
        f"up to {settings.max_connections} connections (open-file limit {files})",
        flush=True,
    )
    uvicorn.Server(uvicorn_config(create_app(settings), settings, args.host, args.port, args.log_level)).run()
    return 0
