"""GLB export read back by trimesh (glTF axes, winding, linear 16-bit COLOR_0, normals, one material),
and the container checked byte by byte (header and chunk lengths, alignment, accessors, buffer views)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh

from image_to_3d_dev.analytic_field import BLUE, FIN_TOP, NOSE_CENTRE, NOSE_RADIUS, RED, AnalyticField
from remote.extraction import Mesh, extract_mesh, vertex_normals
from remote.glb import linear_color_ushort, mesh_to_glb, srgb_to_linear

NOSE_TIP = NOSE_CENTRE[0] + NOSE_RADIUS


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return extract_mesh(AnalyticField(), resolution=96)


@pytest.fixture(scope="module")
def glb(mesh) -> bytes:
    return mesh_to_glb(mesh)


def _gltf_json(data: bytes) -> dict:
    magic, version, _ = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2
    length, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A
    return json.loads(data[20 : 20 + length])


GLTF_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
GLTF_DTYPES = {5123: np.dtype("<u2"), 5125: np.dtype("<u4"), 5126: np.dtype("<f4")}


def _chunks(data: bytes) -> tuple[dict, bytes]:
    """The JSON and BIN chunks of a GLB, after checking the header, the chunk lengths and padding."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, json_kind = struct.unpack_from("<II", data, 12)
    assert json_kind == 0x4E4F534A and json_length % 4 == 0
    text = data[20 : 20 + json_length]
    assert len(text.rstrip(b" ")) >= json_length - 4  # padded with spaces (trimesh pads a multiple of 4 with 4)
    bin_start = 20 + json_length
    bin_length, bin_kind = struct.unpack_from("<II", data, bin_start)
    assert bin_kind == 0x004E4942 and bin_length % 4 == 0
    assert bin_start + 8 + bin_length == len(data)  # two chunks, nothing after them
    gltf = json.loads(text)
    binary = data[bin_start + 8 :]
    (buffer,) = gltf["buffers"]
    assert "uri" not in buffer and bin_length - 4 < buffer["byteLength"] <= bin_length
    assert binary[buffer["byteLength"] :].strip(b"\0") == b""  # padded with zeros
    return gltf, binary[: buffer["byteLength"]]


def _accessor_data(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    accessor = gltf["accessors"][index]
    view = gltf["bufferViews"][accessor["bufferView"]]
    components = GLTF_COMPONENTS[accessor["type"]]
    dtype = GLTF_DTYPES[accessor["componentType"]]
    assert "byteStride" not in view and accessor.get("byteOffset", 0) == 0  # tightly packed, one view each
    assert view["byteLength"] == accessor["count"] * components * dtype.itemsize
    data = np.frombuffer(binary, dtype, accessor["count"] * components, offset=view["byteOffset"])
    return data.reshape(accessor["count"], components)


def _load(data: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    assert isinstance(scene, trimesh.Scene)
    (loaded,) = scene.geometry.values()
    assert isinstance(loaded, trimesh.Trimesh)
    return loaded


def _reference_srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    srgb = np.asarray(srgb, dtype=np.float64)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def test_srgb_to_linear_matches_the_standard():
    values = np.array([0.0, 0.04045, 0.5, 1.0])
    np.testing.assert_allclose(srgb_to_linear(values), [0.0, 0.04045 / 12.92, 0.2140411, 1.0], rtol=1e-6)
    srgb = np.random.default_rng(0).random(100_000)
    np.testing.assert_allclose(srgb_to_linear(srgb), _reference_srgb_to_linear(srgb), rtol=2e-6, atol=1e-9)
    assert srgb_to_linear(np.array([-0.5, 1.5])).tolist() == [0.0, 1.0]


def test_one_mesh_one_white_material_and_the_three_attributes(glb):
    gltf = _gltf_json(glb)
    assert len(gltf["nodes"]) == 1 and len(gltf["meshes"]) == 1 and len(gltf["meshes"][0]["primitives"]) == 1
    primitive = gltf["meshes"][0]["primitives"][0]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "COLOR_0"}
    colour = gltf["accessors"][primitive["attributes"]["COLOR_0"]]
    assert (colour["componentType"], colour["type"], colour.get("normalized")) == (5123, "VEC4", True)
    normal = gltf["accessors"][primitive["attributes"]["NORMAL"]]
    assert (normal["componentType"], normal["type"], normal.get("normalized", False)) == (5126, "VEC3", False)
    assert len(gltf["materials"]) == 1 and primitive["material"] == 0
    pbr = gltf["materials"][0]["pbrMetallicRoughness"]
    assert pbr.get("baseColorFactor", [1, 1, 1, 1]) == [1, 1, 1, 1]
    assert pbr.get("metallicFactor", 1) == 0 and "baseColorTexture" not in pbr


def test_trimesh_reads_gltf_axes_winding_and_normals(glb, mesh):
    loaded = _load(glb)
    assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
    # model (x, y, z) -> glTF (y, z, x): the nose (+X in the model) faces glTF +Z, the fin is up (+Y).
    np.testing.assert_array_equal(loaded.vertices, mesh.vertices[:, [1, 2, 0]])
    assert loaded.vertices[:, 2].max() == pytest.approx(NOSE_TIP, abs=0.02)
    assert loaded.vertices[:, 1].max() == pytest.approx(FIN_TOP, abs=0.02)
    assert loaded.is_watertight and loaded.volume > 0  # winding kept: faces still point out
    normals = np.asarray(loaded.vertex_normals)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    # On the ball (away from the nose at glTF +Z and the fin above) normals point away from the centre.
    on_ball = (np.abs(np.linalg.norm(loaded.vertices, axis=1) - 0.45) < 0.01) & (loaded.vertices[:, 2] < 0.2)
    on_ball &= loaded.vertices[:, 1] < 0.3
    assert on_ball.sum() > 100
    directions = loaded.vertices[on_ball] / np.linalg.norm(loaded.vertices[on_ball], axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals[on_ball], directions).min() > 0.95


def test_colour_0_holds_the_linear_colours(glb, mesh):
    visual = _load(glb).visual
    assert isinstance(visual, trimesh.visual.texture.TextureVisuals)
    raw = np.asarray(visual.vertex_attributes["color"])  # trimesh hands back the stored uint16
    assert raw.dtype == np.uint16 and raw.shape == (len(mesh.vertices), 4) and (raw[:, 3] == 65535).all()
    expected = _reference_srgb_to_linear(np.where((mesh.vertices[:, 0] > 0.2)[:, None], RED, BLUE))
    np.testing.assert_allclose(raw[:, :3] / 65535.0, expected, atol=0.5 / 65535 + 1e-7)


def test_dark_colours_keep_their_steps():
    srgb = np.repeat(np.arange(0, 16, dtype=np.float32)[:, None] / 255, 3, axis=1)  # the 16 darkest 8-bit greys
    rgba = linear_color_ushort(srgb)
    np.testing.assert_allclose(rgba[:, :3] / 65535.0, _reference_srgb_to_linear(srgb), atol=0.5 / 65535 + 1e-7)
    assert len(np.unique(rgba[:, 0])) == 16  # as bytes, linear values this dark collapse onto 0..1


def test_normals_are_computed_when_the_mesh_has_none(mesh):
    bare = Mesh(vertices=mesh.vertices, faces=mesh.faces, colors=mesh.colors)
    np.testing.assert_allclose(_load(mesh_to_glb(bare)).vertex_normals, mesh.normals[:, [1, 2, 0]], atol=1e-5)


def test_vertex_normals_of_a_cube_corner():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # a tetrahedron, wound outward
    normals = vertex_normals(vertices, faces)
    torch.testing.assert_close(normals[0], -torch.ones(3) / 3**0.5)  # the corner at the origin points back
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(4))


def test_normals_can_be_left_out(mesh):
    gltf = _gltf_json(mesh_to_glb(mesh, normals=False))
    assert set(gltf["meshes"][0]["primitives"][0]["attributes"]) == {"POSITION", "COLOR_0"}


@pytest.mark.parametrize("normals", [True, False])
def test_header_chunks_and_buffer_views_are_well_formed(mesh, normals):
    gltf, binary = _chunks(mesh_to_glb(mesh, normals=normals))
    views = gltf["bufferViews"]
    assert len(views) == len(gltf["accessors"]) == (4 if normals else 3)
    ranges = sorted((view["byteOffset"], view["byteOffset"] + view["byteLength"]) for view in views)
    for (start, end), (next_start, _) in zip(ranges, ranges[1:] + [(len(binary), None)]):
        assert start % 4 == 0 and start < end <= next_start  # aligned, not empty, disjoint, inside the buffer
    assert all(view["buffer"] == 0 for view in views)
    primitive = gltf["meshes"][0]["primitives"][0]
    target = [views[accessor["bufferView"]]["target"] for accessor in gltf["accessors"]]
    assert target[primitive["indices"]] == 34963  # ELEMENT_ARRAY_BUFFER
    assert {target[index] for index in primitive["attributes"].values()} == {34962}  # ARRAY_BUFFER


@pytest.mark.parametrize("normals", [True, False])
def test_accessors_hold_the_mesh(mesh, normals):
    gltf, binary = _chunks(mesh_to_glb(mesh, normals=normals))
    primitive = gltf["meshes"][0]["primitives"][0]
    indices = gltf["accessors"][primitive["indices"]]
    assert (indices["componentType"], indices["type"], indices["count"]) == (5125, "SCALAR", mesh.faces.size)
    np.testing.assert_array_equal(_accessor_data(gltf, binary, primitive["indices"]).reshape(-1, 3), mesh.faces)
    position = gltf["accessors"][primitive["attributes"]["POSITION"]]
    assert (position["componentType"], position["type"], position["count"]) == (5126, "VEC3", len(mesh.vertices))
    positions = _accessor_data(gltf, binary, primitive["attributes"]["POSITION"])
    np.testing.assert_array_equal(positions, mesh.vertices[:, [1, 2, 0]])
    # min and max are required for POSITION and must be those of the stored floats, exactly.
    assert np.float32(position["min"]).tolist() == positions.min(axis=0).tolist() == position["min"]
    assert np.float32(position["max"]).tolist() == positions.max(axis=0).tolist() == position["max"]
    colours = _accessor_data(gltf, binary, primitive["attributes"]["COLOR_0"])
    np.testing.assert_array_equal(colours, linear_color_ushort(mesh.colors))
    if normals:
        np.testing.assert_array_equal(
            _accessor_data(gltf, binary, primitive["attributes"]["NORMAL"]), mesh.normals[:, [1, 2, 0]]
        )


def test_scene_node_mesh_and_material_are_the_ones_trimesh_wrote(glb):
    gltf, _ = _chunks(glb)
    assert gltf["asset"]["version"] == "2.0" and gltf["asset"]["generator"]
    assert gltf["scene"] == 0 and gltf["scenes"] == [{"nodes": [0]}]
    assert gltf["nodes"] == [{"name": "object", "mesh": 0}]
    ((name, primitives),) = [(m["name"], m["primitives"]) for m in gltf["meshes"]]
    assert name == "object" and [(p["mode"], p["material"]) for p in primitives] == [(4, 0)]
    assert gltf["materials"] == [
        {
            "name": "vertex_colors",
            "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0, "roughnessFactor": 1},
            "doubleSided": False,
        }
    ]


def test_a_single_triangle_round_trips():
    triangle = Mesh(
        vertices=np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32),  # faces model +X
        faces=np.array([[0, 1, 2]], dtype=np.int32),
        colors=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32),
    )
    data = mesh_to_glb(triangle)
    gltf, binary = _chunks(data)
    loaded = _load(data)
    np.testing.assert_array_equal(loaded.faces, triangle.faces)
    np.testing.assert_array_equal(loaded.vertices, triangle.vertices[:, [1, 2, 0]])
    np.testing.assert_allclose(loaded.face_normals, [[0, 0, 1]])  # model +X is glTF +Z
    normals = _accessor_data(gltf, binary, gltf["meshes"][0]["primitives"][0]["attributes"]["NORMAL"])
    np.testing.assert_allclose(normals, [[0, 0, 1]] * 3)


def test_meshes_the_writer_cannot_represent_are_refused_clearly(mesh):
    def with_(**changes) -> Mesh:
        fields = {"vertices": mesh.vertices, "faces": mesh.faces, "colors": mesh.colors} | changes
        return Mesh(**fields)

    with pytest.raises(ValueError, match="no faces"):
        mesh_to_glb(with_(faces=np.zeros((0, 3), np.int32)))
    with pytest.raises(ValueError, match="outside"):
        mesh_to_glb(with_(faces=np.where(mesh.faces == 0, len(mesh.vertices), mesh.faces)), normals=False)
    with pytest.raises(ValueError, match="outside"):
        mesh_to_glb(with_(faces=mesh.faces - 1), normals=False)
    with pytest.raises(ValueError, match="non-finite"):
        mesh_to_glb(with_(vertices=np.where(mesh.vertices > 0.4, np.nan, mesh.vertices)), normals=False)
    with pytest.raises(ValueError, match="colours"):
        mesh_to_glb(with_(colors=mesh.colors[:-1]))
