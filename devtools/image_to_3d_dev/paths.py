"""Where the repository's fixtures are, for tests and benchmarks alike."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # devtools/image_to_3d_dev/paths.py
FIXTURES = REPO_ROOT / "tests" / "fixtures"
EXAMPLES = FIXTURES / "examples"
TINY_MODEL = FIXTURES / "triposr_tiny"
