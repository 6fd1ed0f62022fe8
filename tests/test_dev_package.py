"""The doubles shared by tests and benchmarks live in one dev-only package (devtools/image_to_3d_dev):
tests and benchmarks import it, never each other, without sys.path edits, and the product never
ships or imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").rglob("*.py"))
TESTS = sorted((ROOT / "tests").glob("*.py"))
DEV_PACKAGE = ROOT / "devtools" / "image_to_3d_dev"


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_benchmarks_import_no_benchmark_or_test_module_and_edit_no_sys_path() -> None:
    local = {path.stem for path in BENCHMARKS} | {path.stem for path in TESTS}
    for path in BENCHMARKS:
        assert "sys.path" not in path.read_text(encoding="utf-8"), path
        assert not _top_level_imports(path) & local, (path, _top_level_imports(path) & local)


def test_tests_import_no_benchmark_module() -> None:
    benchmarks = {path.stem for path in BENCHMARKS} - {path.stem for path in TESTS}
    for path in TESTS:
        assert not _top_level_imports(path) & benchmarks, (path, _top_level_imports(path) & benchmarks)


def _uses_sys_path(path: Path) -> bool:
    """Whether the code touches `sys.path` (not merely names it in a string)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr == "path":
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                return True
        if isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            return True
    return False


def test_tests_edit_no_sys_path(tmp_path: Path) -> None:
    """pytest puts tests/ on the path (`pythonpath` in pyproject.toml); scripts run from tests/
    say how they are run (PYTHONPATH=tests)."""
    edit = tmp_path / "edit.py"
    edit.write_text("import sys\n\nsys.path.insert(0, 'tests')\n", encoding="utf-8")
    assert _uses_sys_path(edit)
    scripts = sorted((ROOT / "tests").rglob("*.py"))
    assert ROOT / "tests" / "conftest.py" in scripts
    assert [path for path in scripts if _uses_sys_path(path)] == []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["pytest"]["ini_options"]["pythonpath"] == ["tests"]


def test_the_dev_package_imports_no_test_or_benchmark_module() -> None:
    local = {path.stem for path in BENCHMARKS} | {path.stem for path in TESTS}
    for path in DEV_PACKAGE.glob("*.py"):
        assert not _top_level_imports(path) & (local - {path.stem for path in DEV_PACKAGE.glob("*.py")}), path
        assert "sys.path" not in path.read_text(encoding="utf-8"), path


def test_the_product_never_imports_or_ships_the_dev_package() -> None:
    for path in (ROOT / "remote").rglob("*.py"):
        assert "image_to_3d_dev" not in _top_level_imports(path), path
    for path in (ROOT / "blender_addon").rglob("*.py"):
        assert "image_to_3d_dev" not in _top_level_imports(path), path
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["remote"]
    assert "image-to-3d-dev" in project["dependency-groups"]["dev"]
    assert "image-to-3d-dev" not in (ROOT / "remote" / "modal_requirements.txt").read_text(encoding="utf-8")


SCRIPTS_WITHOUT_HELP = {"check_marching_cubes.py"}  # runs its check at once (CUDA)
NOT_INSTALLED = {"xatlas_unwrap.py": "xatlas"}  # run with `uv run --with` (the script says how)


@pytest.mark.slow  # starts every benchmark's interpreter (torch imports)
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: str(path.relative_to(ROOT / "benchmarks")))
def test_every_benchmark_starts(script: Path) -> None:
    """Each script's imports resolve from a plain `uv run python benchmarks/...` (its --help)."""
    if script.name in SCRIPTS_WITHOUT_HELP:
        pytest.skip("no --help")
    if script.name in NOT_INSTALLED:
        pytest.importorskip(NOT_INSTALLED[script.name])
    done = subprocess.run([sys.executable, str(script), "--help"], cwd="/", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
