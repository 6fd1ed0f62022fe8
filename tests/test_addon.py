"""The Blender add-on in real Blender (bpy 5.0.1, headless, one subprocess per run) against the real server.

Each run installs the zip that build_addon.py makes, the way Blender does (as an extension or the
legacy way), enables it, and runs scenarios from tests/blender_scripts/addon_scenarios.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import BLENDER_PYTHON, EXAMPLES
from live_server import ROOT, free_port, live_server

TOKEN = "addon-test-token"
SCRIPT = Path(__file__).parent / "blender_scripts" / "addon_scenarios.py"
CURSOR = [1.5, -2.0, 0.5]


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zip") / "image_to_3d.zip"
    subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("addon_server"), token=TOKEN) as url:
        yield url


def run_blender(tmp_path: Path, addon_zip: Path, endpoint: str, token: str, scenarios: list[str],
                install: str = "extension") -> dict:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is no picture" * 20)
    config = {
        "zip": str(addon_zip), "install": install, "endpoint": endpoint, "token": token,
        "image": str(EXAMPLES / "chair.png"), "garbage": str(garbage), "scenarios": scenarios,
        "output": str(tmp_path / "report.json"),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender_user")}
    run = subprocess.run([BLENDER_PYTHON, str(SCRIPT), str(tmp_path / "config.json")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert (tmp_path / "report.json").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


def assert_made_one_object(entry: dict, name: str) -> None:
    assert entry["result"] == ["FINISHED"], entry
    (obj,) = entry["new_objects"]
    assert obj["name"] == name and obj["type"] == "MESH" and obj["parent"] is None
    assert obj["location"] == pytest.approx(CURSOR)
    # Upright and centred on the cursor: the mesh spans the model's cube around it.
    centre = [(lo + hi) / 2 for lo, hi in zip(obj["bbox_min"], obj["bbox_max"])]
    assert centre == pytest.approx(CURSOR, abs=0.3)
    assert obj["smooth"] and obj["selected"] and obj["active"]
    assert obj["attribute"][0] == "Color" and obj["colour_spread"] > 0.05
    assert ["ShaderNodeVertexColor", "Base Color"] in obj["links"]
    assert obj["materials"] == 1
    before, after = entry["before"], entry["after"]
    assert after["objects"] == before["objects"] + 1 and after["meshes"] == before["meshes"] + 1
    assert after["materials"] == before["materials"] + 1 and after["images"] == before["images"]
    # One undo step removes exactly what the operator made.
    assert entry["undo_step"] is True
    assert name not in entry["after_undo"]["objects"]
    assert entry["after_undo"]["counts"] == before


def assert_unchanged(entry: dict, message: str) -> None:
    assert entry["result"] == ["CANCELLED"], entry
    assert message in (entry["error"] or ""), entry["error"]
    assert entry["after"] == entry["before"] and entry["new_objects"] == []


def test_zip_installs_both_ways_in_one_folder(addon_zip):
    names = zipfile.ZipFile(addon_zip).namelist()
    assert "image_to_3d/blender_manifest.toml" in names and "image_to_3d/__init__.py" in names
    assert all(name.startswith("image_to_3d/") for name in names)
    again = addon_zip.with_name("again.zip")
    subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(again)], check=True, capture_output=True)
    assert again.read_bytes() == addon_zip.read_bytes()  # deterministic


def test_extension_install_generates_and_refuses_cleanly(tmp_path, addon_zip, server):
    report = run_blender(tmp_path, addon_zip, server, TOKEN, [
        "reference", "packed", "generated", "no_image", "garbage_file", "offline_remote", "offline_loopback",
        "bad_option", "test_connection",
    ])
    assert report["enabled"] and report["in_add_menu"]
    scenarios = report["scenarios"]
    assert_made_one_object(scenarios["reference"], "chair")
    assert_made_one_object(scenarios["packed"], "chair")
    assert_made_one_object(scenarios["generated"], "Painted")
    assert_made_one_object(scenarios["offline_loopback"], "chair")  # loopback is allowed offline
    assert_unchanged(scenarios["no_image"], "No image selected")
    assert_unchanged(scenarios["garbage_file"], "not PNG, JPEG or WebP")
    assert_unchanged(scenarios["offline_remote"], "Allow Online Access")
    assert_unchanged(scenarios["bad_option"], "target_faces")
    connection = scenarios["test_connection"]
    assert connection["up"] == {"result": ["FINISHED"], "error": None}
    assert connection["down"]["result"] == ["CANCELLED"] and "Cannot reach" in connection["down"]["error"]


def test_legacy_install_with_a_wrong_token(tmp_path, addon_zip, server):
    report = run_blender(tmp_path, addon_zip, server, "not-the-token", ["reference"], install="legacy")
    assert report["enabled"]
    assert_unchanged(report["scenarios"]["reference"], "refused the access token")


def test_missing_token(tmp_path, addon_zip, server):
    report = run_blender(tmp_path, addon_zip, server, "", ["reference"])
    assert_unchanged(report["scenarios"]["reference"], "needs an access token")


def test_server_not_running(tmp_path, addon_zip):
    report = run_blender(tmp_path, addon_zip, f"http://127.0.0.1:{free_port()}", "", ["reference"])
    assert_unchanged(report["scenarios"]["reference"], "Cannot reach the image-to-3d server")
