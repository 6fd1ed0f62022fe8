"""The `image-to-3d` command: `generate` images into GLB files, or `serve` the HTTP API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from remote.errors import ImageTo3DError
from remote.options import add_cli_arguments

DEFAULT_MODEL = "stabilityai/TripoSR"


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
    _add_generate_command(commands)
    from remote.server.cli import add_serve_command

    add_serve_command(commands)
    return parser


def _add_generate_command(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate",
        help="turn one or more images into GLB files",
        description="Turn one or more images into GLB files. OUT is a .glb file for one image, "
        "or a folder for several.",
    )
    generate.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or WebP")
    generate.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    add_model_arguments(generate)
    add_cli_arguments(generate)
    generate.set_defaults(run=_run_generate)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `generate` and `serve`: where the model comes from and where it runs."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="DIR_OR_REPO",
        help=f"folder with config.yaml + weights, or a hub repo (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present")
    parser.add_argument(
        "--rembg-model", type=Path, default=None, metavar="ONNX",
        help="background-removal model file (default: rembg's u2net, downloaded once)",
    )
    parser.add_argument(
        "--exact", action="store_true",
        help="float32 weights and the dense grid: upstream's numbers (slower); default is the fast path on CUDA",
    )


def _run_generate(args: argparse.Namespace) -> int:
    from remote.generate_files import generate_files

    return generate_files(args)


if __name__ == "__main__":
    sys.exit(main())
