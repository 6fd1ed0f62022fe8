"""Operators: generate meshes from the chosen images (one, or a batch), cancel, test the
connection, and re-import or delete a result from the history.

From the UI the HTTP request runs in a background thread and a modal timer watches it, so Blender
never freezes; only the main thread touches Blender data (it copies pixels out and imports the
mesh; downscaling, encoding and the HTTP exchange happen in the worker). From a script, or with
Blender in background mode, the operators run to completion before they return. `Batch` and
`advance` hold the logic; the modal operator only feeds them timer ticks and Esc, so scripts and
tests can drive the same code. Each imported result is one undo step of its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import bpy
from mathutils import Vector

from . import history, history_ui
from .client import Cancelled, Client, ClientError, ConnectionReport, GenerateResult, is_loopback
from .image_source import NoImageError, SourceChoice, SourceImage, choose_sources, no_image_error, prepare
from .importer import Placement, import_glb
from .preferences import get_preferences
from .properties import option_words, request_options
from .wording import in_panel_words

Result = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]
PREPARING = "preparing the image"
IMPORTING = "importing"
TIMER_STEP_S = 0.1
BATCH_GAP = 0.2  # Blender units between results placed in a row or beside their reference
CURRENT: dict[str, Batch] = {}  # the running batch, under the key "generate" (one at a time)


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


def panel_words(message: str) -> str:
    return in_panel_words(message, option_words())


class GenerateJob:
    """One image's request: the worker thread writes `stage`, `fraction`, `result`, `error`, `sent`."""

    def __init__(
        self, client: Client, source: SourceImage, options: dict[str, object], cancel: threading.Event | None = None
    ) -> None:
        self.client = client
        self.source = source
        self.options = options
        self.started = time.monotonic()
        self.stage = PREPARING
        self.fraction: float | None = None
        self.result: GenerateResult | None = None
        self.error: str | None = None
        self.sent = b""  # the bytes uploaded (downscaled and encoded in the worker)
        self.worker_thread = ""  # the thread that encoded and sent them
        self.cancel = cancel or threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        """Encode and send (worker thread, or the caller's thread in execute): no bpy here."""

        def progress(stage: str, fraction: float | None) -> None:
            self.stage, self.fraction = stage, fraction

        try:
            self.worker_thread = threading.current_thread().name
            self.sent = self.source.encoded()
            self.result = self.client.generate(self.sent, self.options, progress=progress, cancel=self.cancel)
        except ClientError as error:
            self.error = error.message  # put in the panel's words on the main thread (RNA is read there)
        except Exception as error:  # a bug must still end the job rather than leave the UI waiting
            self.error = f"Unexpected error in the Image to 3D add-on: {error!r}"
        finally:
            self.done.set()

    def start(self) -> None:
        threading.Thread(target=self.run, name="image-to-3d generate", daemon=True).start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def status(self) -> str:
        """'uploading 40% (3 s)': the stage and the elapsed time."""
        percent = f" {self.fraction * 100:.0f}%" if self.fraction is not None else ""
        return f"{self.stage}{percent} ({self.elapsed():.0f} s)"


@dataclass
class Outcome:
    result: Result
    level: str  # the report type: INFO, WARNING or ERROR
    message: str


@dataclass
class Batch:
    """The images of one Generate press, made one after another (a single image is a batch of one)."""

    client: Client
    choices: list[SourceChoice]
    options: dict[str, object]
    placement: str
    height_m: float
    wait: bool = False  # run each request in the caller's thread (scripts, background mode)
    cancel: threading.Event = field(default_factory=threading.Event)
    job: GenerateJob | None = None  # the request under way
    last: GenerateJob | None = None  # the request finished last
    position: int = 0  # how many choices were taken from the queue
    made: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    collection: str = ""  # the batch's collection, made with its first result
    row_x: float | None = None  # where the next result of a row goes (folder batches)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def from_context(cls, context: bpy.types.Context, wait: bool) -> Batch:
        """Read everything the requests need now; raises ClientError or NoImageError."""
        choices = choose_sources(context)
        if not choices:
            raise no_image_error(context)
        settings = context.scene.image_to_3d
        return cls(
            make_client(context), choices, request_options(settings), settings.placement, settings.height, wait=wait
        )

    @property
    def several(self) -> bool:
        return len(self.choices) > 1

    def status(self) -> str:
        """'2 of 12 · chair: uploading 40% (3 s)', or for one image 'reference 'Ref' (chair.png): ...'."""
        number = self.position if self.job is not None else min(self.position + 1, len(self.choices))
        choice = self.choices[number - 1]
        what = f"{number} of {len(self.choices)} · {choice.name}" if self.several else choice.label
        return f"{what}: {self.job.status() if self.job is not None else PREPARING}"


def advance(context: bpy.types.Context, batch: Batch) -> Outcome | None:
    """One main-thread step: None while the batch runs, else how it ended.

    A finished download is imported one step later, so "importing" is shown while it happens; each
    result is imported and pushed as its own undo step before the next image is prepared.
    """
    if batch.cancel.is_set():
        return _ending(batch, cancelled=True)
    job = batch.job
    if job is None:
        if batch.position >= len(batch.choices):
            return _ending(batch, cancelled=False)
        _start_next(context, batch)
        return None
    if not job.done.is_set():
        return None
    if job.error is None and job.stage != IMPORTING:
        job.stage, job.fraction = IMPORTING, None
        return None
    _finish_job(context, batch, job)
    batch.job, batch.last = None, job
    return None


def _start_next(context: bpy.types.Context, batch: Batch) -> None:
    choice = batch.choices[batch.position]
    batch.position += 1
    try:
        source = prepare(context, choice)
    except NoImageError as error:
        batch.failures.append(error.message if not batch.several else f"{choice.name}: {error.message}")
        return
    batch.job = GenerateJob(batch.client, source, batch.options, batch.cancel)
    if batch.wait:
        batch.job.run()
    else:
        batch.job.start()


def _finish_job(context: bpy.types.Context, batch: Batch, job: GenerateJob) -> None:
    """Import the finished job's mesh (main thread) as one undo step, or note its error."""
    name = job.source.name
    if job.error is not None or job.result is None:
        if job.error == Cancelled().message:
            return
        message = panel_words(job.error) if job.error else "The server sent no mesh."
        batch.failures.append(f"{name}: {message}" if batch.several else message)
        return
    job.stage = IMPORTING
    try:
        obj = import_glb(context, job.result.glb, name, _placement(context, batch, job.source))
    except Exception as error:
        message = f"Could not import the mesh the server sent: {error}"
        batch.failures.append(f"{name}: {message}" if batch.several else message)
        return
    if batch.several:
        _into_batch_collection(context, batch, obj)
        _beside(context, batch, obj, job.source)
    record = _record(job, batch)
    obj["image_to_3d"] = {k: record[k] for k in ("source", "settings", "request_id")}
    remember_reference(context, job.source)
    push_undo(f"Image to 3D: {obj.name}")
    batch.made.append(obj.name)
    try:
        prefs = get_preferences(context)
        history.add(history_ui.folder(), job.result.glb, job.sent, record, prefs.history_limit_mb * 1_000_000)
        history_ui.sync(context.window_manager)
    except OSError as error:  # a full disk must not undo the import
        batch.failures.append(f"{name}: made, but not kept in the history ({error})")


def _placement(context: bpy.types.Context, batch: Batch, source: SourceImage) -> Placement:
    """A single result goes to the cursor; a batch's beside its reference Empty, or in a row."""
    placement = Placement(batch.placement, batch.height_m)
    if not batch.several:
        return placement
    empty = bpy.data.objects.get(source.reference_object) if source.reference_object else None
    if empty is not None:
        width = empty.empty_display_size * max(empty.matrix_world.to_scale())
        placement.at = empty.matrix_world.translation + empty.matrix_world.to_3x3().normalized() @ Vector(
            (width / 2 + BATCH_GAP, 0.0, 0.0)
        )
        return placement
    cursor = context.scene.cursor.location
    x = cursor.x if batch.row_x is None else batch.row_x
    placement.at = Vector((x, cursor.y, cursor.z))
    return placement


def _into_batch_collection(context: bpy.types.Context, batch: Batch, obj: bpy.types.Object) -> None:
    """The batch's results share one collection inside the active one (looked up by name: undo
    replaces data-blocks)."""
    collection = bpy.data.collections.get(batch.collection) if batch.collection else None
    if collection is None:
        collection = bpy.data.collections.new("Image to 3D batch")
        context.collection.children.link(collection)
        batch.collection = collection.name
    for other in list(obj.users_collection):
        other.objects.unlink(obj)
    collection.objects.link(obj)


def _beside(context: bpy.types.Context, batch: Batch, obj: bpy.types.Object, source: SourceImage) -> None:
    """Move a batch result by half its width, so its side (not its middle) touches the placement
    point beside the reference or at the row's end; the next one in a row goes after it."""
    context.view_layer.update()
    half = obj.dimensions.x / 2
    empty = bpy.data.objects.get(source.reference_object) if source.reference_object else None
    if empty is not None:
        obj.location += empty.matrix_world.to_3x3().normalized() @ Vector((half, 0.0, 0.0))
        return
    obj.location.x += half
    batch.row_x = obj.location.x + half + BATCH_GAP


def _record(job: GenerateJob, batch: Batch) -> dict[str, Any]:
    result = job.result
    assert result is not None
    return {
        "name": job.source.name,
        "source": job.source.label + (f", {job.source.note}" if job.source.note else ""),
        "settings": {
            **{k: v for k, v in batch.options.items() if v is not None},
            "placement": batch.placement,
            "height_m": batch.height_m,
        },
        "request_id": result.request_id or "",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "vertices": result.vertices,
        "faces": result.faces,
        "sent_size": list(job.source.sent_size) if job.source.sent_size else None,
    }


def _ending(batch: Batch, cancelled: bool) -> Outcome:
    """The report at the end: what was made, what failed, what was cancelled."""
    elapsed = time.monotonic() - batch.started
    if not batch.several:
        if cancelled:
            return Outcome({"CANCELLED"}, "WARNING", Cancelled().message)
        if batch.failures:
            return Outcome({"CANCELLED"}, "ERROR", batch.failures[0])
        job = batch.last
        note = f" from {job.source.label}" if job and batch.choices[0].kind == "reference" else ""
        faces = _faces(batch.made[0]) if batch.made else 0
        extra = f"; {job.source.note} was used" if job and job.source.note else ""
        return Outcome(
            {"FINISHED"}, "INFO", f"Created '{batch.made[0]}'{note} ({faces:,} faces) in {elapsed:.1f} s{extra}."
        )
    total = len(batch.choices)
    text = f"Made {len(batch.made)} of {total} in {elapsed:.0f} s"
    if cancelled:
        text += f"; cancelled, {total - batch.position + (1 if batch.job else 0)} not made"
    if batch.failures:
        text += f"; {len(batch.failures)} failed: " + "; ".join(batch.failures)
    level = "INFO" if not batch.failures and not cancelled else ("ERROR" if not batch.made else "WARNING")
    return Outcome({"FINISHED"} if batch.made else {"CANCELLED"}, level, text + ".")


def _faces(name: str) -> int:
    obj = bpy.data.objects.get(name)
    return len(obj.data.polygons) if obj is not None and obj.type == "MESH" else 0


def push_undo(message: str) -> None:
    """One undo step for what was just made (Ctrl+Z removes exactly that result)."""
    bpy.ops.ed.undo_push(message=message)


def remember_reference(context: bpy.types.Context, source: SourceImage) -> None:
    """After a mesh made from a reference Empty (now deselected), an empty image slot in the panel
    takes that image, so pressing Generate again (say, at another resolution) uses it again."""
    settings = context.scene.image_to_3d
    image = bpy.data.images.get(source.reference_image) if source.reference_image else None
    if image is not None and settings.image is None:
        settings.image = image


def run_to_end(context: bpy.types.Context, batch: Batch) -> Outcome:
    while True:
        outcome = advance(context, batch)
        if outcome is not None:
            return outcome


class IMAGE_TO_3D_OT_generate(bpy.types.Operator):
    """Turn the selected reference images (or the panel's image, file or folder) into vertex-coloured meshes"""

    bl_idname = "image_to_3d.generate"
    bl_label = "Generate 3D from Image"
    bl_options = {"REGISTER"}  # each result pushes its own undo step

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if "generate" in CURRENT:
            cls.poll_message_set("A mesh is being generated; wait for it or cancel it first.")
            return False
        return context.scene is not None

    def _batch(self, context: bpy.types.Context, wait: bool) -> Batch | None:
        try:
            return Batch.from_context(context, wait)
        except (ClientError, NoImageError) as error:
            self.report({"ERROR"}, error.message)
            return None

    def execute(self, context: bpy.types.Context) -> Result:
        batch = self._batch(context, wait=True)
        if batch is None:
            return {"CANCELLED"}
        return self._report(run_to_end(context, batch))

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        if bpy.app.background:
            return self.execute(context)
        batch = self._batch(context, wait=False)
        if batch is None:
            return {"CANCELLED"}
        CURRENT["generate"] = batch
        self._running = batch
        self._workspace = context.workspace
        self._timer = context.window_manager.event_timer_add(TIMER_STEP_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        self._show(context, batch)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> Result:
        batch = self._running
        if CURRENT.get("generate") is not batch or (event.type == "ESC" and event.value == "PRESS"):
            batch.cancel.set()  # the Cancel button, Esc, or another file being opened
        if event.type not in ("TIMER", "ESC") and not batch.cancel.is_set():
            return {"PASS_THROUGH"}
        failures = len(batch.failures)
        outcome = advance(context, batch)
        if batch.several and len(batch.failures) > failures:
            self.report({"WARNING"}, batch.failures[-1])  # said now; the others go on
        if outcome is None:
            self._show(context, batch)
            return {"PASS_THROUGH"}
        self._end(context)
        return self._report(outcome)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal without us (a file is opened, the window closes): stop waiting."""
        self._running.cancel.set()
        self._end(context)

    def _show(self, context: bpy.types.Context, batch: Batch) -> None:
        set_status_text(self._workspace, f"Image to 3D: {batch.status()} (Esc to cancel)")
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
    """Stop generating: the image being made is dropped and the rest of a batch is not started"""

    bl_idname = "image_to_3d.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return "generate" in CURRENT

    def execute(self, context: bpy.types.Context) -> Result:
        cancel_running_job()
        return {"FINISHED"}


def cancel_running_job() -> None:
    """Cancel the running batch, if any; its modal operator notices on its next tick."""
    batch = CURRENT.pop("generate", None)
    if batch is not None:
        batch.cancel.set()


class IMAGE_TO_3D_OT_history_import(bpy.types.Operator):
    """Place a copy of this earlier result at the 3D cursor, from the history (no server needed)"""

    bl_idname = "image_to_3d.history_import"
    bl_label = "Re-import"
    bl_options = {"REGISTER"}  # pushes its own undo step, like Generate

    key: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> Result:
        key = self.key or _selected_key(context)
        record = history_ui.record_for(key) if key else None
        if record is None:
            self.report({"ERROR"}, "That result is no longer in the history; generate it again.")
            return {"CANCELLED"}
        with open(history.glb_path(history_ui.folder(), key), "rb") as handle:
            glb = handle.read()
        settings = record.get("settings", {})
        placement = Placement(str(settings.get("placement", "BASE")), float(settings.get("height_m", 0.0)))
        try:
            obj = import_glb(context, glb, str(record.get("name", "Image")), placement)
        except Exception as error:
            self.report({"ERROR"}, f"Could not import the kept mesh: {error}")
            return {"CANCELLED"}
        obj["image_to_3d"] = {k: record.get(k, "") for k in ("source", "settings", "request_id")}
        push_undo(f"Image to 3D: re-import {obj.name}")
        self.report({"INFO"}, f"Placed '{obj.name}' from the history ({len(obj.data.polygons):,} faces).")
        return {"FINISHED"}


class IMAGE_TO_3D_OT_history_delete(bpy.types.Operator):
    """Delete this result from the history (objects already in scenes stay)"""

    bl_idname = "image_to_3d.history_delete"
    bl_label = "Delete from History"

    key: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> Result:
        key = self.key or _selected_key(context)
        if not key:
            return {"CANCELLED"}
        history.delete(history_ui.folder(), key)
        history_ui.sync(context.window_manager)
        return {"FINISHED"}


def _selected_key(context: bpy.types.Context) -> str:
    state = getattr(context.window_manager, "image_to_3d_history")
    if 0 <= state.index < len(state.entries):
        return str(state.entries[state.index].key)
    return ""


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
        self.report({"INFO"} if report.ok else {"ERROR"}, report.message)
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
