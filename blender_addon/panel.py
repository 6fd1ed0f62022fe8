"""The "Image to 3D" tab in the 3D Viewport's sidebar (N panel), and its History sub-panel.

It shows what Generate will use (by the same rule as the operator: one image with its thumbnail,
or how many a batch holds), the per-scene options, and while a batch runs its progress ("2 of 5")
with a Cancel button. The history lists the kept results with Re-import and Delete.
"""

from __future__ import annotations

import bpy

from .image_source import choose_sources
from .operators import CURRENT


class VIEW3D_PT_image_to_3d(bpy.types.Panel):
    bl_label = "Image to 3D"
    bl_idname = "VIEW3D_PT_image_to_3d"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Image to 3D"
    bl_ui_units_x = 15  # its width as a popover (wm.call_panel), wide enough for the option labels

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.image_to_3d

        box = layout.box()
        choices = choose_sources(context)
        if not choices:
            box.label(text="No image: select a reference image", icon="INFO")
            box.label(text="or choose an image, file or folder below")
        elif len(choices) > 1:
            kind = "reference images" if choices[0].kind == "reference" else "images in the folder"
            box.label(text=f"{len(choices)} {kind}: one after another", icon="RENDERLAYERS")
            for choice in choices[:5]:
                box.label(text=choice.label, icon="IMAGE_REFERENCE" if choice.kind == "reference" else "FILE_IMAGE")
            if len(choices) > 5:
                box.label(text=f"and {len(choices) - 5} more")
        elif choices[0].image is None:
            box.label(text=f"File: {bpy.path.basename(choices[0].path)}", icon="FILE_IMAGE")
        else:
            choice = choices[0]
            image = choice.image
            assert image is not None
            if choice.kind == "reference":
                box.label(text=f"Reference '{choice.reference_object}': {image.name}", icon="IMAGE_REFERENCE")
            else:
                box.label(text=f"Image: {image.name}", icon="IMAGE_DATA")
            image.preview_ensure()
            box.template_icon(icon_value=image.preview.icon_id, scale=6.0)
        column = layout.column()
        column.template_ID(settings, "image", new="image.new", open="image.open")
        column.prop(settings, "filepath", text="")
        column.prop(settings, "folder", text="")

        column = layout.column(align=True)
        column.use_property_split = True
        column.use_property_decorate = False
        column.prop(settings, "remove_background")
        column.prop(settings, "foreground_ratio", slider=True)
        column.prop(settings, "resolution")
        column.prop(settings, "target_faces")
        column.prop(settings, "texture_size")
        column.separator()
        column.prop(settings, "placement")
        column.prop(settings, "height")

        batch = CURRENT.get("generate")
        if batch is not None:
            layout.label(text=batch.status(), icon="TIME")
            layout.operator("image_to_3d.cancel", icon="CANCEL")
        else:
            layout.operator("image_to_3d.generate", icon="MESH_MONKEY")


class IMAGE_TO_3D_UL_history(bpy.types.UIList):
    def draw_item(
        self,
        context: bpy.types.Context | None,
        layout: bpy.types.UILayout,
        data: object | None,
        item: object | None,
        icon: int | None,
        active_data: object,
        active_property: str | None,
        index: int | None = 0,
        flt_flag: int | None = 0,
    ) -> None:
        entry = item
        row = layout.row(align=True)
        row.label(text=getattr(entry, "name", ""), icon_value=getattr(entry, "icon_id", 0) or 0)
        row.label(text=getattr(entry, "summary", ""))


class VIEW3D_PT_image_to_3d_history(bpy.types.Panel):
    bl_label = "History"
    bl_idname = "VIEW3D_PT_image_to_3d_history"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Image to 3D"
    bl_parent_id = "VIEW3D_PT_image_to_3d"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        state = getattr(context.window_manager, "image_to_3d_history")
        if not len(state.entries):
            layout.label(text="Results are kept here for re-import", icon="INFO")
            return
        layout.template_list("IMAGE_TO_3D_UL_history", "", state, "entries", state, "index", rows=4)
        row = layout.row(align=True)
        row.operator("image_to_3d.history_import", icon="IMPORT")
        row.operator("image_to_3d.history_delete", icon="TRASH", text="Delete")
        if 0 <= state.index < len(state.entries):
            entry = state.entries[state.index]
            layout.template_icon(icon_value=entry.icon_id, scale=4.0)
