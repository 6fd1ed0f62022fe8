"""Shared test set-up: tests import helpers (analytic_field, tiny_u2net, live_server) from this folder."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

FIXTURES = TESTS / "fixtures"
TINY_MODEL = FIXTURES / "triposr_tiny"
EXAMPLES = FIXTURES / "examples"
