"""Add-on preferences: where the server is, how to authenticate, how much history to keep.

The token lives in the add-on preferences (saved with Blender's user preferences), never in the
.blend file, so sharing a scene never shares the token.
"""

from __future__ import annotations

import bpy
from bpy.props import FloatProperty, IntProperty, StringProperty

from .client import is_loopback

PACKAGE = __package__ or "image_to_3d"


class ImageTo3DPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    endpoint: StringProperty(  # type: ignore[valid-type]
        name="Endpoint",
        description="URL of the image-to-3d server: the local `image-to-3d serve`, or your Modal URL",
        default="http://127.0.0.1:8000",
    )
    token: StringProperty(  # type: ignore[valid-type]
        name="Access token",
        description="Bearer token the server expects (IMAGE_TO_3D_TOKEN); leave empty for a local server",
        subtype="PASSWORD",
        default="",
    )
    timeout: FloatProperty(  # type: ignore[valid-type]
        name="Timeout (s)",
        description="How long to wait for one mesh, including a cold GPU warming up and busy retries",
        default=300.0,
        min=5.0,
        max=3600.0,
    )
    history_limit_mb: IntProperty(  # type: ignore[valid-type]
        name="History size (MB)",
        description="Keep recent results (their meshes and pictures) up to this size; the oldest go first",
        default=500,
        min=1,
        max=100_000,
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "endpoint")
        layout.prop(self, "token")
        layout.prop(self, "timeout")
        layout.prop(self, "history_limit_mb")
        if not bpy.app.online_access and not is_loopback(self.endpoint):
            layout.label(text="Online access is off: enable it in System > Network for this endpoint", icon="ERROR")
        layout.operator("image_to_3d.test_connection", icon="URL")


def get_preferences(context: bpy.types.Context) -> ImageTo3DPreferences:
    return context.preferences.addons[PACKAGE].preferences  # type: ignore[return-value]
