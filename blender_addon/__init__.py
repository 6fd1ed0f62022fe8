"""Image to 3D: turn the selected reference image into a vertex-coloured mesh (TripoSR on a GPU server)."""

from __future__ import annotations

bl_info = {
    "name": "Image to 3D",
    "author": "image-to-3d team",
    "version": (0, 2, 0),
    "blender": (4, 2, 0),
    "location": "View3D > Sidebar > Image to 3D; Add menu; F3 'Generate 3D from Image'",
    "description": "Turn a reference image into a vertex-coloured mesh with TripoSR",
    "category": "Import-Export",
}

import sys  # noqa: E402

import bpy  # noqa: E402

from . import history_ui, operators, panel, preferences, properties  # noqa: E402

CLASSES = (
    preferences.ImageTo3DPreferences,
    properties.ImageTo3DSettings,
    properties.ImageTo3DHistoryEntry,
    properties.ImageTo3DHistory,
    operators.IMAGE_TO_3D_OT_generate,
    operators.IMAGE_TO_3D_OT_cancel,
    operators.IMAGE_TO_3D_OT_test_connection,
    operators.IMAGE_TO_3D_OT_history_import,
    operators.IMAGE_TO_3D_OT_history_delete,
    panel.IMAGE_TO_3D_UL_history,
    panel.VIEW3D_PT_image_to_3d,
    panel.VIEW3D_PT_image_to_3d_history,
)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)
_STATE = {"active": False}  # False: another install of this add-on (extension or legacy) holds the names


def register() -> None:
    if hasattr(bpy.types.Scene, "image_to_3d"):
        print(
            "Image to 3D is already enabled from its other install (extension or legacy); this one stays "
            "idle until that one is disabled. Keep one of them."
        )
        return
    _register_classes()
    setattr(bpy.types.Scene, "image_to_3d", bpy.props.PointerProperty(type=properties.ImageTo3DSettings))
    setattr(bpy.types.WindowManager, "image_to_3d_history", bpy.props.PointerProperty(type=properties.ImageTo3DHistory))
    history_ui.register()
    bpy.types.VIEW3D_MT_add.append(operators.menu_entry)  # type: ignore[arg-type]
    _STATE["active"] = True


def unregister() -> None:
    if not _STATE["active"]:
        return
    operators.cancel_running_job()
    bpy.types.VIEW3D_MT_add.remove(operators.menu_entry)  # type: ignore[arg-type]
    history_ui.unregister()
    delattr(bpy.types.WindowManager, "image_to_3d_history")
    delattr(bpy.types.Scene, "image_to_3d")
    _unregister_classes()
    _STATE["active"] = False
    _hand_over()


def _hand_over() -> None:
    """With both installs enabled, the idle one takes over when the active one is disabled, so
    there is always exactly one set of operators, panels and Add-menu entry."""
    for name in bpy.context.preferences.addons.keys():
        module = sys.modules.get(name)
        if name != __name__ and name.endswith("image_to_3d") and module is not None and hasattr(module, "_STATE"):
            module.register()
            return
