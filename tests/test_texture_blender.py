"""The textured GLB through Blender's own glTF importer (real bpy, a subprocess as in
test_blender_import.py): an Image Texture node feeds the Principled BSDF's Base Color, the image is
packed in the .blend at the asked size, and the (lossless PNG) texture read at each corner's UV shows the analytic
scene's red nose side and blue rest where the field puts them."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from image_to_3d_dev.analytic_field import BLUE, RED, AnalyticField
from conftest import BLENDER_PYTHON
from remote.extraction import extract_mesh
from remote.glb import textured_mesh_to_glb
from remote.texture import bake_texture

pytestmark = pytest.mark.slow  # real Blender (bpy)

SIZE = 512

IMPORT_AND_DESCRIBE = textwrap.dedent(
    """
    import json, sys
    import bpy
    import numpy as np

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=sys.argv[1])
    (obj,) = [o for o in bpy.data.objects if o.type == "MESH"]
    mesh = obj.data
    matrix = np.array(obj.matrix_world)
    points = np.array([v.co for v in mesh.vertices]) @ matrix[:3, :3].T + matrix[:3, 3]
    loops = np.array([loop.vertex_index for loop in mesh.loops])
    uv_layer = mesh.uv_layers.active
    uv = np.array([d.uv[:] for d in uv_layer.data])
    material = mesh.materials[0]
    tree = material.node_tree
    images = [n.image for n in tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
    image = images[0]
    width, height = image.size
    pixels = np.array(image.pixels[:]).reshape(height, width, image.channels)  # bottom row first
    # Blender's UVs have v up (glTF's v flipped): texel row from the bottom = v * height.
    columns = np.clip((uv[:, 0] * width).astype(int), 0, width - 1)
    rows = np.clip((uv[:, 1] * height).astype(int), 0, height - 1)
    print("RESULT" + json.dumps({
        "uv_layers": len(mesh.uv_layers),
        "colour_attributes": len(mesh.color_attributes),
        "links": sorted(
            [l.from_node.bl_idname, l.from_socket.name, l.to_node.bl_idname, l.to_socket.name] for l in tree.links
        ),
        "images": len(images),
        "image": {"size": [width, height], "packed": image.packed_file is not None,
                  "colorspace": image.colorspace_settings.name},
        "corner_positions": points[loops].tolist(),
        "corner_colours": pixels[rows, columns, :3].tolist(),
    }))
    """
)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict:
    field = AnalyticField()
    mesh = extract_mesh(field, resolution=64)
    path: Path = tmp_path_factory.mktemp("glb") / "textured.glb"
    path.write_bytes(textured_mesh_to_glb(bake_texture(mesh, field, size=SIZE, image_format="png")))
    run = subprocess.run(
        [BLENDER_PYTHON, "-c", IMPORT_AND_DESCRIBE, str(path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(lines[0][len("RESULT") :])


def test_an_image_texture_node_feeds_base_color(imported):
    assert ["ShaderNodeTexImage", "Color", "ShaderNodeBsdfPrincipled", "Base Color"] in imported["links"]
    assert imported["images"] == 1 and imported["uv_layers"] == 1
    assert imported["colour_attributes"] == 0  # no COLOR_0: the texture is the colour


def test_the_image_is_packed_at_the_asked_size_as_srgb(imported):
    assert imported["image"] == {"size": [SIZE, SIZE], "packed": True, "colorspace": "sRGB"}


def test_the_texture_shows_the_field_at_each_corner(imported):
    positions = np.array(imported["corner_positions"])
    colours = np.array(imported["corner_colours"])
    # Blender -Y is model +X (glTF +Z): the red nose side is where -y > 0.2.
    side = -positions[:, 1]
    away = np.abs(side - 0.2) > 0.02
    expected = np.where((side > 0.2)[:, None], RED, BLUE)
    error = np.abs(colours - expected)[away].max(axis=1)
    assert away.mean() > 0.9 and (side > 0.2).any() and (side < 0.2).any()
    assert np.mean(error < 2 / 255) > 0.999, np.sort(error)[-10:]
