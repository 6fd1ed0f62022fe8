"""Operators: generate a mesh from the chosen image, cancel it, test the connection.

From the UI the request runs in a background thread and a modal timer watches it, so Blender never
freezes; only the main thread touches Blender data (the import happens in the modal callback).
From a script, or with Blender in background mode, the operator runs to completion before it returns.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import bpy

from .client import Cancelled, Client, ClientError, is_loopback
from .image_source import NoImageError, SourceImage, find_source
from .importer import import_glb
from .preferences import get_preferences


@dataclass
class Job:
    """One request in flight; the worker thread writes `stage`, `result` and `error`."""

    source: SourceImage
    started: float = field(default_factory=time.monotonic)
    stage: str = "connecting"
    result: bytes | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


Result = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]
CURRENT: dict[str, Job] = {}  # at most one job, under the key "job"


def make_client(context: bpy.types.Context) -> Client:
    prefs = get_preferences(context)
    endpoint = prefs.endpoint.strip()
    if not getattr(bpy.app, "online_access", True) and not is_loopback(endpoint):
        raise ClientError(
            f"Blender's online access is off, so {endpoint} cannot be reached. Enable Preferences > System > "
            "Network > Allow Online Access, or use a local endpoint such as http://127.0.0.1:8000."
        )
    return Client(endpoint, prefs.token, prefs.timeout)


def run_job(client: Client, job: Job, options: dict[str, object]) -> None:
    """The worker: no Blender data is touched here."""
    def progress(stage: str) -> None:
        job.stage = stage

    try:
        job.result = client.generate(job.source.data, options, progress=progress, cancel=job.cancel)
    except ClientError as error:
        job.error = error.message
    except Exception as error:  # an unexpected bug must still end the job, not hang the UI
        job.error = f"Unexpected error: {error}"
    finally:
        job.done.set()


class IMAGE_TO_3D_OT_generate(bpy.types.Operator):
    """Turn the selected reference image (or the panel's image) into a vertex-coloured mesh at the 3D cursor"""

    bl_idname = "image_to_3d.generate"
    bl_label = "Generate 3D from Image"
    bl_options = {"REGISTER", "UNDO"}

    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and "job" not in CURRENT

    def _start(self, context: bpy.types.Context) -> tuple[Client, Job] | None:
        try:
            client = make_client(context)
            source = find_source(context)
        except (ClientError, NoImageError) as error:
            self.report({"ERROR"}, getattr(error, "message", str(error)))
            return None
        return client, Job(source)

    def execute(self, context: bpy.types.Context) -> Result:
        started = self._start(context)
        if started is None:
            return {"CANCELLED"}
        client, job = started
        run_job(client, job, context.scene.image_to_3d.request_options())
        return self._finish(context, job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        if bpy.app.background:
            return self.execute(context)
        started = self._start(context)
        if started is None:
            return {"CANCELLED"}
        client, job = started
        CURRENT["job"] = job
        options = context.scene.image_to_3d.request_options()
        threading.Thread(target=run_job, args=(client, job, options), name="image-to-3d", daemon=True).start()
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        job = CURRENT.get("job")
        if job is None:
            return self._stop(context, {"CANCELLED"})
        if event.type == "ESC":
            job.cancel.set()
            self.report({"WARNING"}, "Image to 3D cancelled; nothing was imported.")
            return self._stop(context, {"CANCELLED"})
        if event.type == "TIMER":
            text = f"Image to 3D: {job.stage}… {job.elapsed():.0f} s (Esc to cancel)"
            context.scene.image_to_3d.status = f"{job.stage} ({job.elapsed():.0f} s)"
            context.workspace.status_text_set(text)
            _redraw_sidebars(context)
            if job.done.is_set():
                if job.cancel.is_set():
                    return self._stop(context, {"CANCELLED"})
                return self._stop(context, self._finish(context, job))
        return {"PASS_THROUGH"}

    def _stop(self, context: bpy.types.Context, result: Result) -> Result:
        CURRENT.pop("job", None)
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        context.scene.image_to_3d.status = ""
        _redraw_sidebars(context)
        return result

    def _finish(self, context: bpy.types.Context, job: Job) -> Result:
        if job.error is not None or job.result is None:
            self.report({"ERROR"}, job.error or "The server sent no mesh.")
            return {"CANCELLED"}
        job.stage = "importing"
        try:
            obj = import_glb(context, job.result, job.source.name)
        except Exception as error:
            self.report({"ERROR"}, f"Could not import the mesh: {error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Created '{obj.name}' ({len(obj.data.polygons)} faces) in {job.elapsed():.1f} s")
        return {"FINISHED"}


class IMAGE_TO_3D_OT_cancel(bpy.types.Operator):
    """Stop waiting for the current mesh; nothing is imported"""

    bl_idname = "image_to_3d.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return "job" in CURRENT

    def execute(self, context: bpy.types.Context) -> Result:
        job = CURRENT.get("job")
        if job is not None:
            job.cancel.set()
            CURRENT.pop("job", None)
        return {"FINISHED"}


class IMAGE_TO_3D_OT_test_connection(bpy.types.Operator):
    """Ask the server's /v1/health (this also wakes a cold GPU) and report what it says"""

    bl_idname = "image_to_3d.test_connection"
    bl_label = "Test Connection"

    def execute(self, context: bpy.types.Context) -> Result:
        try:
            health = make_client(context).health()
        except ClientError as error:
            self.report({"ERROR"}, error.message)
            return {"CANCELLED"}
        status = health.get("status")
        where = f"{health.get('model')} on {health.get('device')}, server {health.get('version')}"
        if status == "ready":
            self.report({"INFO"}, f"Connected: ready ({where}).")
        elif status == "loading":
            self.report({"INFO"}, f"Connected: the GPU is warming up, the model is loading ({where}).")
        else:
            self.report({"WARNING"}, f"Connected, but the server reports '{status}': {health.get('error', '')}")
        return {"FINISHED"}


def _redraw_sidebars(context: bpy.types.Context) -> None:
    for area in getattr(context.screen, "areas", []):
        if area.type == "VIEW_3D":
            area.tag_redraw()


def menu_entry(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.operator(IMAGE_TO_3D_OT_generate.bl_idname, icon="IMAGE_REFERENCE")
