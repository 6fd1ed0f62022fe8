"""Reads our GLBs (remote.glb: the full one and the compact, KHR_mesh_quantization one) with numpy,
as a glTF viewer does: positions dequantised and moved by the node's scale and translation. trimesh
reads normalised int16 positions as plain integers and keeps the node's transform apart."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

COMPONENT = {5121: "<u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
NORMALISE = {5121: 255.0, 5122: 32767.0, 5123: 65535.0}
COLUMNS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


@dataclass
class GlbMesh:
    gltf: dict
    positions: np.ndarray  # float64 (V, 3), glTF axes, node transform applied
    faces: np.ndarray  # (F, 3)
    colours: np.ndarray | None  # float64 (V, 4) linear 0..1
    stored: dict  # accessor index -> the array as stored


def chunks(data: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, _ = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20 : 20 + json_length])
    bin_length, _ = struct.unpack_from("<II", data, 20 + json_length)
    start = 28 + json_length
    return gltf, data[start : start + bin_length]


def read_glb(data: bytes) -> GlbMesh:
    gltf, binary = chunks(data)
    views, accessors = gltf["bufferViews"], gltf["accessors"]
    primitive = gltf["meshes"][0]["primitives"][0]
    stored: dict = {}

    def read(index: int) -> np.ndarray:
        accessor = accessors[index]
        view = views[accessor["bufferView"]]
        dtype = np.dtype(COMPONENT[accessor["componentType"]])
        columns = COLUMNS[accessor["type"]]
        assert view["byteOffset"] % 4 == 0
        stride = view.get("byteStride", dtype.itemsize * columns)
        raw = np.frombuffer(binary, np.uint8, view["byteLength"], view["byteOffset"] + accessor.get("byteOffset", 0))
        rows = raw[: stride * (accessor["count"] - 1) + dtype.itemsize * columns]
        rows = np.lib.stride_tricks.as_strided(rows, (accessor["count"], dtype.itemsize * columns), (stride, 1))
        values = np.ascontiguousarray(rows).view(dtype).reshape(accessor["count"], columns)
        stored[index] = values
        if accessor.get("normalized"):
            return np.maximum(values / NORMALISE[accessor["componentType"]], -1.0)
        return values.astype(np.float64) if dtype.kind == "f" else values

    positions = read(primitive["attributes"]["POSITION"])
    node = gltf["nodes"][0]
    positions = positions * np.array(node.get("scale", [1.0, 1.0, 1.0])) + np.array(node.get("translation", [0.0] * 3))
    faces = read(primitive["indices"]).reshape(-1, 3)
    colours = read(primitive["attributes"]["COLOR_0"]) if "COLOR_0" in primitive["attributes"] else None
    return GlbMesh(gltf=gltf, positions=positions, faces=faces, colours=colours, stored=stored)
