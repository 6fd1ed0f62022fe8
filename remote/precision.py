"""The precision setting, spelled `precision` everywhere: `--precision` (with `--exact` kept as an
alias of `--precision float32`), `IMAGE_TO_3D_PRECISION`, `Pipeline.load(precision=...)`.

- "auto": "fast" on CUDA; on the CPU, where reduced precision does not pay, float32 weights with the
  band extraction.
- "fast": reduced-precision matrix products, the band extraction and (on CUDA) the CUDA graph.
- "float32": float32 weights and the dense grid: upstream TripoSR's numbers (slower).
"""

from __future__ import annotations

from remote.errors import InvalidOptionError

PRECISIONS = ("auto", "fast", "float32")
DEFAULT_PRECISION = "auto"
EXACT = "float32"  # what the `--exact` alias means


def check_precision(precision: str) -> None:
    """Refuse an unknown precision setting with the choices."""
    if precision not in PRECISIONS:
        raise InvalidOptionError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r}).")
