"""GLB export read back by trimesh: glTF axes, winding, linear 16-bit COLOR_0, normals, one material."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh

from analytic_field import BLUE, FIN_TOP, NOSE_CENTRE, NOSE_RADIUS, RED, AnalyticField
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
