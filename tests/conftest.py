"""Shared test set-up: tests import their own helpers (live_server, glb_reader, upstream_preprocess)
from this folder (pytest puts it on the path: `pythonpath` in pyproject.toml), and the doubles they
share with the benchmarks from image_to_3d_dev (devtools/)."""

import os
import sys
from pathlib import Path

import pytest

from image_to_3d_dev.paths import EXAMPLES, FIXTURES, TINY_MODEL  # noqa: F401  (tests import them from here)

TESTS = Path(__file__).resolve().parent

# The Python that runs Blender scenarios (bpy as a module). scripts/test_blender_versions.sh points
# it at venvs holding other Blender releases; by default it is this venv's bpy.
BLENDER_PYTHON = os.environ.get("IMAGE_TO_3D_BLENDER_PYTHON") or sys.executable


@pytest.fixture(scope="session")
def upstream_expected():
    """The model inputs upstream's preprocessing gives the stored cut-outs (upstream_preprocess.py)."""
    from upstream_preprocess import stored_expected

    return stored_expected()
