"""The `image-to-3d` command: `generate` images into GLB files, or `serve` the HTTP API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from remote.errors import ImageTo3DError
from remote.generate_command import add_generate_command
from remote.server.cli import add_serve_command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ImageTo3DError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-to-3d", description="Turn pictures into vertex-coloured 3D meshes (TripoSR)."
    )
    commands = parser.add_subparsers(title="commands")
    add_generate_command(commands)
    add_serve_command(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
