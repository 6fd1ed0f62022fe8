"""Mesh -> GLB bytes that Blender (and any glTF viewer) shows upright, facing front, in the image's colours.

- Axes: TripoSR's model frame has X toward the camera, Y to the image's right, Z up; glTF has +Y up
  and the asset's front at +Z. So `(x, y, z)_gltf = (y, z, x)_model`, a cyclic permutation (a
  rotation), which keeps the faces' winding; normals turn the same way.
- Colours: glTF's COLOR_0 is linear, TripoSR's colours are sRGB-encoded, so they are decoded with the
  sRGB transfer function and stored as normalised 16-bit RGBA. (Linear bytes would band the dark
  tones: every sRGB value below 0.05 lands on linear byte 0 or 1.)
- Normals: written as NORMAL unless asked not to. Without them glTF viewers must shade flat, and
  Blender's importer marks every face sharp, so the welded mesh looks faceted until shaded smooth
  (the add-on does that). They cost time (trimesh takes min/max over every attribute; about 50 ms
  for 180k vertices on the H100 host) and 12 bytes a vertex.
- Material: one white, rough, non-metallic PBR material; glTF multiplies its base colour by COLOR_0,
  so the vertex colours are what shows (Blender's importer links a Color Attribute node straight
  into the Principled BSDF's Base Color for a primitive with COLOR_0).

trimesh 5.2 writes COLOR_0 only as bytes, so colours and normals go in as custom vertex attributes
(written as they are) and a hook renames them once trimesh has built the glTF tree. That also
keeps trimesh from re-hashing the mesh to validate cached normals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
import torch
import trimesh
from trimesh.exchange.gltf import export_glb
from trimesh.visual.material import PBRMaterial
from trimesh.visual.texture import TextureVisuals

from remote.extraction import Mesh, vertex_normals

MODEL_TO_GLTF_AXES = [1, 2, 0]  # gltf x, y, z taken from model y, z, x
GLTF_FLOAT, GLTF_UNSIGNED_SHORT = 5126, 5123
# custom attribute trimesh writes -> (glTF attribute, componentType, type, normalized)
RENAMED_ATTRIBUTES = {
    "_linear_color": ("COLOR_0", GLTF_UNSIGNED_SHORT, "VEC4", True),
    "_normal": ("NORMAL", GLTF_FLOAT, "VEC3", False),
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


def linear_color_ushort(srgb: np.ndarray) -> np.ndarray:
    """(V, 4) uint16 RGBA for a normalised COLOR_0 accessor: linear colour, alpha 1."""
    rgba = np.full((len(srgb), 4), 65535, dtype=np.uint16)
    rgba[:, :3] = np.rint(srgb_to_linear(srgb) * np.float32(65535))
    return rgba


def _rename_attributes(tree: dict[str, Any]) -> None:
    """trimesh's tree hook: our custom attributes become the primitive's COLOR_0 and NORMAL."""
    for gltf_mesh in tree["meshes"]:
        for primitive in gltf_mesh["primitives"]:
            for custom, (name, component_type, kind, normalized) in RENAMED_ATTRIBUTES.items():
                if custom not in primitive["attributes"]:
                    continue
                index = primitive["attributes"].pop(custom)
                accessor = tree["accessors"][index]
                if (accessor["componentType"], accessor["type"]) != (component_type, kind):
                    raise ValueError(f"unexpected {name} accessor from trimesh: {accessor}")
                if normalized:
                    accessor["normalized"] = True
                primitive["attributes"][name] = index


def mesh_to_glb(mesh: Mesh, *, normals: bool = True) -> bytes:
    """One mesh, one vertex-colour material, glTF axes, linear 16-bit COLOR_0, vertex normals if `normals`."""
    attributes: dict[str, ArrayLike] = {"_linear_color": linear_color_ushort(mesh.colors)}
    if normals:
        model_normals = mesh.normals
        if model_normals is None:
            model_normals = vertex_normals(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces)).numpy()
        attributes["_normal"] = np.ascontiguousarray(model_normals[:, MODEL_TO_GLTF_AXES], dtype=np.float32)
    material = PBRMaterial(
        name="vertex_colors",
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=False,
    )
    tri_mesh = trimesh.Trimesh(
        vertices=mesh.vertices[:, MODEL_TO_GLTF_AXES],
        faces=mesh.faces,
        visual=TextureVisuals(material=material),
        vertex_attributes=attributes,
        process=False,
    )
    scene = trimesh.Scene()
    scene.add_geometry(tri_mesh, geom_name="object", node_name="object")
    return export_glb(scene, include_normals=False, tree_postprocessor=_rename_attributes)
