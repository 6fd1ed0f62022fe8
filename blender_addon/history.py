"""The history of results: each GLB kept in a cache folder with the image sent and what made it.

Pure Python (no bpy): the folder is given (Blender's user data for the add-on, history_ui.py).
Per result `<key>.glb`, `<key>.input.<png|jpg|webp>` (the picture sent, shown as its thumbnail)
and `<key>.json` (name, source, settings, request id, date, counts). Adding one removes the
oldest results until the folder is under its size limit; the newest is always kept.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from .client import sniff_content_type

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def add(folder: str, glb: bytes, image: bytes, record: dict[str, Any], limit_bytes: int) -> str:
    """Store one result and return its key; then trim the folder to `limit_bytes`."""
    os.makedirs(folder, exist_ok=True)
    key = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
    extension = EXTENSIONS.get(sniff_content_type(image) or "", "png")
    _write(os.path.join(folder, f"{key}.glb"), glb)
    _write(os.path.join(folder, f"{key}.input.{extension}"), image)
    record = {**record, "key": key, "created": time.time(), "input": f"{key}.input.{extension}"}
    _write(os.path.join(folder, f"{key}.json"), json.dumps(record, indent=1).encode())  # last: marks it complete
    trim(folder, limit_bytes)
    return key


def entries(folder: str) -> list[dict[str, Any]]:
    """Every complete result in the folder, newest first."""
    if not os.path.isdir(folder):
        return []
    records = []
    for name in os.listdir(folder):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and os.path.isfile(os.path.join(folder, f"{record.get('key')}.glb")):
            records.append(record)
    return sorted(records, key=lambda r: (r.get("created", 0), r.get("key", "")), reverse=True)


def glb_path(folder: str, key: str) -> str:
    return os.path.join(folder, f"{key}.glb")


def input_path(folder: str, record: dict[str, Any]) -> str:
    return os.path.join(folder, str(record.get("input", "")))


def delete(folder: str, key: str) -> None:
    """Remove one result's files (missing ones are fine)."""
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(key + "."):
            os.remove(os.path.join(folder, name))


def size(folder: str) -> int:
    if not os.path.isdir(folder):
        return 0
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


def trim(folder: str, limit_bytes: int) -> list[str]:
    """Delete the oldest results until the folder holds at most `limit_bytes`; returns their keys."""
    removed = []
    records = entries(folder)
    while len(records) > 1 and size(folder) > limit_bytes:
        oldest = records.pop()
        delete(folder, oldest["key"])
        removed.append(oldest["key"])
    return removed


def _write(path: str, data: bytes) -> None:
    partial = path + ".part"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)
