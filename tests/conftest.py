"""Shared test set-up: tests import their own helpers (live_server, glb_reader, upstream_preprocess)
from this folder, and the doubles they share with the benchmarks from image_to_3d_dev (devtools/)."""

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from image_to_3d_dev.paths import EXAMPLES, FIXTURES, TINY_MODEL  # noqa: E402,F401  (tests import them from here)

# The Python that runs Blender scenarios (bpy as a module). scripts/test_blender_versions.sh points
# it at venvs holding other Blender releases; by default it is this venv's bpy.
BLENDER_PYTHON = os.environ.get("IMAGE_TO_3D_BLENDER_PYTHON") or sys.executable
