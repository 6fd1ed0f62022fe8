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

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(
    (
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
)


def register() -> None:
    _register_classes()
    setattr(bpy.types.Scene, "image_to_3d", bpy.props.PointerProperty(type=properties.ImageTo3DSettings))
    setattr(bpy.types.WindowManager, "image_to_3d_history", bpy.props.PointerProperty(type=properties.ImageTo3DHistory))
    history_ui.register()
    if not _menu_entries():  # installed both ways at once: the first one enabled keeps the entry
        bpy.types.VIEW3D_MT_add.append(operators.menu_entry)  # type: ignore[arg-type]


def unregister() -> None:
    operators.cancel_running_job()
    if operators.menu_entry in _menu_entries():
        bpy.types.VIEW3D_MT_add.remove(operators.menu_entry)  # type: ignore[arg-type]
        _hand_menu_entry_on()
    history_ui.unregister()
    delattr(bpy.types.WindowManager, "image_to_3d_history")
    delattr(bpy.types.Scene, "image_to_3d")
    _unregister_classes()


def _menu_entries() -> list[object]:
    """This add-on's entries in the Add menu, whichever install (extension or legacy) added them."""
    draw_functions: list[object] = getattr(bpy.types.VIEW3D_MT_add, "_dyn_ui_initialize", lambda: [])()
    return [f for f in draw_functions if getattr(f, "__qualname__", "") == "menu_entry"
            and str(getattr(f, "__module__", "")).endswith("image_to_3d.operators")]


def _hand_menu_entry_on() -> None:
    """If the add-on's other install is still enabled, its entry takes the place of ours."""
    for name, module in list(sys.modules.items()):
        if name.endswith("image_to_3d.operators") and module is not operators and hasattr(module, "menu_entry"):
            if name.removesuffix(".operators") in bpy.context.preferences.addons:
                bpy.types.VIEW3D_MT_add.append(module.menu_entry)
                return
