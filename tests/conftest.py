"""Shared test set-up: tests import helpers (analytic_field, tiny_u2net, live_server) from this folder."""

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

FIXTURES = TESTS / "fixtures"
TINY_MODEL = FIXTURES / "triposr_tiny"
EXAMPLES = FIXTURES / "examples"

# The Python that runs Blender scenarios (bpy as a module). scripts/test_blender_versions.sh points
# it at venvs holding other Blender releases; by default it is this venv's bpy.
BLENDER_PYTHON = os.environ.get("IMAGE_TO_3D_BLENDER_PYTHON") or sys.executable
