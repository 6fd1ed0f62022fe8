"""The compact GLB the pipeline sends: KHR_mesh_quantization positions, colours snapped to the sRGB
bytes Blender keeps, packed where the mesh is.

`pack_mesh` turns the mesh's tensors into the GLB's BIN chunk with torch, on the mesh's device (the
GPU in the service): quantising, looking colours up and laying the bytes out there takes a fraction
of a millisecond, and one copy of the finished 16 bytes a vertex and 12 a face comes to the host,
instead of float arrays that numpy then rewrote there (5 ms of host time a request on the H200's
host, more with concurrent requests holding the GIL; docs/performance.md). `packed_to_glb` adds the
JSON chunk on the host, without the device. `compact_mesh_to_glb` does both for a host Mesh; the
bytes are the same wherever the packing ran (IEEE float32 subtraction, multiplication and
rounding, an integer table lookup).

The format:
- POSITION as normalised int16 (KHR_mesh_quantization, listed as required), 8 bytes a vertex (the
  fourth short pads each vertex to 4 bytes, as glTF asks); the node's uniform scale and translation
  map it back: position = translation + scale * q / 32767. With `grid` (resolution, radius: the
  marching-cubes grid over -radius..radius) the integers are the grid index times a power of two
  (256 steps a voxel at resolution 256, 128 at 512), centred on the cube: a marching-cubes vertex
  lies on a grid edge, so two of its three shorts are multiples of the step, which gzip packs a
  fifth tighter than float32 (error under 1/500 voxel). Without it (or for a vertex outside the
  cube) the bounding box is centred and spans -32767..32767.
- COLOR_0 normalised 16-bit linear, snapped to sRGB bytes: Blender's importer stores COLOR_0 as a
  BYTE_COLOR attribute, i.e. sRGB bytes, so snapping the sRGB value to its byte first changes
  nothing Blender shows (under half a byte step against the full 16-bit colour, the same rounding
  Blender does) and leaves at most 256 values per channel, which gzip packs about as tightly as
  8-bit colour. Linear 8-bit COLOR_0 would instead band the dark tones (every sRGB value below
  0.05 on linear byte 0 or 1).
- uint32 indices (the mesh has more than 65,536 vertices).
Blender's importer reads KHR_mesh_quantization (glTF-Blender-IO 5f8d28f5, August 2020; listed in
v4.2.0) and puts the node's scale and translation on the object; the add-on bakes the object's
transform into the mesh when it places it. Sizes against mesh_to_glb: docs/api.md
(`benchmarks/glb_wire.py` measures them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from remote.extraction import Mesh
from remote.glb import (
    GENERATOR,
    GLTF_ARRAY_BUFFER,
    GLTF_ELEMENT_ARRAY_BUFFER,
    GLTF_TRIANGLES,
    GLTF_UNSIGNED_INT,
    GLTF_UNSIGNED_SHORT,
    MATERIAL,
    MODEL_TO_GLTF_AXES,
    glb_container,
    srgb_to_linear,
)

GLTF_SHORT = 5122
KHR_MESH_QUANTIZATION = "KHR_mesh_quantization"
POSITION_STEPS = 32767  # int16 normalised: q / 32767 in -1..1 (-32768 is never written)


@dataclass(frozen=True)
class PackedMesh:
    """The compact GLB's BIN chunk on the host and what its JSON says about it."""

    binary: np.ndarray  # uint8: indices (uint32), then POSITION (int16 x 4), then COLOR_0 (uint16 x 4)
    vertex_count: int
    face_count: int
    translation: tuple[float, float, float]  # the node's, glTF axes
    scale: float  # the node's (uniform)
    position_min: tuple[int, int, int]  # the stored integers (glTF asks for POSITION's bounds)
    position_max: tuple[int, int, int]


def grid_steps(resolution: int) -> int:
    """Quantisation steps a voxel for a grid of `resolution` points a side: the largest power of
    two that keeps the cube's half-side, (resolution - 1) / 2 voxels, within 32767 (0: none)."""
    half = (resolution - 1) / 2
    steps = 1
    while half * steps * 2 <= POSITION_STEPS:
        steps *= 2
    return steps if resolution > 1 and half * steps <= POSITION_STEPS else 0


@functools.cache
def linear_ushort_table() -> np.ndarray:
    """(256,) uint16: the linear value, scaled to 65535, of each sRGB byte (what COLOR_0 stores)."""
    linear = srgb_to_linear(np.arange(256, dtype=np.float32) / np.float32(255))
    return np.rint(linear * np.float32(65535)).astype(np.uint16)


@functools.cache
def _device_table(device: torch.device) -> torch.Tensor:
    """linear_ushort_table's bits as int16 on `device` (torch indexes no uint16 tensor), uploaded once."""
    return torch.from_numpy(linear_ushort_table().view(np.int16)).to(device)


def pack_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    colors: torch.Tensor,
    grid: tuple[int, float] | None = None,
) -> PackedMesh:
    """The BIN chunk of the compact GLB of a mesh (model-space float32 vertices (V, 3), integer
    faces (F, 3), sRGB colours (V, 3) in 0..1, NaN read as black), computed on the tensors' device;
    raises ValueError for what a glTF primitive cannot hold. See the module's docstring for the
    format and `grid`."""
    _check(vertices, faces, colors)
    count = len(vertices)
    # One small copy to the host: the bounding box (model axes) and the index range.
    bounds = torch.cat(
        [vertices.amin(0).double(), vertices.amax(0).double(), faces.min().double()[None], faces.max().double()[None]]
    ).cpu()
    low64 = bounds[:3].numpy()[MODEL_TO_GLTF_AXES]
    high64 = bounds[3:6].numpy()[MODEL_TO_GLTF_AXES]
    if not (np.isfinite(low64).all() and np.isfinite(high64).all()):
        raise ValueError("the mesh has non-finite vertex coordinates")
    if bounds[6] < 0 or bounds[7] >= count:
        raise ValueError(f"faces index vertices outside 0..{count - 1}")
    centre = (low64 + high64) / 2
    scale = float((high64 - low64).max() / 2) or 1.0  # a flat or single-point mesh still gets a scale
    if grid is not None:
        resolution, radius = int(grid[0]), float(grid[1])
        steps = grid_steps(resolution)
        if steps and radius > 0 and low64.min() >= -radius * 1.0001 and high64.max() <= radius * 1.0001:
            centre = np.zeros(3)
            scale = 2 * radius / (resolution - 1) * POSITION_STEPS / steps

    # The quantisation, q = clamp(round((x - centre) * factor)), column by column with float32
    # scalars (no upload); the same float32 operations on the host give the bounds glTF asks for,
    # since each step is monotonic: the smallest q is q(smallest x).
    device = vertices.device
    offsets = centre.astype(np.float32)
    factor = np.float32(POSITION_STEPS / scale)
    positions = torch.zeros((count, 4), dtype=torch.int16, device=device)
    for gltf_axis, model_axis in enumerate(MODEL_TO_GLTF_AXES):
        column = (vertices[:, model_axis] - float(offsets[gltf_axis])) * float(factor)
        positions[:, gltf_axis] = column.round_().clamp_(-POSITION_STEPS, POSITION_STEPS).to(torch.int16)
    position_min = np.clip(np.rint((low64.astype(np.float32) - offsets) * factor), -POSITION_STEPS, POSITION_STEPS)
    position_max = np.clip(np.rint((high64.astype(np.float32) - offsets) * factor), -POSITION_STEPS, POSITION_STEPS)

    codes = (colors.float().nan_to_num(0.0).clamp(0.0, 1.0) * 255).round_().long()
    colour = torch.full((count, 4), -1, dtype=torch.int16, device=device)  # alpha: 0xFFFF, i.e. 1
    colour[:, :3] = _device_table(device)[codes]

    binary = torch.cat(
        [
            faces.to(torch.int32).reshape(-1).view(torch.uint8),  # checked to be in 0..V-1: uint32's bits
            positions.reshape(-1).view(torch.uint8),
            colour.reshape(-1).view(torch.uint8),
        ]
    )
    # Into page-locked memory on CUDA: the copy runs at the link's speed, not through the driver's
    # staging buffer (PyTorch's caching host allocator reuses the block for the next mesh).
    host = torch.empty(binary.shape, dtype=torch.uint8, pin_memory=binary.is_cuda)
    host.copy_(binary)
    return PackedMesh(
        binary=host.numpy(),
        vertex_count=count,
        face_count=len(faces),
        translation=(float(centre[0]), float(centre[1]), float(centre[2])),
        scale=scale,
        position_min=(int(position_min[0]), int(position_min[1]), int(position_min[2])),
        position_max=(int(position_max[0]), int(position_max[1]), int(position_max[2])),
    )


def packed_to_glb(packed: PackedMesh) -> bytes:
    """The GLB file around a packed BIN chunk (host only: the JSON and one join)."""
    count, index_bytes = packed.vertex_count, 3 * packed.face_count * 4
    views = [
        {"buffer": 0, "byteOffset": 0, "byteLength": index_bytes, "target": GLTF_ELEMENT_ARRAY_BUFFER},
        {
            "buffer": 0,
            "byteOffset": index_bytes,
            "byteLength": count * 8,
            "byteStride": 8,
            "target": GLTF_ARRAY_BUFFER,
        },
        {"buffer": 0, "byteOffset": index_bytes + count * 8, "byteLength": count * 8, "target": GLTF_ARRAY_BUFFER},
    ]
    accessors = [
        {"bufferView": 0, "componentType": GLTF_UNSIGNED_INT, "count": 3 * packed.face_count, "type": "SCALAR"},
        # min/max are the stored integers: `normalized` does not apply to them (glTF 2.0, accessor.min)
        {
            "bufferView": 1,
            "componentType": GLTF_SHORT,
            "normalized": True,
            "count": count,
            "type": "VEC3",
            "min": list(packed.position_min),
            "max": list(packed.position_max),
        },
        {"bufferView": 2, "componentType": GLTF_UNSIGNED_SHORT, "normalized": True, "count": count, "type": "VEC4"},
    ]
    primitive = {"attributes": {"POSITION": 1, "COLOR_0": 2}, "indices": 0, "mode": GLTF_TRIANGLES, "material": 0}
    node = {"name": "object", "mesh": 0, "translation": list(packed.translation), "scale": [packed.scale] * 3}
    gltf = {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "extensionsUsed": [KHR_MESH_QUANTIZATION],
        "extensionsRequired": [KHR_MESH_QUANTIZATION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "meshes": [{"name": "object", "primitives": [primitive]}],
        "materials": [MATERIAL],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(packed.binary)}],
    }
    return glb_container(gltf, packed.binary)


def compact_mesh_to_glb(mesh: Mesh, grid: tuple[int, float] | None = None) -> bytes:
    """The compact GLB of a host Mesh (the vertex-coloured file of mesh_to_glb(normals=False), smaller)."""
    faces = np.asarray(mesh.faces)
    if faces.dtype.kind == "u":  # torch reduces no unsigned type wider than a byte
        faces = faces.astype(np.int64)
    vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))
    return packed_to_glb(pack_mesh(vertices, torch.from_numpy(faces), torch.from_numpy(np.asarray(mesh.colors)), grid))


def _check(vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor) -> None:
    """Refuse shapes and types a glTF primitive cannot hold, saying which (no device sync)."""
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.dtype != torch.float32:
        raise ValueError(f"vertices must be (V, 3) float32, got {vertices.dtype} {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.is_floating_point or faces.dtype == torch.bool:
        raise ValueError(f"faces must be (F, 3) integers, got {faces.dtype} {tuple(faces.shape)}")
    if colors.shape != vertices.shape:
        raise ValueError(f"vertices and colours must be (V, 3), got {tuple(vertices.shape)} and {tuple(colors.shape)}")
    if len(faces) == 0:
        raise ValueError("the mesh has no faces: a glTF primitive needs at least one triangle")
