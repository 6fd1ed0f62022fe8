"""GLB export, read back by trimesh and by Blender's own glTF importer (real bpy, in a subprocess)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import trimesh

from conftest import BLENDER_PYTHON
from analytic_field import BLUE, FIN_TOP, NOSE_CENTRE, NOSE_RADIUS, RED, AnalyticField
from remote.extraction import extract_mesh
from remote.glb import mesh_to_glb, srgb_to_linear

NOSE_TIP = NOSE_CENTRE[0] + NOSE_RADIUS


@pytest.fixture(scope="module")
def mesh():
    return extract_mesh(AnalyticField(), resolution=128)


@pytest.fixture(scope="module")
def glb_path(mesh, tmp_path_factory):
    path = tmp_path_factory.mktemp("glb") / "analytic.glb"
    path.write_bytes(mesh_to_glb(mesh))
    return path


def _gltf_json(data: bytes) -> dict:
    magic, version, _ = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2
    length, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A
    return json.loads(data[20 : 20 + length])


def test_srgb_to_linear_matches_the_standard():
    values = np.array([0.0, 0.04045, 0.5, 1.0])
    np.testing.assert_allclose(srgb_to_linear(values), [0.0, 0.04045 / 12.92, 0.2140411, 1.0], rtol=1e-6)


def test_one_mesh_one_material_with_colour_attribute(glb_path):
    gltf = _gltf_json(glb_path.read_bytes())
    assert len(gltf["meshes"]) == 1 and len(gltf["meshes"][0]["primitives"]) == 1
    primitive = gltf["meshes"][0]["primitives"][0]
    assert {"POSITION", "COLOR_0"} <= set(primitive["attributes"])
    assert len(gltf["materials"]) == 1
    pbr = gltf["materials"][0]["pbrMetallicRoughness"]
    assert pbr.get("baseColorFactor", [1, 1, 1, 1]) == [1, 1, 1, 1]


def test_trimesh_reads_gltf_axes_and_linear_colours(glb_path, mesh):
    scene = trimesh.load(glb_path, file_type="glb")
    (loaded,) = scene.geometry.values()
    assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
    # model (x, y, z) -> glTF (y, z, x): the nose (+X in the model) faces glTF +Z, the fin is up (+Y).
    assert loaded.vertices[:, 2].max() == pytest.approx(NOSE_TIP, abs=0.02)
    assert loaded.vertices[:, 1].max() == pytest.approx(FIN_TOP, abs=0.02)
    assert loaded.is_watertight and loaded.volume > 0  # winding kept: normals still point out
    colours = np.asarray(loaded.visual.vertex_attributes["color"])[:, :3] / 255.0
    expected = srgb_to_linear(np.where((mesh.vertices[:, 0] > 0.2)[:, None], RED, BLUE))
    np.testing.assert_allclose(colours, expected, atol=0.5 / 255 + 1e-9)


BLENDER_IMPORT = textwrap.dedent(
    """
    import json, sys
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=sys.argv[1])
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    obj = meshes[0]
    world = [obj.matrix_world @ v.co for v in obj.data.vertices]
    attrs = obj.data.color_attributes
    colour = attrs[0]
    values = [list(d.color)[:3] for d in colour.data]
    material = obj.active_material
    nodes = [n.bl_idname for n in material.node_tree.nodes] if material and material.use_nodes else []
    print("RESULT" + json.dumps({
        "objects": len(bpy.data.objects), "meshes": len(meshes),
        "min": [min(v[i] for v in world) for i in range(3)],
        "max": [max(v[i] for v in world) for i in range(3)],
        "attribute": [colour.name, colour.domain, colour.data_type],
        "colours": values, "nodes": nodes,
    }))
    """
)


def test_blender_imports_it_facing_front_and_upright(glb_path, mesh):
    run = subprocess.run(
        [BLENDER_PYTHON, "-c", BLENDER_IMPORT, str(glb_path)], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(lines[0][len("RESULT") :])
    assert result["meshes"] == 1 and result["objects"] == 1
    # glTF +Z becomes Blender -Y: the nose, seen in the image, faces the Front view (numpad 1).
    assert result["min"][1] == pytest.approx(-NOSE_TIP, abs=0.02)
    assert result["max"][2] == pytest.approx(FIN_TOP, abs=0.02)  # up stays up
    assert result["attribute"][1] in ("POINT", "CORNER")
    colours = np.array(result["colours"])
    linear = srgb_to_linear(np.array([RED, BLUE]))
    # Blender holds the linear values: each vertex is (within byte rounding) the red or the blue.
    nearest = np.abs(colours[:, None, :] - linear[None]).max(axis=2).min(axis=1)
    assert nearest.max() < 1.0 / 255
    assert np.abs(colours - linear[0]).max(axis=1).min() < 1.0 / 255  # some red (the nose side)
    print("Blender's importer built material nodes:", result["nodes"], "attribute:", result["attribute"])


def test_linear_colour_bytes_are_within_one_step_of_the_exact_conversion():
    from remote.glb import linear_color_bytes

    srgb = np.random.default_rng(0).random((20000, 3)).astype(np.float32)
    exact = np.round(srgb_to_linear(srgb.astype(np.float64)) * 255)
    rgba = linear_color_bytes(srgb)
    assert np.abs(rgba[:, :3] - exact).max() <= 1 and (rgba[:, 3] == 255).all()
    assert np.mean(rgba[:, :3] == exact) > 0.95
