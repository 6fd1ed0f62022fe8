"""The "Image to 3D" tab in the 3D Viewport's sidebar (N panel).

It shows the image Generate will use (by the same rule as the operator), its thumbnail, the
per-scene options, and while a request runs its stage and elapsed time with a Cancel button.
"""

from __future__ import annotations

import bpy

from .image_source import choose_source
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

        box = layout.box()
        choice = choose_source(context)
        if choice is None:
            box.label(text="No image: select a reference image", icon="INFO")
            box.label(text="or choose one below")
        elif choice.image is None:
            box.label(text=f"File: {bpy.path.basename(choice.path)}", icon="FILE_IMAGE")
        else:
            if choice.kind == "reference":
                box.label(text=f"Reference image: {choice.image.name}", icon="IMAGE_REFERENCE")
            else:
                box.label(text=f"Image: {choice.image.name}", icon="IMAGE_DATA")
            choice.image.preview_ensure()
            box.template_icon(icon_value=choice.image.preview.icon_id, scale=6.0)
        column = layout.column()
        column.template_ID(settings, "image", new="image.new", open="image.open")
        column.prop(settings, "filepath", text="")

        column = layout.column(align=True)
        column.use_property_split = True
        column.use_property_decorate = False
        column.prop(settings, "remove_background")
        column.prop(settings, "foreground_ratio", slider=True)
        column.prop(settings, "resolution")
        column.prop(settings, "target_faces")

        job = CURRENT.get("generate")
        if job is not None:
            layout.label(text=job.status(), icon="TIME")
            layout.operator("image_to_3d.cancel", icon="CANCEL")
        else:
            layout.operator("image_to_3d.generate", icon="MESH_MONKEY")
