"""Mesh + TripoSR's field -> a textured mesh: UV atlas, the field's colours baked into it, encoded.

The stages, each timed under its own name in `timings`:

- "unwrap": box-projection charts (unwrap.py, CPU), folded faces split off (folds.py, the field's
  device), packed into one square atlas (pack.py, CPU).
- "rasterise": the face and surface point behind every texel (rasterise.py), on the field's device.
- "texture_color": the colour field at those points, through the same query as the vertex
  colours (extraction.field_colors: the fused kernel on the GPU fast path), in sRGB.
- "dilate": the empty texels filled from the charts (dilate.py).
- "encode": PNG or JPEG bytes (encode.py). JPEG by default: on a field with real colour variation
  it is several times smaller and faster to encode than PNG, well inside the 2% colour goal
  (docs/performance.md).

Faces that overlap another face of their chart (folds.py) get charts of their own before packing;
a mesh of blobby shapes has few or none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from remote.errors import InvalidOptionError
from remote.extraction import Field, Mesh, _StageClock, field_colors
from remote.texture.encode import IMAGE_FORMATS, to_bytes
from remote.texture.dilate import fill_atlas
from remote.texture.folds import folded_faces
from remote.texture.pack import AtlasTooSmallError, pack
from remote.texture.rasterise import Raster, rasterise
from remote.texture.unwrap import Charts, box_charts

logger = logging.getLogger(__name__)

TEXTURE_SIZES = (512, 1024, 2048)
DEFAULT_IMAGE_FORMAT = "jpeg"


@dataclass
class TexturedMesh:
    """A mesh cut along its chart seams (vertices copied there), with UVs and the baked image.

    `uv` follows glTF: (0, 0) is the image's top-left corner. `image` is the encoded file."""

    vertices: np.ndarray  # float32 (U, 3)
    faces: np.ndarray  # int32 (F, 3)
    uv: np.ndarray  # float32 (U, 2) in 0..1
    image: bytes
    mime_type: str
    size: int
    normals: np.ndarray | None = None  # float32 (U, 3)


@dataclass
class Bake:
    """What bake_atlas found, before encoding: for tests and benchmarks that look inside."""

    charts: Charts
    uv: np.ndarray  # float32 (U, 2)
    raster: Raster
    colours: torch.Tensor  # float32 (T, 3): the field's colour at each rasterised texel
    atlas: torch.Tensor  # float32 (size, size, 3), filled


def check_texture_size(size: int) -> None:
    """Refuse a texture size other than the allowed ones, naming them (0, vertex colours, is the
    caller's to handle: there is nothing to bake then)."""
    if size not in TEXTURE_SIZES:
        raise InvalidOptionError(
            f"texture_size must be one of {', '.join(map(str, TEXTURE_SIZES))}, or 0 for vertex colours (got {size})."
        )


def bake_texture(
    mesh: Mesh,
    field: Field,
    *,
    size: int = 1024,
    image_format: str = DEFAULT_IMAGE_FORMAT,
    timings: dict[str, float] | None = None,
    sync: Callable[[], None] | None = None,
) -> TexturedMesh:
    """The mesh extract_mesh gave, and the field it came from -> the textured mesh for the GLB."""
    if image_format not in IMAGE_FORMATS:
        raise InvalidOptionError(f"image_format must be one of {', '.join(IMAGE_FORMATS)} (got {image_format!r}).")
    baked = bake_atlas(mesh, field, size=size, timings=timings, sync=sync)
    clock = _StageClock(timings, sync)
    with clock("encode"):
        pixels = (baked.atlas * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        image, mime_type = to_bytes(pixels, image_format)
    vertex_map = baked.charts.vertex_map
    return TexturedMesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float32)[vertex_map],
        faces=baked.charts.faces.astype(np.int32),
        uv=baked.uv,
        image=image,
        mime_type=mime_type,
        size=size,
        normals=None if mesh.normals is None else np.asarray(mesh.normals, dtype=np.float32)[vertex_map],
    )


def bake_atlas(
    mesh: Mesh,
    field: Field,
    *,
    size: int = 1024,
    timings: dict[str, float] | None = None,
    sync: Callable[[], None] | None = None,
) -> Bake:
    """Unwrap, rasterise, query and fill: the atlas as float sRGB on the field's device."""
    check_texture_size(size)
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces: there is nothing to texture")
    clock = _StageClock(timings, sync)
    device = field.device
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    with clock("unwrap"):
        charts = box_charts(vertices, faces)
        folded = (
            folded_faces(
                torch.from_numpy(charts.uv).to(device),
                torch.from_numpy(charts.faces).to(device),
                torch.from_numpy(charts.face_chart).to(device),
            )
            .cpu()
            .numpy()
        )
        if folded.any():
            logger.debug("texture: %d faces fold over their chart; giving them charts of their own", folded.sum())
            charts = box_charts(vertices, faces, alone=folded, like=charts)
        try:
            uv = pack(charts, size)
        except AtlasTooSmallError as error:
            raise InvalidOptionError(str(error)) from error
    with clock("rasterise"):
        uv_faces = torch.from_numpy(charts.faces).to(device)
        raster = rasterise(torch.from_numpy(uv).to(device), uv_faces, size)
        # The surface point behind each texel, one corner at a time (a (T, 3, 3) gather would be
        # 300 MB at 2048^2).
        positions = torch.from_numpy(vertices).to(device).double()[torch.from_numpy(charts.vertex_map).to(device)]
        texel_faces = uv_faces[raster.faces]
        points = positions[texel_faces[:, 0]] * raster.weights[:, 0:1]
        for corner in (1, 2):
            points = points + positions[texel_faces[:, corner]] * raster.weights[:, corner : corner + 1]
        points = points.float()
    with clock("texture_color"):
        colours = field_colors(field, points)
    with clock("dilate"):
        atlas = fill_atlas(raster.texels, colours, size)
    return Bake(charts=charts, uv=uv, raster=raster, colours=colours, atlas=atlas)
