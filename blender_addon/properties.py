"""Per-scene settings (`scene.image_to_3d`): the input image and the generation options.

The property groups hold properties only: Blender 4.2 crashes on exit (code 139) once a
registered PropertyGroup has a method of its own, so helpers are module functions.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty


class ImageTo3DSettings(bpy.types.PropertyGroup):
    image: PointerProperty(  # type: ignore[valid-type]
        name="Image",
        type=bpy.types.Image,
        description="Image to turn into a mesh when no reference-image Empty is selected",
    )
    filepath: StringProperty(  # type: ignore[valid-type]
        name="File",
        subtype="FILE_PATH",
        description="Image file to use when neither a reference Empty nor an image is chosen",
    )
    remove_background: EnumProperty(  # type: ignore[valid-type]
        name="Remove background",
        items=[
            ("auto", "Auto", "Keep the image's own transparency; remove the background of opaque images"),
            ("always", "Always", "Always remove the background"),
            ("never", "Never", "Use the image as it is"),
        ],
        default="auto",
    )
    foreground_ratio: FloatProperty(  # type: ignore[valid-type]
        name="Foreground ratio",
        description="How much of the frame the object fills before reconstruction",
        default=0.85,
        min=0.5,
        max=1.0,
    )
    resolution: IntProperty(  # type: ignore[valid-type]
        name="Resolution",
        description="Mesh grid resolution: higher is finer and slower",
        default=256,
        min=32,
        max=512,
    )
    target_faces: IntProperty(  # type: ignore[valid-type]
        name="Target faces",
        description="Decimate the mesh to about this many faces (0: keep all; the server accepts 100 or more)",
        default=0,
        min=0,
        max=10_000_000,
    )


def request_options(settings: ImageTo3DSettings) -> dict[str, object]:
    """The query options of POST /v1/generate (docs/api.md)."""
    return {
        "resolution": settings.resolution,
        "foreground_ratio": round(settings.foreground_ratio, 4),
        "remove_background": settings.remove_background,
        "target_faces": settings.target_faces or None,
    }
