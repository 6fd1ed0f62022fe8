"""Our GLB through Blender's own glTF importer (real bpy, one subprocess per import: torch and bpy stay apart).

Blender's importer turns glTF +Z into Blender -Y and glTF +Y into +Z, so the analytic shape's nose
(model +X, the side the camera saw) must face the Front view (-Y) and its fin must point up (+Z).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from image_to_3d_dev.analytic_field import BLUE, FIN_TOP, NOSE_CENTRE, NOSE_RADIUS, RED, AnalyticField
from conftest import BLENDER_PYTHON
from remote.extraction import extract_mesh
from remote.glb import mesh_to_glb, srgb_to_linear

pytestmark = pytest.mark.slow  # real Blender (bpy)

NOSE_TIP = NOSE_CENTRE[0] + NOSE_RADIUS

IMPORT_AND_DESCRIBE = textwrap.dedent(
    """
    import json, sys
    import bpy
    import numpy as np

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=sys.argv[1])
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    obj = meshes[0]
    mesh = obj.data
    matrix = np.array(obj.matrix_world)
    points = np.array([v.co for v in mesh.vertices]) @ matrix[:3, :3].T + matrix[:3, 3]
    loop_vertices = np.array([loop.vertex_index for loop in mesh.loops])
    colour = mesh.color_attributes[mesh.color_attributes.render_color_index]
    linear = np.array([d.color[:] for d in colour.data])
    srgb = np.array([d.color_srgb[:] for d in colour.data])
    if colour.domain == "CORNER":
        positions = points[loop_vertices]
    else:
        positions = points

    # Winding after import: on the ball, polygon normals point away from the centre.
    centres = np.array([p.center for p in mesh.polygons])
    normals = np.array([p.normal for p in mesh.polygons])
    on_ball = (np.abs(np.linalg.norm(centres, axis=1) - 0.45) < 0.01) & (centres[:, 1] > -0.2) & (centres[:, 2] < 0.3)
    outward = np.einsum("ij,ij->i", normals[on_ball], centres[on_ball] / np.linalg.norm(centres[on_ball], axis=1)[:, None])
    sharp_attribute = mesh.attributes.get("sharp_face")
    sharp = np.array([d.value for d in sharp_attribute.data]) if sharp_attribute else np.zeros(len(centres), bool)

    material = mesh.materials[0] if len(mesh.materials) else None
    tree = material.node_tree if material else None
    print("RESULT" + json.dumps({
        "blender": bpy.app.version_string,
        "objects": [[o.name, o.type] for o in bpy.data.objects],
        "polygons": len(mesh.polygons), "vertices": len(mesh.vertices),
        "min": points.min(axis=0).tolist(), "max": points.max(axis=0).tolist(),
        "attribute": [colour.name, colour.domain, colour.data_type, len(mesh.color_attributes)],
        "colour_positions": positions.tolist(), "linear": linear.tolist(), "srgb": srgb.tolist(),
        "ball_faces": int(on_ball.sum()), "ball_outward_min": float(outward.min()),
        "sharp_faces": int(sharp.sum()), "ball_sharp_faces": int(sharp[on_ball].sum()),
        "custom_normals": bool(mesh.has_custom_normals),
        "materials": len(mesh.materials),
        "material": None if tree is None else {
            "name": material.name,
            "nodes": sorted(n.bl_idname for n in tree.nodes),
            "links": sorted(
                [l.from_node.bl_idname, l.from_socket.name, l.to_node.bl_idname, l.to_socket.name]
                for l in tree.links
            ),
            "vertex_colour_layer": [n.layer_name for n in tree.nodes if n.bl_idname == "ShaderNodeVertexColor"],
        },
    }))
    """
)


@pytest.fixture(scope="module")
def mesh():
    return extract_mesh(AnalyticField(), resolution=96)  # fine enough for the thin fin


@pytest.fixture(scope="module")
def imported(mesh, tmp_path_factory) -> dict:
    path: Path = tmp_path_factory.mktemp("glb") / "analytic.glb"
    path.write_bytes(mesh_to_glb(mesh))
    run = subprocess.run(
        [BLENDER_PYTHON, "-c", IMPORT_AND_DESCRIBE, str(path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"Blender exited with {run.returncode}:\n" + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(lines[0][len("RESULT") :])
    print(
        f"Blender {result['blender']} importer: material {result['material']}, "
        f"colour attribute {result['attribute']}, sharp faces {result['sharp_faces']}"
    )
    return result


def test_one_mesh_object_with_every_face(imported, mesh):
    assert [kind for _, kind in imported["objects"]] == ["MESH"]
    assert imported["polygons"] == len(mesh.faces) and imported["vertices"] == len(mesh.vertices)


def test_front_faces_minus_y_and_up_is_plus_z(imported):
    # glTF +Z becomes Blender -Y: the nose, seen in the image, faces the Front view (numpad 1).
    assert imported["min"][1] == pytest.approx(-NOSE_TIP, abs=0.02)
    assert imported["max"][1] == pytest.approx(0.45, abs=0.02)
    assert imported["max"][2] == pytest.approx(FIN_TOP, abs=0.03)  # the fin stays up
    assert imported["min"][2] == pytest.approx(-0.45, abs=0.02)


def test_faces_point_out_and_shade_smooth(imported):
    assert imported["ball_faces"] > 100 and imported["ball_outward_min"] > 0.9
    # NORMAL in the file: the importer keeps them as custom normals and shades the curved ball smooth
    # (it marks a face sharp only where its corner normals equal its own, as on the fin's flat sides;
    # a file without NORMAL gets every face sharp, i.e. faceted).
    assert imported["custom_normals"] and imported["ball_sharp_faces"] == 0
    assert imported["sharp_faces"] < imported["polygons"] / 10


def test_colour_attribute_holds_the_linear_colours(imported):
    name, domain, data_type, count = imported["attribute"]
    assert count == 1 and domain in ("POINT", "CORNER")
    positions = np.array(imported["colour_positions"])
    on_nose_side = (-positions[:, 1] > 0.2)[:, None]  # Blender -Y is model +X
    srgb = np.where(on_nose_side, RED, BLUE)
    # Blender keeps BYTE_COLOR as sRGB bytes: one byte step of the original sRGB values, and the
    # linear values it reports match the sRGB decoding (COLOR_0 written unconverted would be ~0.05 off).
    np.testing.assert_allclose(np.array(imported["srgb"])[:, :3], srgb, atol=1 / 255)
    np.testing.assert_allclose(np.array(imported["linear"])[:, :3], srgb_to_linear(srgb), atol=0.005)
    assert on_nose_side.any() and not on_nose_side.all()


def test_material_feeds_the_vertex_colours_to_base_color(imported):
    assert imported["materials"] == 1
    material = imported["material"]
    assert ["ShaderNodeVertexColor", "Color", "ShaderNodeBsdfPrincipled", "Base Color"] in material["links"]
    assert material["vertex_colour_layer"] == [""]  # empty: the render colour attribute, i.e. COLOR_0
    # White base colour factor: no multiply node between the vertex colour and the shader.
    assert "ShaderNodeMix" not in material["nodes"]
