"""Mesh -> GLB bytes that Blender (and any glTF viewer) shows upright, facing front, in the image's colours.

- Axes: TripoSR's model frame has X toward the camera, Y to the image's right, Z up; glTF has +Y up
  and the asset's front at +Z. So `(x, y, z)_gltf = (y, z, x)_model`, a cyclic permutation (a
  rotation), which keeps the faces' winding.
- Colours: glTF's COLOR_0 is linear, TripoSR's colours are sRGB-encoded, so they are decoded with the
  sRGB transfer function. trimesh stores COLOR_0 as normalised unsigned bytes.
- Material: one white, rough, non-metallic PBR material; glTF multiplies it by COLOR_0, so the vertex
  colours are what shows.
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.visual.material import PBRMaterial
from trimesh.visual.texture import TextureVisuals

from remote.extraction import Mesh

MODEL_TO_GLTF_AXES = [1, 2, 0]  # gltf x, y, z taken from model y, z, x


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """The sRGB electro-optical transfer function (IEC 61966-2-1), elementwise on 0..1 values."""
    srgb = np.clip(srgb, 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


LUT_STEPS = 4095
# sRGB value (in 1/4095 steps) -> linear byte: one table look-up per channel instead of a power.
_SRGB_TO_LINEAR_BYTE = np.round(srgb_to_linear(np.linspace(0.0, 1.0, LUT_STEPS + 1)) * 255.0).astype(np.uint8)


def linear_color_bytes(srgb: np.ndarray) -> np.ndarray:
    """RGBA bytes of linear colour for COLOR_0 from sRGB floats (exact to within one byte step)."""
    steps = np.clip(srgb, 0.0, 1.0) * np.float32(LUT_STEPS)
    rgba = np.full((len(srgb), 4), 255, dtype=np.uint8)
    rgba[:, :3] = _SRGB_TO_LINEAR_BYTE[(steps + 0.5).astype(np.int32)]
    return rgba


def mesh_to_glb(mesh: Mesh) -> bytes:
    """One mesh, one vertex-colour material, glTF axes, linear COLOR_0."""
    vertices = mesh.vertices[:, MODEL_TO_GLTF_AXES]
    rgba = linear_color_bytes(mesh.colors)
    material = PBRMaterial(
        name="vertex_colors",
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=False,
    )
    visual = TextureVisuals(material=material)
    visual.vertex_attributes["color"] = rgba
    tri_mesh = trimesh.Trimesh(vertices=vertices, faces=mesh.faces, visual=visual, process=False)
    scene = trimesh.Scene()
    scene.add_geometry(tri_mesh, geom_name="object", node_name="object")
    return scene.export(file_type="glb")
