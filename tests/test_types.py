"""Type-check the add-on against fake-bpy-module and the service (remote/) with mypy, so API misuse
fails CI, not an artist or a request."""

from __future__ import annotations

import subprocess
import sys

from live_server import ROOT
import pytest

pytestmark = pytest.mark.slow  # mypy over the add-on and the service


@pytest.mark.parametrize("package", ["blender_addon", "remote"])
def test_the_package_type_checks(package: str) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "mypy.ini"),
            "--no-incremental",
            str(ROOT / package),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout
