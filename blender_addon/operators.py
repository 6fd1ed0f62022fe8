"""Operators: generate a mesh from the chosen image, cancel it, test the connection.

From the UI the HTTP request runs in a background thread and a modal timer watches it, so Blender
never freezes; only the main thread touches Blender data (the import happens in the timer tick).
From a script, or with Blender in background mode, the operators run to completion before they
return. `GenerateJob` and `advance` hold the logic; the modal operator only feeds them timer ticks
and Esc, so scripts and tests can drive the same code.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import bpy

from .client import Cancelled, Client, ClientError, ConnectionReport, GenerateResult, UPLOADING, is_loopback
from .image_source import NoImageError, SourceImage, find_source
from .importer import import_glb
from .preferences import get_preferences
from .properties import request_options

Result = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]
IMPORTING = "importing"
TIMER_STEP_S = 0.1
CURRENT: dict[str, GenerateJob] = {}  # the running job, under the key "generate" (one at a time)


def make_client(context: bpy.types.Context) -> Client:
    """A client for the preferences' endpoint, if Blender's online-access setting allows it."""
    prefs = get_preferences(context)
    endpoint = prefs.endpoint.strip()
    if not bpy.app.online_access and not is_loopback(endpoint):
        if bpy.app.online_access_override:
            raise ClientError(
                f"Blender was started offline (--offline-mode), so {endpoint} cannot be reached. Restart "
                "Blender without it, or use a server on this machine (http://127.0.0.1:8000)."
            )
        raise ClientError(
            f"Blender's online access is off, so {endpoint} cannot be reached. Enable Preferences > System > "
            "Network > Allow Online Access, or use a server on this machine (http://127.0.0.1:8000)."
        )
    return Client(endpoint, prefs.token, prefs.timeout)


class GenerateJob:
    """One request: the worker thread writes `stage`, `fraction`, `result` and `error`; nothing else."""

    def __init__(self, client: Client, source: SourceImage, options: dict[str, object]) -> None:
        self.client = client
        self.source = source
        self.options = options
        self.started = time.monotonic()
        self.stage = UPLOADING
        self.fraction: float | None = None
        self.result: GenerateResult | None = None
        self.error: str | None = None
        self.cancel = threading.Event()
        self.done = threading.Event()

    @classmethod
    def from_context(cls, context: bpy.types.Context) -> GenerateJob:
        """Read everything the request needs now; raises ClientError or NoImageError."""
        client = make_client(context)
        return cls(client, find_source(context), request_options(context.scene.image_to_3d))

    def run(self) -> None:
        """The request itself (worker thread, or the caller's thread in execute): no bpy here."""

        def progress(stage: str, fraction: float | None) -> None:
            self.stage, self.fraction = stage, fraction

        try:
            self.result = self.client.generate(self.source.data, self.options, progress=progress, cancel=self.cancel)
        except ClientError as error:
            self.error = error.message
        except Exception as error:  # a bug must still end the job rather than leave the UI waiting
            self.error = f"Unexpected error in the Image to 3D add-on: {error!r}"
        finally:
            self.done.set()

    def start(self) -> None:
        threading.Thread(target=self.run, name="image-to-3d generate", daemon=True).start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def status(self) -> str:
        """'uploading 40% (3 s)': the stage and the elapsed time, for the status bar and the panel."""
        percent = f" {self.fraction * 100:.0f}%" if self.fraction is not None else ""
        return f"{self.stage}{percent} ({self.elapsed():.0f} s)"


@dataclass
class Outcome:
    result: Result
    level: str  # the report type: INFO, WARNING or ERROR
    message: str


def advance(context: bpy.types.Context, job: GenerateJob) -> Outcome | None:
    """One main-thread step: None while the job runs, else how it ended (the mesh imported or not).

    A finished download is imported one step later, so "importing" is shown while it happens.
    """
    if job.cancel.is_set():
        return Outcome({"CANCELLED"}, "WARNING", Cancelled().message)
    if not job.done.is_set():
        return None
    if job.error is None and job.stage != IMPORTING:
        job.stage, job.fraction = IMPORTING, None
        return None
    return finish(context, job)


def finish(context: bpy.types.Context, job: GenerateJob) -> Outcome:
    """Import the finished job's mesh (main thread), or turn its error into an outcome."""
    if job.error is not None or job.result is None:
        return Outcome({"CANCELLED"}, "ERROR", job.error or "The server sent no mesh.")
    job.stage = IMPORTING
    try:
        obj = import_glb(context, job.result.glb, job.source.name)
    except Exception as error:
        return Outcome({"CANCELLED"}, "ERROR", f"Could not import the mesh the server sent: {error}")
    remember_reference(context, job.source)
    faces = len(obj.data.polygons)
    return Outcome({"FINISHED"}, "INFO", f"Created '{obj.name}' ({faces:,} faces) in {job.elapsed():.1f} s.")


def remember_reference(context: bpy.types.Context, source: SourceImage) -> None:
    """After a mesh made from a reference Empty (now deselected), an empty image slot in the panel
    takes that image, so pressing Generate again (say, at another resolution) uses it again."""
    settings = context.scene.image_to_3d
    image = bpy.data.images.get(source.reference_image) if source.reference_image else None
    if image is not None and settings.image is None:
        settings.image = image


class IMAGE_TO_3D_OT_generate(bpy.types.Operator):
    """Turn the selected reference image (or the panel's image) into a vertex-coloured mesh at the 3D cursor"""

    bl_idname = "image_to_3d.generate"
    bl_label = "Generate 3D from Image"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if "generate" in CURRENT:
            cls.poll_message_set("A mesh is being generated; wait for it or cancel it first.")
            return False
        return context.scene is not None

    def _job(self, context: bpy.types.Context) -> GenerateJob | None:
        try:
            return GenerateJob.from_context(context)
        except (ClientError, NoImageError) as error:
            self.report({"ERROR"}, error.message)
            return None

    def execute(self, context: bpy.types.Context) -> Result:
        job = self._job(context)
        if job is None:
            return {"CANCELLED"}
        job.run()
        return self._report(finish(context, job))

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        if bpy.app.background:
            return self.execute(context)
        job = self._job(context)
        if job is None:
            return {"CANCELLED"}
        CURRENT["generate"] = job
        job.start()
        self._running = job
        self._workspace = context.workspace
        self._timer = context.window_manager.event_timer_add(TIMER_STEP_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        self._show(context, job)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        job = self._running
        if CURRENT.get("generate") is not job or (event.type == "ESC" and event.value == "PRESS"):
            job.cancel.set()  # the Cancel button, Esc, or another file being opened
        if event.type not in ("TIMER", "ESC") and not job.cancel.is_set():
            return {"PASS_THROUGH"}
        outcome = advance(context, job)
        if outcome is None:
            self._show(context, job)
            return {"PASS_THROUGH"}
        self._end(context)
        return self._report(outcome)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal without us (a file is opened, the window closes): stop waiting."""
        self._running.cancel.set()
        self._end(context)

    def _show(self, context: bpy.types.Context, job: GenerateJob) -> None:
        set_status_text(self._workspace, f"Image to 3D: {job.status()} (Esc to cancel)")
        redraw_sidebars(context)

    def _end(self, context: bpy.types.Context) -> None:
        if CURRENT.get("generate") is self._running:
            del CURRENT["generate"]
        context.window_manager.event_timer_remove(self._timer)
        set_status_text(self._workspace, None)
        redraw_sidebars(context)

    def _report(self, outcome: Outcome) -> Result:
        self.report({outcome.level}, outcome.message)  # type: ignore[arg-type]
        return outcome.result


class IMAGE_TO_3D_OT_cancel(bpy.types.Operator):
    """Stop waiting for the mesh being generated; nothing is imported"""

    bl_idname = "image_to_3d.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return "generate" in CURRENT

    def execute(self, context: bpy.types.Context) -> Result:
        cancel_running_job()
        return {"FINISHED"}


def cancel_running_job() -> None:
    """Cancel the running job, if any; its modal operator notices on its next tick."""
    job = CURRENT.pop("generate", None)
    if job is not None:
        job.cancel.set()


class IMAGE_TO_3D_OT_test_connection(bpy.types.Operator):
    """Ask the server's /v1/health (this also wakes a cold GPU) and check the access token"""

    bl_idname = "image_to_3d.test_connection"
    bl_label = "Test Connection"

    def execute(self, context: bpy.types.Context) -> Result:
        try:
            report = make_client(context).test_connection()
        except ClientError as error:
            report = ConnectionReport(False, "unreachable", error.message)
        return self._report(report)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        if bpy.app.background:
            return self.execute(context)
        try:
            client = make_client(context)
        except ClientError as error:
            return self._report(ConnectionReport(False, "unreachable", error.message))
        self._answer: list[ConnectionReport] = []
        threading.Thread(target=self._ask, args=(client,), name="image-to-3d health", daemon=True).start()
        self._workspace = context.workspace
        set_status_text(self._workspace, f"Image to 3D: asking {client.endpoint}/v1/health …")
        self._timer = context.window_manager.event_timer_add(TIMER_STEP_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _ask(self, client: Client) -> None:
        try:
            self._answer.append(client.test_connection())
        except ClientError as error:
            self._answer.append(ConnectionReport(False, "unreachable", error.message))
        except Exception as error:
            self._answer.append(ConnectionReport(False, "unreachable", f"Unexpected error: {error!r}"))

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        if not self._answer:
            return {"PASS_THROUGH"}
        self.cancel(context)
        return self._report(self._answer[0])

    def cancel(self, context: bpy.types.Context) -> None:
        context.window_manager.event_timer_remove(self._timer)
        set_status_text(self._workspace, None)

    def _report(self, report: ConnectionReport) -> Result:
        self.report({"INFO" if report.ok else "ERROR"}, report.message)
        return {"FINISHED"} if report.ok else {"CANCELLED"}


def set_status_text(workspace: bpy.types.WorkSpace | None, text: str | None) -> None:
    """The status bar's text (None gives the bar back); a window may have no workspace to show it."""
    if workspace is not None:
        workspace.status_text_set(text)


def redraw_sidebars(context: bpy.types.Context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def menu_entry(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.operator(IMAGE_TO_3D_OT_generate.bl_idname, icon="IMAGE_REFERENCE")
