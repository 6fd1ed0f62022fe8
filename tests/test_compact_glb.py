"""The compact GLB (remote.compact_glb): KHR_mesh_quantization positions and colours
snapped to sRGB bytes, read back here with numpy and in real bpy (Blender's own glTF importer)
against the full GLB of the same mesh: positions within half a voxel (in fact 1/500), colours
within 1/255 of what Blender keeps from the full file."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from image_to_3d_dev.analytic_field import AnalyticField
from image_to_3d_dev.glb_checks import BLENDER_IMPORT, compare_imports, realistic_mesh
from conftest import BLENDER_PYTHON
from glb_reader import read_glb
from remote.extraction import Mesh
from remote.server.transfer import encode_answer
from remote.compact_glb import (
    POSITION_STEPS,
    compact_mesh_to_glb,
    grid_steps,
    linear_ushort_table,
    pack_mesh,
    packed_to_glb,
)
from remote.glb import mesh_to_glb, srgb_to_linear


RADIUS = AnalyticField.radius


def _read(data: bytes) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(gltf, positions in glTF axes after the node's transform, uint16 RGBA as stored, faces)."""
    read = read_glb(data)
    colour_accessor = read.gltf["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"]
    return read.gltf, read.positions, read.stored[colour_accessor], read.faces


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return realistic_mesh(96, Path(__file__).parent / "fixtures/examples/chair.png")


def test_grid_steps():
    assert grid_steps(256) == 256 and grid_steps(512) == 128 and grid_steps(32) == 2048
    for resolution in (2, 33, 100, 255, 256, 257, 511, 512):
        steps = grid_steps(resolution)
        assert (resolution - 1) / 2 * steps <= POSITION_STEPS < (resolution - 1) * steps


@pytest.mark.parametrize("grid", [None, (96, RADIUS)])
def test_positions_colours_and_faces_read_back(mesh, grid):
    before = mesh.vertices.copy()
    gltf, positions, colours, faces = _read(compact_mesh_to_glb(mesh, grid))
    np.testing.assert_array_equal(mesh.vertices, before)  # the mesh is not touched
    assert gltf["extensionsRequired"] == ["KHR_mesh_quantization"] == gltf["extensionsUsed"]
    position = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert position["componentType"] == 5122 and position["normalized"] is True
    voxel = 2 * RADIUS / 95
    error = np.abs(positions - mesh.vertices[:, [1, 2, 0]]).max() / voxel
    assert error < (1 / 500 if grid else 1 / 100), error
    np.testing.assert_array_equal(faces, mesh.faces)
    # min/max are the stored integers
    stored = np.rint((positions - gltf["nodes"][0]["translation"]) / gltf["nodes"][0]["scale"][0] * POSITION_STEPS)
    assert position["min"] == stored.min(axis=0).tolist() and position["max"] == stored.max(axis=0).tolist()
    # the colours: linear 16-bit whose sRGB byte is the colour's, within half a byte step of it (plus
    # the 16-bit linear step, up to 12.92 times larger in sRGB at the dark end)
    linear = colours[:, :3] / 65535
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    np.testing.assert_array_equal(np.rint(srgb * 255), np.rint(np.clip(mesh.colors, 0, 1) * 255))
    assert np.abs(srgb - mesh.colors).max() <= 0.5 / 255 + 12.92 * 0.5 / 65535 + 1e-6 and (colours[:, 3] == 65535).all()


def test_snapped_colour_table_round_trips_every_byte():
    codes = np.arange(256, dtype=np.float32) / 255
    linear = linear_ushort_table() / 65535
    assert np.abs(linear - srgb_to_linear(codes)).max() <= 0.5 / 65535 + 1e-7


def test_every_colour_byte_and_nan_reach_the_file():
    """Each sRGB byte is stored as its table entry; NaN is black, out-of-range values are clipped."""
    count = 259
    vertices = torch.rand(count, 3, generator=torch.Generator().manual_seed(0))
    colors = (torch.arange(count, dtype=torch.float64) / 255)[:, None].repeat(1, 3)  # float64 is accepted
    colors[256], colors[257], colors[258] = float("nan"), -0.5, 7.0
    faces = torch.tensor([[0, 1, 2], [2, 1, 258]], dtype=torch.int64)
    _, _, stored, read_faces = _read(
        compact_mesh_to_glb(Mesh(vertices.numpy(), faces.numpy().astype(np.uint32), colors.numpy()))
    )
    table = linear_ushort_table()
    np.testing.assert_array_equal(stored[:256, :3], table[np.arange(256)][:, None].repeat(3, axis=1))
    np.testing.assert_array_equal(stored[256:, 0], [table[0], table[0], table[255]])
    assert (stored[:, 3] == 65535).all()
    np.testing.assert_array_equal(read_faces, faces.numpy())
    packed = pack_mesh(vertices, faces, colors)
    assert (packed.vertex_count, packed.face_count, len(packed.binary)) == (count, 2, 2 * 12 + count * 16)


@pytest.mark.parametrize(
    "vertices, faces, colors, message",
    [
        (torch.zeros(3, 3, dtype=torch.float64), torch.tensor([[0, 1, 2]]), torch.zeros(3, 3), "float32"),
        (torch.zeros(3, 3), torch.tensor([[0.0, 1.0, 2.0]]), torch.zeros(3, 3), "integers"),
        (torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), torch.zeros(2, 3), "colours"),
        (torch.zeros(3, 3), torch.zeros((0, 3), dtype=torch.int64), torch.zeros(3, 3), "no faces"),
        (torch.zeros(3, 3), torch.tensor([[0, 1, -1]]), torch.zeros(3, 3), "outside"),
        (torch.full((3, 3), float("inf")), torch.tensor([[0, 1, 2]]), torch.zeros(3, 3), "non-finite"),
    ],
)
def test_what_a_primitive_cannot_hold_is_refused(vertices, faces, colors, message):
    with pytest.raises(ValueError, match=message):
        pack_mesh(vertices, faces, colors)


def test_edge_cases():
    one = Mesh(
        vertices=np.array([[0.1, 0.2, 0.3]] * 3, np.float32),
        faces=np.array([[0, 1, 2]], np.int32),
        colors=np.full((3, 3), 0.5, np.float32),
    )
    _, positions, _, _ = _read(compact_mesh_to_glb(one))
    np.testing.assert_allclose(positions, one.vertices[:, [1, 2, 0]], atol=1e-6)
    outside = Mesh(vertices=one.vertices * 10, faces=one.faces, colors=one.colors)  # beyond the grid's cube
    _, positions, _, _ = _read(compact_mesh_to_glb(outside, (256, RADIUS)))
    np.testing.assert_allclose(positions, outside.vertices[:, [1, 2, 0]], atol=1e-5)
    with pytest.raises(ValueError):
        compact_mesh_to_glb(Mesh(vertices=one.vertices, faces=one.faces + 1, colors=one.colors))
    with pytest.raises(ValueError):
        compact_mesh_to_glb(Mesh(vertices=one.vertices * np.nan, faces=one.faces, colors=one.colors))


def test_the_256_result_is_under_1_5_mb_on_the_wire():
    big = realistic_mesh(256, Path(__file__).parent / "fixtures/examples/chair.png")
    assert len(big.faces) > 150_000
    compact = compact_mesh_to_glb(big, (256, RADIUS))
    zipped, _ = encode_answer(compact, gzip_accepted=True)  # the server's gzip (ISA-L)
    full_zipped, _ = encode_answer(mesh_to_glb(big, normals=False), gzip_accepted=True)
    assert gzip.decompress(zipped) == compact  # standard gzip, as every client inflates it
    print(f"compact {len(compact):,} B, gzip {len(zipped):,} B; full gzip {len(full_zipped):,} B")
    assert len(zipped) <= 1_500_000 < len(full_zipped)


def test_blender_imports_it_like_the_full_glb(mesh, tmp_path):
    """Real bpy: both files import; vertices (world space, as the add-on bakes them) within 1/500 of
    a voxel (half a voxel is the bound) and the colours Blender keeps within 1/255."""
    full, compact = tmp_path / "full.glb", tmp_path / "compact.glb"
    full.write_bytes(mesh_to_glb(mesh, normals=False))
    compact.write_bytes(compact_mesh_to_glb(mesh, (96, RADIUS)))
    run = subprocess.run(
        [BLENDER_PYTHON, "-c", BLENDER_IMPORT, "0", str(full), str(compact)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"Blender exited with {run.returncode}:\n" + run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))[6:])
    counts = {(f["vertices"], f["faces"]) for f in result["files"].values()}
    assert counts == {(len(mesh.vertices), len(mesh.faces))}
    errors = compare_imports(full, compact, 2 * RADIUS / 95)
    print(f"Blender {result['blender']}: {errors}")
    assert errors["max_distance_voxels"] < 1 / 500
    assert errors["max_colour_srgb_bytes"] <= 1.0 + 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packing_on_the_gpu_gives_the_hosts_bytes():
    """The pipeline packs on the GPU; the file must be the one the host writes (checked on the H200)."""
    generator = torch.Generator().manual_seed(0)
    vertices = torch.rand(20_000, 3, generator=generator) * 1.7 - 0.85
    faces = torch.randint(0, 20_000, (40_000, 3), generator=generator)
    colors = torch.rand(20_000, 3, generator=generator) * 1.2 - 0.1
    colors[::11] = float("nan")
    for grid in ((256, 0.87), None):
        on_host = packed_to_glb(pack_mesh(vertices, faces, colors, grid))
        on_gpu = packed_to_glb(pack_mesh(vertices.cuda(), faces.cuda(), colors.cuda(), grid))
        assert on_gpu == on_host, grid
