"""Type-check the add-on against fake-bpy-module (mypy), so API misuse fails CI, not an artist."""

from __future__ import annotations

import subprocess
import sys

from live_server import ROOT
import pytest

pytestmark = pytest.mark.slow  # mypy over the add-on


def test_addon_type_checks():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "mypy.ini"),
            "--no-incremental",
            str(ROOT / "blender_addon"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout
