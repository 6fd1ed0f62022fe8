"""Image to 3D: turn the selected reference image into a vertex-coloured mesh (TripoSR on a GPU server)."""

from __future__ import annotations

bl_info = {
    "name": "Image to 3D",
    "author": "image-to-3d team",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "View3D > Sidebar > Image to 3D; Add menu; F3 'Generate 3D from Image'",
    "description": "Turn a reference image into a vertex-coloured mesh with TripoSR",
    "category": "Import-Export",
}

import bpy  # noqa: E402

from . import operators, panel, preferences, properties  # noqa: E402

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(
    (
        preferences.ImageTo3DPreferences,
        properties.ImageTo3DSettings,
        operators.IMAGE_TO_3D_OT_generate,
        operators.IMAGE_TO_3D_OT_cancel,
        operators.IMAGE_TO_3D_OT_test_connection,
        panel.VIEW3D_PT_image_to_3d,
    )
)


def register() -> None:
    _register_classes()
    setattr(bpy.types.Scene, "image_to_3d", bpy.props.PointerProperty(type=properties.ImageTo3DSettings))
    bpy.types.VIEW3D_MT_add.append(operators.menu_entry)  # type: ignore[arg-type]


def unregister() -> None:
    operators.cancel_running_job()
    bpy.types.VIEW3D_MT_add.remove(operators.menu_entry)  # type: ignore[arg-type]
    delattr(bpy.types.Scene, "image_to_3d")
    _unregister_classes()
