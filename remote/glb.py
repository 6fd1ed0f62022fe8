"""Mesh -> GLB bytes that Blender (and any glTF viewer) shows upright, facing front, in the image's colours.

- Axes: TripoSR's model frame has X toward the camera, Y to the image's right, Z up; glTF has +Y up
  and the asset's front at +Z. So `(x, y, z)_gltf = (y, z, x)_model`, a cyclic permutation (a
  rotation), which keeps the faces' winding; normals turn the same way.
- Colours: glTF's COLOR_0 is linear, TripoSR's colours are sRGB-encoded, so they are decoded with the
  sRGB transfer function and stored as normalised 16-bit RGBA. (Linear bytes would band the dark
  tones: every sRGB value below 0.05 lands on linear byte 0 or 1.)
- Normals: written as NORMAL unless asked not to. Without them glTF viewers must shade flat, and
  Blender's importer marks every face sharp, so the welded mesh looks faceted until shaded smooth
  (the add-on does that). They cost 12 bytes a vertex (a fifth of the file), and vertex_normals'
  time when the mesh has none.
- Material: one white, rough, non-metallic PBR material; glTF multiplies its base colour by COLOR_0,
  so the vertex colours are what shows (Blender's importer links a Color Attribute node straight
  into the Principled BSDF's Base Color for a primitive with COLOR_0).
- Textured (textured_mesh_to_glb, a mesh baked by remote/texture/): TEXCOORD_0 instead of COLOR_0,
  the PNG or JPEG embedded in the BIN chunk (a bufferView after the accessors' views), and material
  "texture" whose baseColorTexture is that image (Blender's importer makes an Image Texture node
  feeding Base Color, the image packed in the .blend). The vertex-colour file is unchanged by it.

The GLB is written here (glTF 2.0 binary: a 12-byte header, a JSON chunk, a BIN chunk) rather than
by trimesh's exporter, which spent most of its time on axis-0 min/max over every accessor, the
faces included, and on joining the pieces (docs/performance.md, "Figures behind the code"). Here
each array is written once, column by column (numpy copies rows of 3 slowly), into one BIN buffer,
and the file is one join. Only POSITION carries min/max (the spec asks for them there
alone), taken from the stored floats. Indices are always unsigned int (5125): unsigned short would
only serve meshes under 65536 vertices, smaller than the pipeline's. The content is what trimesh
wrote (scene 0, node and mesh "object", accessors in the same order, material "vertex_colors"),
plus bufferView targets. trimesh stays the reader in the tests, and Blender's importer reads the
file in tests/test_blender_import.py.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
import torch

from remote.extraction import Mesh, vertex_normals

if TYPE_CHECKING:
    from remote.texture.bake import TexturedMesh

MODEL_TO_GLTF_AXES = [1, 2, 0]  # gltf x, y, z taken from model y, z, x
GLTF_UNSIGNED_SHORT, GLTF_UNSIGNED_INT, GLTF_FLOAT = 5123, 5125, 5126
GLTF_ARRAY_BUFFER, GLTF_ELEMENT_ARRAY_BUFFER = 34962, 34963
GLTF_TRIANGLES = 4
COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
COMPONENT_DTYPES: dict[int, np.dtype] = {
    GLTF_UNSIGNED_SHORT: np.dtype("<u2"),
    GLTF_UNSIGNED_INT: np.dtype("<u4"),
    GLTF_FLOAT: np.dtype("<f4"),
}
GLB_MAGIC, GLB_VERSION = 0x46546C67, 2  # b"glTF"
GLB_CHUNK_JSON, GLB_CHUNK_BIN = 0x4E4F534A, 0x004E4942  # b"JSON", b"BIN\0"
GENERATOR = "image-to-3d remote/glb.py"
MATERIAL = {
    "name": "vertex_colors",
    "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0},
    "doubleSided": False,
}
TEXTURE_MATERIAL = {
    "name": "texture",
    "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0},
    "doubleSided": False,
}
GLTF_LINEAR, GLTF_LINEAR_MIPMAP_LINEAR, GLTF_CLAMP_TO_EDGE = 9729, 9987, 33071
TEXTURE_SAMPLER = {
    "magFilter": GLTF_LINEAR,
    "minFilter": GLTF_LINEAR_MIPMAP_LINEAR,
    "wrapS": GLTF_CLAMP_TO_EDGE,
    "wrapT": GLTF_CLAMP_TO_EDGE,
}


def srgb_to_linear(srgb: ArrayLike) -> np.ndarray:
    """The sRGB electro-optical transfer function (IEC 61966-2-1), float32, on values clipped to 0..1.

    The power is exp(2.4 log(x)): numpy 1.26 has SIMD float32 exp and log but a scalar float32 power
    (about 3x slower). Over every float32 in 0.04045..1 it is within 9.5e-7 of the float64 value,
    relative (np.power: 4e-7); below 0.04045 it is the same division as before. Colours already in
    0..1 (the model's are) skip the clip: two reductions cost less than np.clip's copy.
    """
    srgb = np.asarray(srgb, dtype=np.float32)
    if srgb.size and not (srgb.min() >= 0 and srgb.max() <= 1):
        srgb = np.clip(srgb, np.float32(0.0), np.float32(1.0))  # NaN stays NaN, as it did
    linear = srgb + np.float32(0.055)
    linear /= np.float32(1.055)
    np.log(linear, out=linear)
    linear *= np.float32(2.4)
    np.exp(linear, out=linear)
    np.copyto(linear, srgb * np.float32(1 / 12.92), where=srgb <= np.float32(0.04045))
    return linear


def linear_color_ushort(srgb: ArrayLike) -> np.ndarray:
    """(V, 4) uint16 RGBA for a normalised COLOR_0 accessor: linear colour, alpha 1."""
    srgb = np.asarray(srgb)
    rgba = np.empty((len(srgb), 4), dtype=np.uint16)
    _write_linear_color(rgba, srgb)
    return rgba


def _write_linear_color(rgba: np.ndarray, srgb: np.ndarray) -> None:
    """Fills (V, 4) uint16 `rgba` with the linear colour of (V, 3) sRGB `srgb` scaled to 65535, alpha 65535."""
    scaled = srgb_to_linear(srgb).reshape(-1, 3)
    scaled *= np.float32(65535)
    np.rint(scaled, out=scaled)
    for channel in range(3):  # column by column: numpy assigns rows of 3 several times slower
        rgba[:, channel] = scaled[:, channel]
    rgba[:, 3] = 65535


def _write_gltf_axes(out: np.ndarray, model: np.ndarray) -> None:
    """(V, 3) model-space vectors into (V, 3) `out` in glTF axes, column by column."""
    for gltf_axis, model_axis in enumerate(MODEL_TO_GLTF_AXES):
        out[:, gltf_axis] = model[:, model_axis]


def _padded(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


# (name, count, type, componentType, target): one accessor and one bufferView each, in this order.
Layout = list[tuple[str, int, str, int, int]]


def _float_layout(faces: np.ndarray, count: int, attribute: tuple[str, str, int], normals: bool) -> Layout:
    """indices, POSITION, one more attribute, NORMAL if asked: trimesh's order."""
    name, kind, component_type = attribute
    layout = [
        ("indices", 3 * len(faces), "SCALAR", GLTF_UNSIGNED_INT, GLTF_ELEMENT_ARRAY_BUFFER),
        ("POSITION", count, "VEC3", GLTF_FLOAT, GLTF_ARRAY_BUFFER),
        (name, count, kind, component_type, GLTF_ARRAY_BUFFER),
    ]
    if normals:
        layout.append(("NORMAL", count, "VEC3", GLTF_FLOAT, GLTF_ARRAY_BUFFER))
    return layout


def _buffer_views(layout: Layout) -> tuple[list[dict[str, Any]], int]:
    """One view per entry, each starting 4-byte aligned; and where the next one would start."""
    views: list[dict[str, Any]] = []
    offset = 0
    for _, items, kind, component_type, target in layout:
        size = items * COMPONENTS[kind] * COMPONENT_DTYPES[component_type].itemsize
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": size, "target": target})
        offset += size + -size % 4
    return views, offset


def _typed_arrays(binary: np.ndarray, layout: Layout, views: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Writable (count, components) views of `binary`, one per layout entry."""
    return {
        name: np.frombuffer(
            binary, COMPONENT_DTYPES[component_type], items * COMPONENTS[kind], view["byteOffset"]
        ).reshape(items, COMPONENTS[kind])
        for (name, items, kind, component_type, _), view in zip(layout, views)
    }


def _model_normals(mesh: Any, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The mesh's vertex normals, computed when it has none."""
    model_normals = mesh.normals
    if model_normals is None:
        model_normals = vertex_normals(torch.from_numpy(vertices), torch.from_numpy(faces)).numpy()
    if model_normals.shape != vertices.shape:
        raise ValueError(f"normals must be (V, 3) like the vertices, got {model_normals.shape}")
    return model_normals


def _position_accessors(layout: Layout, positions: np.ndarray) -> list[dict[str, Any]]:
    """Accessors for `layout`; POSITION's required bounds from the stored floats (float() of a
    float32 is exact, so is its JSON), a column at a time (see _write_gltf_axes)."""
    low = [float(positions[:, axis].min()) for axis in range(3)]
    high = [float(positions[:, axis].max()) for axis in range(3)]
    if not np.isfinite(low + high).all():
        raise ValueError("the mesh has non-finite vertex coordinates")
    accessors: list[dict[str, Any]] = [
        {"bufferView": index, "componentType": component_type, "count": items, "type": kind}
        for index, (_, items, kind, component_type, _) in enumerate(layout)
    ]
    accessors[1].update(min=low, max=high)
    return accessors


def _gltf(
    layout: Layout,
    accessors: list[dict[str, Any]],
    views: list[dict[str, Any]],
    size: int,
    material: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The JSON of a one-node, one-mesh, one-primitive file."""
    primitive = {
        "attributes": {name: index for index, (name, *_) in enumerate(layout) if name != "indices"},
        "indices": 0,
        "mode": GLTF_TRIANGLES,
        "material": 0,
    }
    return {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "object", "mesh": 0}],
        "meshes": [{"name": "object", "primitives": [primitive]}],
        "materials": [material],
        **extra,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": size}],
    }


def mesh_to_glb(mesh: Mesh, *, normals: bool = True) -> bytes:
    """One mesh, one vertex-colour material, glTF axes, linear 16-bit COLOR_0, vertex normals if `normals`."""
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces)
    colors = np.asarray(mesh.colors)
    _check_faces(vertices, faces)
    if colors.shape != vertices.shape:
        raise ValueError(f"vertices and colours must be (V, 3), got {vertices.shape} and {colors.shape}")
    model_normals = _model_normals(mesh, vertices, faces) if normals else None

    layout = _float_layout(faces, len(vertices), ("COLOR_0", "VEC4", GLTF_UNSIGNED_SHORT), normals)
    views, size = _buffer_views(layout)
    binary = np.zeros(size, dtype=np.uint8)  # (no padding with these types: every length is a multiple of 4)
    arrays = _typed_arrays(binary, layout, views)
    np.copyto(arrays["indices"].reshape(-1, 3), faces, casting="unsafe")  # checked to be in 0..V-1 above
    _write_gltf_axes(arrays["POSITION"], vertices)
    _write_linear_color(arrays["COLOR_0"], colors)
    if model_normals is not None:
        _write_gltf_axes(arrays["NORMAL"], model_normals)

    accessors = _position_accessors(layout, arrays["POSITION"])
    accessors[2]["normalized"] = True
    return glb_container(_gltf(layout, accessors, views, len(binary), MATERIAL), binary)


def glb_container(gltf: dict[str, Any], binary: np.ndarray) -> bytes:
    """The GLB file: header, JSON chunk (space-padded), BIN chunk (`binary`, already 4-byte padded)."""
    text = _padded(json.dumps(gltf, separators=(",", ":"), allow_nan=False).encode(), b" ")
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, GLB_VERSION, 12 + 8 + len(text) + 8 + len(binary)),
            struct.pack("<II", len(text), GLB_CHUNK_JSON),
            text,
            struct.pack("<II", len(binary), GLB_CHUNK_BIN),
            binary.data,
        ]
    )


def textured_mesh_to_glb(mesh: "TexturedMesh", *, normals: bool = False) -> bytes:
    """One mesh with TEXCOORD_0 and one material whose baseColorTexture is the embedded image
    (no COLOR_0); glTF axes as mesh_to_glb; NORMAL if `normals` (computed when the mesh has none).

    The image keeps its sRGB bytes: glTF reads baseColorTexture as sRGB. The sampler asks for
    trilinear mip-mapping and clamps at the edges (the atlas is not a tiling pattern)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces)
    uv = np.asarray(mesh.uv, dtype=np.float32)
    count = len(vertices)
    _check_faces(vertices, faces)
    if uv.shape != (count, 2):
        raise ValueError(f"uv must be (V, 2) like the vertices, got {uv.shape} for {count} vertices")
    if not (np.isfinite(uv).all() and uv.min() >= 0 and uv.max() <= 1):
        raise ValueError("uv must lie in 0..1")
    if not mesh.image or mesh.mime_type not in ("image/png", "image/jpeg"):
        raise ValueError(f"the texture must be PNG or JPEG bytes, got {mesh.mime_type!r}")
    model_normals = _model_normals(mesh, vertices, faces) if normals else None

    layout = _float_layout(faces, count, ("TEXCOORD_0", "VEC2", GLTF_FLOAT), normals)
    views, offset = _buffer_views(layout)
    views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(mesh.image)})  # the image: no target
    binary = np.zeros(offset + len(mesh.image) + -len(mesh.image) % 4, dtype=np.uint8)
    arrays = _typed_arrays(binary, layout, views)
    np.copyto(arrays["indices"].reshape(-1, 3), faces, casting="unsafe")  # checked to be in 0..V-1 above
    _write_gltf_axes(arrays["POSITION"], vertices)
    arrays["TEXCOORD_0"][:] = uv
    if model_normals is not None:
        _write_gltf_axes(arrays["NORMAL"], model_normals)
    binary[offset : offset + len(mesh.image)] = np.frombuffer(mesh.image, dtype=np.uint8)

    gltf = _gltf(
        layout,
        _position_accessors(layout, arrays["POSITION"]),
        views,
        len(binary),
        TEXTURE_MATERIAL,
        textures=[{"sampler": 0, "source": 0}],
        samplers=[TEXTURE_SAMPLER],
        images=[{"name": "texture", "bufferView": len(layout), "mimeType": mesh.mime_type}],
    )
    return glb_container(gltf, binary)


def _check_faces(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Refuse vertices and faces a glTF primitive cannot hold, saying which."""
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise ValueError(f"faces must be (F, 3) integers, got {faces.dtype} {faces.shape}")
    if len(faces) == 0:
        raise ValueError("the mesh has no faces: a glTF primitive needs at least one triangle")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"faces index vertices outside 0..{len(vertices) - 1}")
