"""The textured GLB's core on the CPU: a UV atlas baked from the tiny TripoSR's colour field, read
back from the GLB (accessors, embedded image, material), checked against the field; plus the
analytic scene, whose sharp red/blue split shows any misplaced texel."""

from __future__ import annotations

import io
import math

import numpy as np
import PIL.Image
import pytest
import torch

from image_to_3d_dev.analytic_field import BLUE, RED, AnalyticField
from conftest import TINY_MODEL
from remote.errors import InvalidOptionError
from remote.extraction import Mesh, extract_mesh, field_colors
from remote.glb import textured_mesh_to_glb
from remote.texture import TEXTURE_SIZES, bake_texture
from remote.texture.bake import bake_atlas
from remote.texture.encode import to_bytes
from remote.texture.rasterise import rasterise
from remote.triposr.weights import load_model
from test_glb import _accessor_data, _chunks
from image_to_3d_dev.texture_checks import overlapping_pairs, sample_bilinear, surface_samples

SIZE = 512
FLOAT32_UV = 1e-7  # UVs are float32 in the GLB: faces that touch may overlap by a rounding step


@pytest.fixture(scope="module")
def tiny():
    """The tiny model's field for its reference image, cut where half the cube is inside."""
    model = load_model(TINY_MODEL, device="cpu")
    pixels = np.asarray(PIL.Image.open(TINY_MODEL / "input.png").convert("RGB"), dtype=np.float32) / 255.0
    with torch.inference_mode():
        field = model.field(model(torch.from_numpy(pixels)[None])[0])
        points = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 1.74 - 0.87
        threshold = float(field.density(points).median())
        mesh = extract_mesh(field, resolution=32, threshold=threshold)
    return field, mesh


@pytest.fixture(scope="module", params=["png", "jpeg"])
def baked(request, tiny):
    field, mesh = tiny
    with torch.inference_mode():
        textured = bake_texture(mesh, field, size=SIZE, image_format=request.param)
    data = textured_mesh_to_glb(textured)
    gltf, binary = _chunks(data)
    return {"format": request.param, "textured": textured, "gltf": gltf, "binary": binary}


def _primitive(gltf: dict) -> dict:
    ((primitive,),) = [mesh["primitives"] for mesh in gltf["meshes"]]
    return primitive


def _image(gltf: dict, binary: bytes) -> tuple[PIL.Image.Image, str]:
    (image,) = gltf["images"]
    view = gltf["bufferViews"][image["bufferView"]]
    data = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
    return PIL.Image.open(io.BytesIO(data)), image["mimeType"]


@pytest.mark.slow  # the whole pipeline, twice
def test_texcoords_in_the_unit_square_and_no_vertex_colours(baked):
    gltf, binary = baked["gltf"], baked["binary"]
    attributes = _primitive(gltf)["attributes"]
    assert set(attributes) == {"POSITION", "TEXCOORD_0"}  # no COLOR_0 (and no NORMAL by default)
    accessor = gltf["accessors"][attributes["TEXCOORD_0"]]
    assert (accessor["componentType"], accessor["type"]) == (5126, "VEC2")
    uv = _accessor_data(gltf, binary, attributes["TEXCOORD_0"])
    assert uv.shape == (len(baked["textured"].vertices), 2)
    assert uv.min() >= 0 and uv.max() <= 1
    positions = _accessor_data(gltf, binary, attributes["POSITION"])
    np.testing.assert_array_equal(positions, baked["textured"].vertices[:, [1, 2, 0]])


def test_the_embedded_image_is_valid_and_of_the_asked_size(baked):
    image, mime_type = _image(baked["gltf"], baked["binary"])
    assert mime_type == f"image/{baked['format']}" and image.format == baked["format"].upper()
    assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    image.load()  # decodes the whole file: a truncated or corrupt one raises here


def test_the_material_feeds_the_image_to_base_colour(baked):
    gltf = baked["gltf"]
    material = gltf["materials"][_primitive(gltf)["material"]]
    texture = gltf["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
    assert texture["source"] == 0 and len(gltf["images"]) == 1
    assert "baseColorFactor" not in material["pbrMetallicRoughness"]  # white: the texture shows as is
    sampler = gltf["samplers"][texture["sampler"]]
    assert sampler["minFilter"] == 9987 and sampler["wrapS"] == sampler["wrapT"] == 33071
    assert "uri" not in gltf["images"][0]  # embedded, not a side file


@pytest.mark.slow  # the whole pipeline, twice
def test_every_triangle_lies_in_the_atlas_and_none_overlap(baked):
    textured = baked["textured"]
    triangles = textured.uv[textured.faces].astype(np.float64)
    margin = 1.0 / SIZE  # the packing keeps two texels of gutter around every chart
    assert triangles.min() >= margin and triangles.max() <= 1 - margin
    assert len(overlapping_pairs(triangles, tolerance=FLOAT32_UV)) == 0
    # Every face of the mesh is there once, on copies of its own vertices.
    assert len(textured.faces) == len(baked["textured"].faces)


@pytest.mark.slow  # the whole pipeline, twice
def test_the_overlap_check_finds_overlaps(baked):
    triangles = baked["textured"].uv[baked["textured"].faces].astype(np.float64)
    moved = triangles.copy()
    moved[:50] = triangles[1000:1050] + (triangles[1000:1050].max(axis=1, keepdims=True) - triangles[1000:1050]) * 0.1
    found = overlapping_pairs(moved)
    assert len(found) >= 40


def test_texture_colour_at_each_vertex_matches_the_field(baked, tiny):
    field, mesh = tiny
    textured = baked["textured"]
    image = np.asarray(_image(baked["gltf"], baked["binary"])[0]) / 255.0
    with torch.inference_mode():
        expected = field_colors(field, torch.from_numpy(textured.vertices)).numpy()
    read = sample_bilinear(image, textured.uv)
    error = np.abs(read - expected)
    # The field varies across the surface far more than the texture strays from it.
    shuffled = np.abs(read[np.random.default_rng(0).permutation(len(read))] - expected).mean()
    print(f"{baked['format']}: mean {error.mean():.4f}, p99 {np.quantile(error, 0.99):.4f}, shuffled {shuffled:.4f}")
    assert error.mean() < 0.01 and np.quantile(error, 0.99) < 0.04
    assert shuffled > 3 * error.mean()


@pytest.mark.slow  # a bake
def test_baked_texels_are_the_field_colours_there(tiny):
    field, mesh = tiny
    with torch.inference_mode():
        baked = bake_atlas(mesh, field, size=SIZE)
        points = _texel_points(mesh, baked)
        expected = field_colors(field, points).numpy()
    inside = baked.raster.inside.numpy()
    pixels = (baked.atlas.numpy() * 255).round().astype(np.uint8)
    texels = baked.raster.texels.numpy()
    for image_format, tolerance in (("png", 0.5 / 255 + 1e-6), ("jpeg", 0.02)):
        data, _ = to_bytes(pixels, image_format)
        decoded = np.asarray(PIL.Image.open(io.BytesIO(data))).reshape(-1, 3)[texels] / 255.0
        error = np.abs(decoded - expected)[inside]
        assert error.mean() < tolerance, (image_format, error.mean())


def _texel_points(mesh: Mesh, baked) -> torch.Tensor:
    """The surface point behind each rasterised texel, from the raster's face and weights."""
    charts = baked.charts
    corners = torch.from_numpy(mesh.vertices[charts.vertex_map][charts.faces]).double()[baked.raster.faces]
    return (corners * baked.raster.weights[:, :, None]).sum(dim=1).float()


@pytest.fixture(scope="module")
def analytic():
    field = AnalyticField()
    mesh = extract_mesh(field, resolution=64)
    return field, mesh, bake_texture(mesh, field, size=SIZE, image_format="png")


@pytest.mark.slow  # a bake
def test_red_and_blue_land_where_the_field_puts_them(analytic):
    field, mesh, textured = analytic
    image = np.asarray(PIL.Image.open(io.BytesIO(textured.image))) / 255.0
    face, weights = surface_samples(textured.faces, 20000)
    points = (textured.vertices[textured.faces[face]] * weights[:, :, None]).sum(axis=1)
    uv = (textured.uv[textured.faces[face]] * weights[:, :, None]).sum(axis=1)
    read = sample_bilinear(image, uv)
    expected = np.where((points[:, 0] > 0.2)[:, None], RED, BLUE)
    away = np.abs(points[:, 0] - 0.2) > 2.0 / SIZE * 2  # a texel or two from the split, at most
    error = np.abs(read - expected)[away].max(axis=1)
    assert away.mean() > 0.9
    assert np.mean(error < 2 / 255) > 0.999, np.sort(error)[-20:]


def test_gutters_and_empty_space_hold_chart_colours(analytic):
    """Mip levels average the gutters and the space between charts: they must hold red or blue
    (or a mix of them), never black or grey."""
    _, _, textured = analytic
    image = np.asarray(PIL.Image.open(io.BytesIO(textured.image))).reshape(-1, 3) / 255.0
    red, blue = np.array(RED), np.array(BLUE)
    along = np.clip((image - blue) @ (red - blue) / np.dot(red - blue, red - blue), 0, 1)
    distance = np.linalg.norm(image - (blue + along[:, None] * (red - blue)), axis=1)
    assert distance.max() < 0.02


def _helix_strip(turns: float = 1.5, steps: int = 120) -> Mesh:
    """A ramp winding round the Z axis more than once: one chart that folds over itself in a
    projection along Z."""
    angle = np.linspace(0, 2 * math.pi * turns, steps)
    rise = 0.02 * angle
    inner = np.stack((0.3 * np.cos(angle), 0.3 * np.sin(angle), rise), axis=1)
    outer = np.stack((0.6 * np.cos(angle), 0.6 * np.sin(angle), rise), axis=1)
    vertices = np.concatenate([inner, outer]).astype(np.float32)
    i = np.arange(steps - 1)
    faces = np.concatenate([np.stack((i, i + steps, i + 1), 1), np.stack((i + 1, i + steps, i + steps + 1), 1)])
    faces = faces[:, [0, 2, 1]]  # counter-clockwise seen from +Z (above)
    return Mesh(vertices=vertices, faces=faces.astype(np.int32), colors=np.zeros_like(vertices))


def test_a_chart_that_folds_over_itself_is_split():
    mesh = _helix_strip()
    field = AnalyticField()
    textured = bake_texture(mesh, field, size=SIZE)
    assert len(overlapping_pairs(textured.uv[textured.faces], tolerance=FLOAT32_UV)) == 0
    # One projection along Z of the whole strip would overlap: the split is what fixed it.
    from remote.texture.unwrap import box_charts

    charts = box_charts(mesh.vertices, mesh.faces)
    assert charts.count == 1
    single = charts.uv[charts.faces]
    assert len(overlapping_pairs(single)) > 0


def test_rasterised_texels_show_the_face_they_lie_in():
    """A brute-force check on a few triangles: every texel centre strictly inside a triangle
    is given that triangle, with weights that rebuild the centre."""
    uv = torch.tensor([[0.1, 0.1], [0.6, 0.15], [0.3, 0.7], [0.7, 0.2], [0.9, 0.8], [0.65, 0.9]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    size = 64
    raster = rasterise(uv, faces, size)
    texel_uv = torch.stack(((raster.texels % size + 0.5) / size, (raster.texels // size + 0.5) / size), dim=1)
    rebuilt = (uv.double()[faces[raster.faces]] * raster.weights[:, :, None]).sum(dim=1)
    inside = raster.inside
    torch.testing.assert_close(rebuilt[inside], texel_uv[inside].double(), atol=1e-9, rtol=0)
    # Outside, the margin: a texel from an edge's line, up to two and a half beyond a sharp corner.
    assert float((rebuilt - texel_uv).norm(dim=1).max()) <= 2.5 / size
    columns, rows = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy")
    centres = torch.stack(((columns.flatten() + 0.5) / size, (rows.flatten() + 0.5) / size), dim=1).double()
    for index, face in enumerate(faces):
        a, b, c = uv.double()[face]
        edges = torch.stack([_cross(b - a, centres - a), _cross(c - b, centres - b), _cross(a - c, centres - c)])
        strictly = (edges > 1e-9).all(dim=0).nonzero().squeeze(1)
        shown = raster.faces[torch.isin(raster.texels, strictly)]
        assert len(strictly) > 50 and bool((shown == index).all())
        assert int(torch.isin(raster.texels, strictly).sum()) == len(strictly)


def _cross(edge: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return edge[0] * points[:, 1] - edge[1] * points[:, 0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_rasterises_exactly_as_the_cpu(analytic):
    _, mesh, _ = analytic
    field = AnalyticField()
    cpu = bake_atlas(mesh, field, size=1024)
    uv, faces = torch.from_numpy(cpu.uv), torch.from_numpy(cpu.charts.faces)
    gpu = rasterise(uv.cuda(), faces.cuda(), 1024)
    for name in ("texels", "faces", "inside"):
        assert torch.equal(getattr(gpu, name).cpu(), getattr(cpu.raster, name)), name
    torch.testing.assert_close(gpu.weights.cpu(), cpu.raster.weights, atol=1e-12, rtol=0)
    gpu_bake = bake_atlas(mesh, AnalyticField(device="cuda"), size=1024)
    assert torch.equal(gpu_bake.raster.texels.cpu(), cpu.raster.texels)
    torch.testing.assert_close(gpu_bake.atlas.cpu(), cpu.atlas, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [0, 256, 1000, 4096])
def test_a_texture_size_outside_the_allowed_ones_is_refused(analytic, size):
    field, mesh, _ = analytic
    with pytest.raises(InvalidOptionError, match="texture_size must be one of 512, 1024, 2048"):
        bake_texture(mesh, field, size=size)
    assert TEXTURE_SIZES == (512, 1024, 2048)


def test_the_glb_writer_refuses_uvs_outside_the_atlas(analytic):
    _, _, textured = analytic
    from dataclasses import replace

    with pytest.raises(ValueError, match="0..1"):
        textured_mesh_to_glb(replace(textured, uv=textured.uv + 0.5))
    with pytest.raises(ValueError, match="PNG or JPEG"):
        textured_mesh_to_glb(replace(textured, image=b""))


def test_charts_made_again_like_before_equal_charts_made_afresh():
    """The second pass after the fold check reuses the sides and adjacency (box_charts(like=...))."""
    from remote.texture.unwrap import box_charts

    mesh = _helix_strip()
    first = box_charts(mesh.vertices, mesh.faces)
    alone = np.zeros(len(mesh.faces), dtype=bool)
    alone[::7] = True
    again, fresh = (
        box_charts(mesh.vertices, mesh.faces, alone, like=first),
        box_charts(mesh.vertices, mesh.faces, alone),
    )
    assert again.count == fresh.count > first.count
    for name in ("uv", "vertex_map", "faces", "face_chart"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))


def test_shelves_and_bounds_match_the_plain_algorithms():
    """pack's shelf rows (one running sum) and chart boxes (sorted reductions) against the plain ways:
    a cumulative sum per row and numpy's ufunc.at."""
    from remote.texture.pack import _bounds, _shelves

    rng = np.random.default_rng(3)
    for count, size in ((5000, 1024), (300, 64), (1, 8)):
        heights = np.sort(rng.integers(3, 12, count))[::-1]
        widths = rng.integers(3, 12, count)
        expected = np.empty((count, 2), dtype=np.int64)
        start, top, overflow = 0, 0, False
        while start < count:
            if top + heights[start] > size:
                overflow = True
                break
            ends = np.cumsum(widths[start : start + size])
            fitting = int(np.searchsorted(ends, size, side="right"))
            expected[start : start + fitting] = np.stack(
                [ends[:fitting] - widths[start : start + fitting], np.full(fitting, top)], axis=1
            )
            top += int(heights[start])
            start += fitting
        got = _shelves(widths, heights, size)
        assert (got is None) == overflow
        if got is not None:
            np.testing.assert_array_equal(got, expected)
    chart = np.sort(rng.integers(0, 400, 3000))
    chart[:400] = np.arange(400)  # every chart has a vertex
    chart = np.sort(chart)
    uv = rng.normal(size=(3000, 2))
    low, high = np.full((400, 2), np.inf), np.full((400, 2), -np.inf)
    np.minimum.at(low, chart, uv)
    np.maximum.at(high, chart, uv)
    shuffled = rng.permutation(3000)
    for order_of in (chart, chart[shuffled]):
        points = uv if order_of is chart else uv[shuffled]
        got_low, got_high = _bounds(points, order_of, 400, np.argsort(order_of, kind="stable"))
        np.testing.assert_array_equal(got_low, low)
        np.testing.assert_array_equal(got_high, high)
