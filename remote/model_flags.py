"""The flags `generate` and `serve` share: where the model comes from, where it runs, and how
precisely (remote/precision.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from remote.precision import DEFAULT_PRECISION, EXACT, PRECISIONS

DEFAULT_MODEL = "stabilityai/TripoSR"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --rembg-model, --precision (and --exact, its alias for float32)."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="DIR_OR_REPO",
        help=f"folder with config.yaml + weights, or a hub repo (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present")
    parser.add_argument(
        "--rembg-model",
        type=Path,
        default=None,
        metavar="ONNX",
        help="background-removal model file (default: rembg's u2net, downloaded once)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="auto: the fast path on CUDA; fast: reduced precision and band extraction; float32: float32 "
        f"weights and the dense grid, upstream's numbers (slower) (default {DEFAULT_PRECISION})",
    )
    parser.add_argument(
        "--exact",
        dest="precision",
        action="store_const",
        const=EXACT,
        help=f"the same as --precision {EXACT} (the older spelling, kept)",
    )
