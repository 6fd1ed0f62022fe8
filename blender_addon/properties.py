"""Per-scene settings (`scene.image_to_3d`) and the history list shown in the panel.

The property groups hold properties only: Blender 4.2 crashes on exit (code 139) once a
registered PropertyGroup has a method of its own, so helpers are module functions.
The history list lives on the window manager, which is never saved in a .blend: the history
itself is the cache folder (history.py); this list is only its copy for the panel's UIList.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

# The server's target_faces range (declared in remote/options.py; tests/test_options.py checks these), 0 meaning "keep all".
TARGET_FACES_MIN = 100
TARGET_FACES_MAX = 10_000_000


def _clamp_target_faces(settings: ImageTo3DSettings, context: bpy.types.Context) -> None:
    """1-99 is no request the server accepts: it becomes the smallest one it does."""
    if 0 < settings.target_faces < TARGET_FACES_MIN:
        settings.target_faces = TARGET_FACES_MIN


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
    folder: StringProperty(  # type: ignore[valid-type]
        name="Folder",
        subtype="DIR_PATH",
        description="A folder of images to turn into meshes one by one, when nothing above is chosen",
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
        description=f"Decimate the mesh to about this many faces (0: keep all; at least {TARGET_FACES_MIN})",
        default=0,
        min=0,
        max=TARGET_FACES_MAX,
        update=_clamp_target_faces,
    )
    texture_size: EnumProperty(  # type: ignore[valid-type]
        name="Colour",
        description="How the object carries its colours",
        items=[  # written out, so tests can read them without Blender (tests/test_options.py)
            ("0", "Vertex colours", "A colour per vertex (the lightest file; fine detail needs a dense mesh)"),
            ("512", "Texture 512", "A 512 x 512 image texture, UV-mapped: colour detail on a light mesh"),
            ("1024", "Texture 1024", "A 1024 x 1024 image texture, UV-mapped: colour detail on a light mesh"),
            ("2048", "Texture 2048", "A 2048 x 2048 image texture, UV-mapped: colour detail on a light mesh"),
        ],
        default="0",
    )
    placement: EnumProperty(  # type: ignore[valid-type]
        name="Placement",
        items=[
            ("BASE", "Stand on Cursor", "The object's lowest point is at the 3D cursor, as if standing on the floor"),
            ("CENTER", "Centre on Cursor", "The centre of the object's bounding box is at the 3D cursor"),
        ],
        default="BASE",
    )
    height: FloatProperty(  # type: ignore[valid-type]
        name="Height (m)",
        description="Scale the object to this real-world height in metres, by the scene's unit scale (0: as made)",
        default=0.0,
        min=0.0,
        max=10_000.0,
        precision=3,
    )


class ImageTo3DHistoryEntry(bpy.types.PropertyGroup):
    """One cached result, as the panel's list shows it (name is the entry's label)."""

    key: StringProperty()  # type: ignore[valid-type]
    summary: StringProperty()  # type: ignore[valid-type]
    icon_id: IntProperty()  # type: ignore[valid-type]


class ImageTo3DHistory(bpy.types.PropertyGroup):
    entries: bpy.props.CollectionProperty(type=ImageTo3DHistoryEntry)  # type: ignore[valid-type]
    index: IntProperty(name="Result", default=0)  # type: ignore[valid-type]


def request_options(settings: ImageTo3DSettings) -> dict[str, object]:
    """The query options of POST /v1/generate (docs/api.md)."""
    faces = settings.target_faces
    return {
        "resolution": settings.resolution,
        "foreground_ratio": round(settings.foreground_ratio, 4),
        "remove_background": settings.remove_background,
        "target_faces": min(max(faces, TARGET_FACES_MIN), TARGET_FACES_MAX) if faces else None,
        "texture_size": int(settings.texture_size),
    }


def option_words() -> dict[str, tuple[str, dict[str, str]]]:
    """Each request option's panel label and its values' labels: remove_background ->
    ("Remove background", {"never": "Never", ...}), so messages use the panel's words."""
    words: dict[str, tuple[str, dict[str, str]]] = {}
    for name in ("remove_background", "foreground_ratio", "resolution", "target_faces", "texture_size"):
        prop = ImageTo3DSettings.bl_rna.properties[name]
        values = {item.identifier: item.name for item in getattr(prop, "enum_items", [])}
        words[name] = (prop.name, values)
    return words
