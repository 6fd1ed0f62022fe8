"""The history's Blender side: where the cache folder is, and the panel list that mirrors it.

The folder is the add-on's user data (`bpy.utils.extension_path_user` for an extension, Blender's
user `datafiles/image_to_3d` for a legacy install), never next to the .blend. The list on the
window manager (not saved in files) is refilled from the folder after every change and when a
file is loaded; thumbnails are previews of the stored input pictures.
"""

from __future__ import annotations

import os
from typing import Any

import bpy
import bpy.utils.previews
from bpy.app.handlers import persistent

from . import history
from .preferences import PACKAGE

PREVIEWS: dict[str, Any] = {}  # "collection": the bpy.utils.previews collection while registered


def folder() -> str:
    """The cache folder, created if missing."""
    if PACKAGE.startswith("bl_ext."):
        return bpy.utils.extension_path_user(PACKAGE, path="history", create=True)
    return bpy.utils.user_resource("DATAFILES", path=os.path.join("image_to_3d", "history"), create=True)


def record_for(key: str) -> dict[str, Any] | None:
    return next((r for r in history.entries(folder()) if r.get("key") == key), None)


def summary(record: dict[str, Any]) -> str:
    """'2026-12-03 04:10 · 1,234 faces · resolution 256': what the list shows under the name."""
    when = str(record.get("date", ""))[:16].replace("T", " ")
    faces = record.get("faces")
    resolution = record.get("settings", {}).get("resolution")
    return " · ".join(
        part
        for part in (when, f"{faces:,} faces" if faces else "", f"resolution {resolution}" if resolution else "")
        if part
    )


def sync(window_manager: bpy.types.WindowManager | None) -> None:
    """Refill the panel's list from the cache folder (main thread)."""
    state = getattr(window_manager, "image_to_3d_history")
    previews = PREVIEWS.get("collection")
    records = history.entries(folder())
    state.entries.clear()
    for record in records:
        item = state.entries.add()
        item.name = str(record.get("name", "?"))
        item.key = str(record.get("key", ""))
        item.summary = summary(record)
        path = history.input_path(folder(), record)
        if previews is not None and os.path.isfile(path):
            preview = previews.get(item.key) or previews.load(item.key, path, "IMAGE")
            item.icon_id = preview.icon_id
    state.index = min(state.index, max(len(records) - 1, 0))


def sync_all() -> None:
    for window_manager in bpy.data.window_managers:
        sync(window_manager)


@persistent
def _on_load(_: Any) -> None:
    sync_all()


def _first_sync() -> None:
    sync_all()  # a timer: register() may not touch bpy.data


def register() -> None:
    PREVIEWS["collection"] = bpy.utils.previews.new()
    bpy.app.handlers.load_post.append(_on_load)
    bpy.app.timers.register(_first_sync, first_interval=0.0)


def unregister() -> None:
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)
    if bpy.app.timers.is_registered(_first_sync):
        bpy.app.timers.unregister(_first_sync)
    collection = PREVIEWS.pop("collection", None)
    if collection is not None:
        bpy.utils.previews.remove(collection)
