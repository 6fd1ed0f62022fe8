"""The "Image to 3D" tab in the 3D Viewport's sidebar (N panel)."""

from __future__ import annotations

import bpy

from .operators import CURRENT


class VIEW3D_PT_image_to_3d(bpy.types.Panel):
    bl_label = "Image to 3D"
    bl_idname = "VIEW3D_PT_image_to_3d"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Image to 3D"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.image_to_3d
        active = context.active_object
        if active is not None and active.type == "EMPTY" and active.empty_display_type == "IMAGE" and active.data:
            layout.label(text=f"Reference: {active.data.name}", icon="IMAGE_REFERENCE")
            image = active.data
        else:
            layout.template_ID(settings, "image", open="image.open")
            layout.prop(settings, "filepath")
            image = settings.image
        if image is not None:
            image.preview_ensure()
            layout.template_icon(icon_value=image.preview.icon_id, scale=6.0)

        column = layout.column(align=True)
        column.prop(settings, "remove_background")
        column.prop(settings, "foreground_ratio", slider=True)
        column.prop(settings, "resolution")
        column.prop(settings, "target_faces")

        if "job" in CURRENT:
            layout.label(text=settings.status or "working…", icon="TIME")
            layout.operator("image_to_3d.cancel", icon="CANCEL")
        else:
            layout.operator("image_to_3d.generate", icon="MESH_MONKEY")
