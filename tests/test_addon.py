"""The Blender add-on in real Blender (bpy, headless, one subprocess per run) against the real server.

Each run installs the zip that build_addon.py makes the way Blender does (as an extension, or the
legacy way) into a temporary user folder, enables it, and runs scenarios from
tests/blender_scripts/addon_scenarios.py; the report it writes is judged here.
Not covered headless: the modal timer and Esc key themselves (there is no window); the scenarios
drive the same GenerateJob/advance code the modal operator calls on each tick.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
import trimesh
from PIL import Image

from conftest import BLENDER_PYTHON, EXAMPLES
from glb_reader import read_glb
from live_server import ROOT, free_port, live_server

pytestmark = pytest.mark.slow  # real Blender (bpy) and a live server

TOKEN = "addon-test-token"
SCRIPT = Path(__file__).parent / "blender_scripts" / "addon_scenarios.py"
CURSOR = [1.5, -2.0, 0.5]
CHAIR = EXAMPLES / "chair.png"
OPTIONS = {"resolution": 32, "foreground_ratio": 0.85, "remove_background": "auto"}  # the scenarios' settings


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zip") / "image_to_3d.zip"
    subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("addon_server"), token=TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def chair_vertices(server) -> np.ndarray:
    """The vertices, in glTF axes, of the mesh the server makes from the chair with the scenarios' options."""
    response = requests.post(
        f"{server}/v1/generate",
        params=OPTIONS,
        data=CHAIR.read_bytes(),
        timeout=120,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"},
    )
    response.raise_for_status()
    # read_glb dequantises the compact GLB's positions and applies its node's scale and translation,
    # which the add-on must bake into the mesh (trimesh would return the stored integers)
    return read_glb(response.content).positions.astype(np.float32)


def sorted_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(points.T[::-1])]


def edge_glbs(folder: Path) -> dict[str, str]:
    """GLBs our server never sends: a mesh under a moved parent node, two meshes, a truncated file."""
    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(box.vertices), 1)).astype(np.uint8)
    nested = trimesh.Scene()
    nested.graph.update(
        frame_to="Root",
        frame_from=nested.graph.base_frame,
        matrix=trimesh.transformations.translation_matrix([3, 0, 0]),
    )
    nested.add_geometry(box, node_name="Child", geom_name="box", parent_node_name="Root")
    two = trimesh.Scene([box, box.copy().apply_translation([2, 0, 0])])
    textured = trimesh.creation.box()  # with UVs and an embedded image, as a textured answer has
    textured.visual = trimesh.visual.TextureVisuals(
        uv=np.random.default_rng(0).random((len(textured.vertices), 2)), image=Image.new("RGB", (8, 8), "red")
    )
    two_textured = trimesh.Scene([textured, textured.copy().apply_translation([2, 0, 0])])
    files = {
        "nested": nested.export(file_type="glb"),
        "two_meshes": two.export(file_type="glb"),
        "two_textured": two_textured.export(file_type="glb"),
    }
    files["truncated"] = files["two_meshes"][:200]
    for name, data in files.items():
        (folder / f"{name}.glb").write_bytes(data)
    return {name: str(folder / f"{name}.glb") for name in files}


def run_blender(
    tmp_path: Path, addon_zip: Path, endpoint: str, scenarios: list[str], install: str = "extension"
) -> dict:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is no picture" * 20)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(CHAIR.read_bytes()[:33] + b"\x00" * 400)  # a PNG signature and header, then nothing valid
    large = tmp_path / "large.jpg"  # larger than 2048 px, far under the upload limit
    Image.open(CHAIR).convert("RGB").resize((2500, 2000)).save(large, quality=90)
    config = {
        "zip": str(addon_zip),
        "install": install,
        "endpoint": endpoint,
        "token": TOKEN,
        "down_endpoint": f"http://127.0.0.1:{free_port()}",
        "image": str(CHAIR),
        "garbage": str(garbage),
        "corrupt": str(corrupt),
        "large_file": str(large),
        "workdir": str(tmp_path),
        "scenarios": scenarios,
        "edge_glbs": edge_glbs(tmp_path),
        "output": str(tmp_path / "report.json"),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    # Blender's user folders (preferences, extensions, legacy add-ons) in the test's folder, not $HOME.
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender_user")}
    run = subprocess.run(
        [BLENDER_PYTHON, str(SCRIPT), str(tmp_path / "config.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (tmp_path / "report.json").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, f"Blender exited with {run.returncode}:\n" + run.stderr[-3000:]  # 139: crash on exit
    report = json.loads((tmp_path / "report.json").read_text())
    report["stdout"] = run.stdout  # Blender prints operator reports (INFO too) there in background mode
    assert report["enabled"], report
    assert report["installed_at"].startswith(str(tmp_path / "blender_user")), report["installed_at"]
    return report


def bottom_centre(obj: dict) -> list[float]:
    low, high = obj["bbox_min"], obj["bbox_max"]
    return [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]]


def assert_made_one_object(entry: dict, name: str, gltf_vertices: np.ndarray | None = None) -> None:
    assert entry["result"] == ["FINISHED"], entry
    (obj,) = entry["new_objects"]
    assert obj["name"] == name and obj["mesh_name"] == name and obj["material"] == name
    assert obj["type"] == "MESH" and obj["parent"] is None and obj["collections"] == ["Scene Collection"]
    assert obj["location"] == pytest.approx(CURSOR)
    assert obj["rotation_mode"] == "XYZ"
    assert obj["rotation"] == pytest.approx([0, 0, 0]) and obj["scale"] == pytest.approx([1, 1, 1])
    if gltf_vertices is not None:
        # Upright and facing the Front view: glTF (x, y, z) is Blender (x, -z, y); the same vertices,
        # moved so that the origin is the bottom centre.
        expected = gltf_vertices[:, [0, 2, 1]] * np.array([1, -1, 1], dtype=np.float32)
        low, high = expected.min(axis=0), expected.max(axis=0)
        expected = expected - np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]], dtype=np.float32)
        got = np.load(entry["vertices_file"])
        assert got.shape == expected.shape
        np.testing.assert_allclose(sorted_rows(got), sorted_rows(expected), atol=1e-5)
    assert bottom_centre(obj) == pytest.approx(CURSOR, abs=1e-5)  # it stands on the cursor
    assert obj["custom"]["request_id"] and obj["custom"]["settings"]["resolution"] == 32
    assert obj["faces"] > 0 and obj["smooth"]
    assert obj["selected"] and obj["active"] and obj["selected_count"] == 1
    assert obj["attribute"] is not None and obj["colour_spread"] > 0.05
    assert ["ShaderNodeVertexColor", "Base Color"] in obj["links"]
    assert obj["vertex_color_node"] == [obj["attribute"][0]]
    assert obj["materials"] == 1
    before, after = entry["before"], entry["after"]
    grown = {kind: after[kind] - before[kind] for kind in before}
    assert grown == {
        "objects": 1,
        "meshes": 1,
        "materials": 1,
        "images": 0,
        "collections": 0,
        "node_groups": 0,
        "textures": 0,
    }
    # One undo step (the one Blender pushed for the operator) removes exactly what it made; redo brings it back.
    assert name not in entry["after_undo"]["objects"]
    assert entry["after_undo"]["counts"] == before
    assert entry["after_redo"] == [name]


def assert_unchanged(entry: dict, *messages: str) -> None:
    assert entry["result"] == ["CANCELLED"], entry
    for message in messages:
        assert message in (entry["error"] or ""), entry["error"]
    assert entry["after"] == entry["before"] and entry["new_objects"] == []
    assert entry["selection_after"] == entry["selection_before"]


def test_zip_installs_both_ways_in_one_folder(addon_zip):
    archive = zipfile.ZipFile(addon_zip)
    names = archive.namelist()
    assert all(name.startswith("image_to_3d/") for name in names)
    manifest = tomllib.loads(archive.read("image_to_3d/blender_manifest.toml").decode())
    assert manifest["id"] == "image_to_3d" and manifest["schema_version"] == "1.0.0"
    assert manifest["blender_version_min"] == "4.2.0" and manifest["permissions"]["network"]
    init = ast.parse(archive.read("image_to_3d/__init__.py"))
    bl_info = next(
        ast.literal_eval(node.value)
        for node in init.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "bl_info"
    )
    assert bl_info["blender"] == (4, 2, 0) and bl_info["name"] == manifest["name"]
    expected = {f"image_to_3d/{p.name}" for p in (ROOT / "blender_addon").iterdir() if p.suffix in (".py", ".toml")}
    assert set(names) == expected
    again = addon_zip.with_name("again.zip")
    subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(again)], check=True, capture_output=True)
    assert again.read_bytes() == addon_zip.read_bytes()  # deterministic


def test_blender_validates_the_extension(addon_zip):
    """Blender's own extension checker (what extensions.blender.org runs) accepts the zip."""
    where = subprocess.run(
        [
            BLENDER_PYTHON,
            "-c",
            "import importlib.util; print(importlib.util.find_spec('bpy').submodule_search_locations[0])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (checker,) = Path(where).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")
    run = subprocess.run([BLENDER_PYTHON, str(checker), "validate", str(addon_zip)], capture_output=True, text=True)
    assert run.returncode == 0 and "Success" in run.stdout, run.stdout + run.stderr


def test_extension_install_generates_and_fails_cleanly(tmp_path, addon_zip, server, chair_vertices):
    report = run_blender(
        tmp_path,
        addon_zip,
        server,
        [
            "reference",
            "invoke_background",
            "packed",
            "generated",
            "generated_float",
            "file_path",
            "offline_loopback",
            "no_image",
            "missing_file",
            "garbage_file",
            "corrupt_png",
            "offline_remote",
            "wrong_token",
            "missing_token",
            "server_down",
            "test_connection",
            "worker",
            "worker_cancel",
            "token_not_in_blend",
            "importer_edge_cases",
            "render_cycles",
        ],
    )
    assert report["in_add_menu"]
    scenarios = report["scenarios"]
    assert_made_one_object(scenarios["reference"], "chair", chair_vertices)
    assert scenarios["reference"]["panel_image"] == "chair.png"  # Generate again needs no reselecting
    assert scenarios["generated"]["panel_image"] == "Painted"  # a chosen panel image stays
    assert scenarios["no_image"]["panel_image"] is None  # a failure changes nothing
    assert_made_one_object(scenarios["invoke_background"], "chair", chair_vertices)
    assert_made_one_object(scenarios["packed"], "chair", chair_vertices)
    assert_made_one_object(scenarios["file_path"], "chair", chair_vertices)
    assert_made_one_object(scenarios["offline_loopback"], "chair", chair_vertices)  # loopback works offline
    assert_made_one_object(scenarios["generated"], "Painted")
    assert_made_one_object(scenarios["generated_float"], "PaintedHDR")

    assert_unchanged(scenarios["no_image"], "No image selected", "Add > Image > Reference")
    assert_unchanged(scenarios["missing_file"], "missing file", "relink")
    assert_unchanged(scenarios["garbage_file"], "not a picture Blender can read", "PNG, JPEG or WebP")
    assert_unchanged(scenarios["corrupt_png"], "The server said:")  # the server's 400 text
    assert report["online_access_when_off"] is False
    assert_unchanged(scenarios["offline_remote"], "Allow Online Access")
    assert_unchanged(scenarios["wrong_token"], "refused the access token", "Preferences > Add-ons")
    assert_unchanged(scenarios["missing_token"], "needs an access token")
    assert_unchanged(scenarios["server_down"], "Cannot reach the image-to-3d server", "image-to-3d serve")

    connection = scenarios["test_connection"]
    assert connection["up"] == {"result": ["FINISHED"], "error": None}
    assert "Info: Connected: ready (" in report["stdout"] and "token accepted" in report["stdout"]
    assert "refused the access token" in connection["wrong_token"]["error"]
    assert "Cannot reach" in connection["down"]["error"]
    assert "Allow Online Access" in connection["offline"]["error"]

    worker = scenarios["worker"]
    assert worker["result"] == ["FINISHED"] and worker["level"] == "INFO" and "Created 'chair'" in worker["message"]
    assert "from reference 'RefWorker' (chair.png" in worker["message"]  # the chosen reference is named
    assert worker["reported"] == ["uploading", "generating", "downloading"], worker  # the worker's own reports
    assert worker["stages"][-1] == "importing"  # the UI shows it while the main thread imports
    assert worker["ticks"] > 2 and len(worker["new_objects"]) == 1
    cancelled = scenarios["worker_cancel"]
    assert cancelled["result"] == ["CANCELLED"] and "nothing was imported" in cancelled["message"]
    assert cancelled["stages"][-1] == "generating" and "Cancelled" in cancelled["worker_error"]
    assert cancelled["result"] == ["CANCELLED"]
    assert cancelled["after"] == cancelled["before"] and cancelled["new_objects"] == []

    edge = scenarios["importer_edge_cases"]
    nested = edge["nested"]  # the parent empty the importer makes is gone; the mesh keeps its colours
    assert nested["error"] is None and nested["new_names"] == ["Edge"], nested
    assert nested["made"]["parent"] is None and nested["made"]["location"] == pytest.approx(CURSOR)
    assert bottom_centre(nested["made"]) == pytest.approx(CURSOR, abs=1e-5)
    assert nested["made"]["selected_count"] == 1 and ["ShaderNodeVertexColor", "Base Color"] in nested["made"]["links"]
    assert {k: nested["after"][k] - nested["before"][k] for k in ("objects", "meshes", "materials", "collections")} == {
        "objects": 1,
        "meshes": 1,
        "materials": 1,
        "collections": 0,
    }
    for label, message in (
        ("two_meshes", "Expected one mesh"),
        ("two_textured", "Expected one mesh"),
        ("truncated", ""),
    ):
        failed = edge[label]  # nothing of a failed import stays, and the selection is as it was
        assert failed["made"] is None and message in failed["error"], failed
        assert failed["after"] == failed["before"] and failed["new_names"] == []
        assert (
            failed["selection_after"]
            == failed["selection_before"]
            == {"selected": ["RefEdge"], "active": "RefEdge", "mode": "OBJECT"}
        )

    # Cycles renders the colour attribute: paint it red, the render is red; green, green.
    red, green = (scenarios["render_cycles"][key] for key in ("(1, 0, 0, 1)", "(0, 1, 0, 1)"))
    assert red[0] > 2 * max(red[1], red[2]) and green[1] > 2 * max(green[0], green[2]), scenarios["render_cycles"]
    assert red[0] > green[0] + 0.1 and green[1] > red[1] + 0.1

    blend = scenarios["token_not_in_blend"]
    assert blend["token_set"] and blend["settings_in_blend"]
    assert not blend["token_in_blend"] and not blend["endpoint_in_blend"]


def test_material_preview_engine_shows_the_colours(tmp_path, addon_zip, server):
    """EEVEE (what Material Preview draws with) shows the colour attribute too. Without a GPU it
    renders through software OpenGL (EGL), slowly; a machine with neither cannot run this check."""
    (result,) = run_blender(tmp_path, addon_zip, server, ["render_eevee"])["scenarios"].values()
    if "error" in result:
        pytest.skip(f"EEVEE cannot render on this machine: {result['error']}")
    red = result["(1, 0, 0, 1)"]
    assert red[0] > 2 * max(red[1], red[2]), result


def test_legacy_install(tmp_path, addon_zip, server, chair_vertices):
    report = run_blender(tmp_path, addon_zip, server, ["reference", "wrong_token"], install="legacy")
    assert report["in_add_menu"]
    assert_made_one_object(report["scenarios"]["reference"], "chair", chair_vertices)
    assert_unchanged(report["scenarios"]["wrong_token"], "refused the access token")


def test_inputs_large_movie_sequence_render_result(tmp_path, addon_zip, server):
    report = run_blender(
        tmp_path,
        addon_zip,
        server,
        ["oversized", "large_file", "movie", "sequence", "render_result", "panel_words", "target_faces_clamped"],
    )
    scenarios = report["scenarios"]

    big = scenarios["oversized"]  # 3000x2400 painted: shrunk to 1500x1200 PNG (<= 2048 px) in the worker thread
    assert big["result"] == ["FINISHED"], big
    (started,) = big["encoded_when_started"]
    assert started["sent"] == 0  # the main-thread step that started the job returned before encoding
    assert big["worker_threads"] == ["image-to-3d generate"]
    assert big["sent_sizes"] == [[1500, 1200]] and big["sent_types"] == ["89504e470d0a1a0a"]
    assert big["statuses"][0] == "image 'BigPainting'" and big["stages"][0] in ("preparing the image", "uploading")

    large = scenarios["large_file"]  # a file under 10 MB goes as it is: no pixels copied on the main thread
    assert large["result"] == ["FINISHED"] and large["sent_sizes"] == [[2500, 2000]]
    assert large["sent_types"] == [(tmp_path / "large.jpg").read_bytes()[:8].hex()]

    assert report["movie_image"][1] == "MOVIE" and report["movie_name"] == ["clip"]  # no frame range in names
    assert_unchanged(scenarios["movie"], "is a movie", "Image > Save As")
    sequence = scenarios["sequence"]  # frames 1 and 3 are no pictures: only frame 2 can succeed
    assert sequence["result"] == ["FINISHED"], sequence
    assert [o["name"] for o in sequence["new_objects"]] == ["clip"]
    assert "frame 2 of the sequence was used" in report["stdout"]
    assert_unchanged(scenarios["render_result"], "render output", "Save As")
    assert_unchanged(scenarios["panel_words"], "Remove background: Never")
    assert "remove_background" not in scenarios["panel_words"]["error"]

    assert report["target_faces_after_typing_5"] == 100
    faces = scenarios["target_faces_clamped"]
    assert faces["result"] == ["FINISHED"] and faces["new_objects"][0]["faces"] <= 150, faces


def test_placement_centre_align_and_height(tmp_path, addon_zip, server):
    scenarios = run_blender(tmp_path, addon_zip, server, ["placement"])["scenarios"]
    (centre,) = scenarios["placement_center"]["new_objects"]
    middle = [(lo + hi) / 2 for lo, hi in zip(centre["bbox_min"], centre["bbox_max"])]
    assert middle == pytest.approx(CURSOR, abs=1e-5) and centre["bbox_min"][2] < CURSOR[2] - 0.1
    (aligned,) = scenarios["placement_aligned"]["new_objects"]
    assert aligned["rotation_mode"] == "XYZ" and aligned["rotation"] == pytest.approx([0, 0, 0.5], abs=1e-6)
    assert aligned["bbox_min"][2] == pytest.approx(CURSOR[2], abs=1e-5)
    (tall,) = scenarios["placement_height"]["new_objects"]
    # 1.8 m with a unit scale of 0.5 (one Blender unit shows as 0.5 m) is 3.6 Blender units.
    assert tall["dimensions"][2] == pytest.approx(3.6, rel=1e-4)
    assert tall["bbox_min"][2] == pytest.approx(CURSOR[2], abs=1e-5)
    assert tall["scale"][0] == pytest.approx(tall["scale"][2]) and tall["scale"][0] != pytest.approx(1.0)
    assert tall["custom"]["settings"]["height_m"] == pytest.approx(1.8)


def test_history_reimports_without_a_server(tmp_path, addon_zip, server):
    (history,) = run_blender(tmp_path, addon_zip, server, ["history"])["scenarios"].values()
    key = history["record"]["key"]
    assert history["records_added"] == 1 and history["list"][0] == key
    assert history["folder"].startswith(str(tmp_path / "blender_user"))
    assert history["files"] == sorted([f"{key}.glb", f"{key}.input.png", f"{key}.json"])
    record = history["record"]
    assert record["name"] == "chair" and record["request_id"] and record["faces"] > 0
    assert record["settings"]["resolution"] == 32 and "reference 'RefHistory'" in record["source"]
    assert history["made_custom"]["request_id"] == record["request_id"]
    assert not history["key_in_blend"]  # the history stays out of the .blend
    assert history["reimport"] == ["FINISHED"]
    assert (
        history["again"]["name"].startswith("chair")
        and history["again"]["custom"]["request_id"] == record["request_id"]
    )
    made, again = (np.load(tmp_path / f"history_{n}.npy") for n in ("made", "again"))
    np.testing.assert_array_equal(made, again)  # the identical mesh, with no server running
    assert not history["after_undo_has_copy"]
    assert key not in history["after_delete"] and history["files_after_delete"] == []


def test_batch_of_references_and_a_folder(tmp_path, addon_zip, server):
    report = run_blender(
        tmp_path, addon_zip, server, ["batch", "batch_one_bad", "batch_status", "batch_cancel", "folder"]
    )
    scenarios = report["scenarios"]
    batch = scenarios["batch"]
    assert batch["result"] == ["FINISHED"] and len(batch["made"]) == 3, batch
    for made, (reference, where) in zip(batch["made"], sorted(batch["references"].items())):
        assert made["collections"] == ["Image to 3D batch"]
        assert made["custom"]["source"].startswith(f"reference '{reference}'")
        # beside its reference: to its right (the Empty shows a 1-unit image), standing at its height
        assert made["bbox_min"][0] == pytest.approx(where[0] + 0.5 + 0.2, abs=1e-4)
        assert made["bbox_min"][2] == pytest.approx(where[2], abs=1e-5)
    names = sorted(m["name"] for m in batch["made"])
    assert [len(left) for left in batch["undo"]] == [2, 1, 0]  # one undo step per result
    assert batch["undo"][0] == names[:2]

    bad = scenarios["batch_one_bad"]  # the second reference's picture is empty: the others go on
    assert bad["result"] == ["FINISHED"] and len(bad["made"]) == 2
    assert [m["custom"]["source"].split(" (")[0] for m in bad["made"]] == [
        "reference 'RefBatch1'",
        "reference 'RefBatch3'",
    ]
    assert "Made 2 of 3" in report["stdout"] and "1 failed: Clear: The server said: No object" in report["stdout"]
    status = scenarios["batch_status"]
    assert status["statuses"] == ["1 of 3 · chair", "2 of 3 · chair", "3 of 3 · chair"], status["statuses"]
    assert status["result"] == ["FINISHED"] and status["message"].startswith("Made 3 of 3")
    cancel = scenarios["batch_cancel"]
    assert cancel["result"] == ["CANCELLED"] and "cancelled, 3 not made" in cancel["message"], cancel["message"]
    assert cancel["after"] == cancel["before"]

    folder = scenarios["folder"]  # a folder of two pictures: in a row from the cursor, in one collection
    assert folder["result"] == ["FINISHED"] and [m["name"] for m in folder["made"]] == ["chair", "robot"]
    chair, robot = folder["made"]
    assert chair["bbox_min"][0] == pytest.approx(CURSOR[0], abs=1e-4)
    assert robot["bbox_min"][0] == pytest.approx(chair["bbox_max"][0] + 0.2, abs=1e-4)
    (collection,) = {m["collections"][0] for m in folder["made"]}  # one collection per batch
    assert collection.startswith("Image to 3D batch")


def test_colour_texture_is_kept_packed_renders_and_reimports(tmp_path, addon_zip, server):
    """Colour: Texture 512. The object's material shows the baked image (Image Texture -> Base Color,
    UV-mapped, no colour attribute), the image is packed into the .blend at 512 x 512 and named after
    the object; one undo step removes it all; Cycles renders the texture; the history's re-import
    (no server) brings the same texture back."""
    report = run_blender(tmp_path, addon_zip, server, ["texture"])
    assert report["sent_texture_size"] == 512
    made, more = report["scenarios"]["texture"], report["scenarios"]["texture_more"]
    assert made["result"] == ["FINISHED"], made
    for obj in (made["new_objects"][0], more["again"]):
        assert obj["name"].startswith("chair") and obj["material"] == obj["name"] and obj["materials"] == 1
        assert ["ShaderNodeTexImage", "Base Color"] in obj["links"]
        assert ["ShaderNodeVertexColor", "Base Color"] not in obj["links"]
        assert obj["uv_layers"] == 1 and obj["colour_attributes"] == 0 and obj["faces"] > 0
        assert obj["images"] == [{"name": obj["name"], "size": [512, 512], "packed": True, "colorspace": "sRGB"}]
    (obj,) = made["new_objects"]
    assert obj["location"] == pytest.approx(CURSOR) and obj["selected"] and obj["active"]
    assert obj["custom"]["settings"]["texture_size"] == 512 and more["record_settings"]["texture_size"] == 512
    grown = {kind: made["after"][kind] - made["before"][kind] for kind in made["before"]}
    assert grown == {
        "objects": 1,
        "meshes": 1,
        "materials": 1,
        "images": 1,
        "collections": 0,
        "node_groups": 0,
        "textures": 0,
    }
    assert made["after_undo"]["counts"] == made["before"]  # one Ctrl+Z removes the image too
    assert more["reimport"] == ["FINISHED"] and more["again"]["custom"]["settings"]["texture_size"] == 512
    assert more["corner_colour_spread"] > 0.05  # the chair's colours, not a flat fill
    assert more["image_bytes_in_blend"]
    red, green = (more["render_cycles"][key] for key in ("(1, 0, 0, 1)", "(0, 1, 0, 1)"))
    assert red[0] > 2 * max(red[1], red[2]) and green[1] > 2 * max(green[0], green[2]), more["render_cycles"]


def test_both_installs_give_one_menu_entry(tmp_path, addon_zip, server):
    report = run_blender(tmp_path, addon_zip, server, ["reference"], install="both")
    assert len(report["menu_entries_both"]) == 1, report["menu_entries_both"]
    assert report["menu_entries_legacy_left"] == ["image_to_3d.operators"]
    assert report["menu_entries_extension_left"] == ["bl_ext.user_default.image_to_3d.operators"]
    assert report["scenarios"]["reference"]["result"] == ["FINISHED"]
