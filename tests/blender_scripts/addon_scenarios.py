"""Run inside Blender (bpy as a module, in a subprocess): install the add-on zip, run scenarios.

    python addon_scenarios.py CONFIG.json

CONFIG: {"zip", "install": "extension"|"legacy", "endpoint", "token", "image", "garbage",
"corrupt", "workdir", "scenarios": [...], "output"}. Writes a JSON report of what each scenario
left in the scene; tests/test_addon.py judges it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import bpy
import numpy as np

config = json.loads(open(sys.argv[1]).read())
# The add-on's history folder is Blender's user data: BLENDER_USER_RESOURCES puts it in the test's folder.
report: dict = {"scenarios": {}}
CURSOR = (1.5, -2.0, 0.5)

# -- install and enable, the way Blender's "Install from Disk" does ------------------------------
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.preferences.system.use_online_access = True


def add_menu_entries() -> list[str]:
    return [
        getattr(f, "__module__", "")
        for f in bpy.types.VIEW3D_MT_add._dyn_ui_initialize()
        if getattr(f, "__name__", "") == "menu_entry"
    ]


if config["install"] == "both":  # an extension and a legacy install of the same add-on, both enabled
    bpy.ops.extensions.package_install_files(filepath=config["zip"], repo="user_default", enable_on_install=True)
    bpy.ops.preferences.addon_install(filepath=config["zip"])
    bpy.ops.preferences.addon_enable(module="image_to_3d")
    report["menu_entries_both"] = add_menu_entries()
    bpy.ops.preferences.addon_disable(module="bl_ext.user_default.image_to_3d")
    report["menu_entries_legacy_left"] = add_menu_entries()
    bpy.ops.preferences.addon_enable(module="bl_ext.user_default.image_to_3d")
    bpy.ops.preferences.addon_disable(module="image_to_3d")
    report["menu_entries_extension_left"] = add_menu_entries()
    module = "bl_ext.user_default.image_to_3d"
elif config["install"] == "extension":
    bpy.ops.extensions.package_install_files(filepath=config["zip"], repo="user_default", enable_on_install=True)
    module = "bl_ext.user_default.image_to_3d"
else:
    bpy.ops.preferences.addon_install(filepath=config["zip"])
    bpy.ops.preferences.addon_enable(module="image_to_3d")
    module = "image_to_3d"
report["enabled"] = module in bpy.context.preferences.addons
report["installed_at"] = os.path.dirname(sys.modules[module].__file__ or "")
report["in_add_menu"] = any(
    getattr(f, "__name__", "") == "menu_entry" for f in bpy.types.VIEW3D_MT_add._dyn_ui_initialize()
)
operators = sys.modules[module + ".operators"]
history_ui = sys.modules[module + ".history_ui"]
prefs = bpy.context.preferences.addons[module].preferences
prefs.endpoint = config["endpoint"]
prefs.token = config["token"]
prefs.timeout = 120.0
bpy.context.scene.image_to_3d.resolution = 32


def settings():  # undo rebuilds scene data, so never keep a reference across it
    return bpy.context.scene.image_to_3d


def counts() -> dict:
    kinds = ("objects", "meshes", "materials", "images", "collections", "node_groups", "textures")
    return {kind: len(getattr(bpy.data, kind)) for kind in kinds}


def select_only(obj: bpy.types.Object | None) -> None:
    bpy.context.view_layer.update()  # objects removed by the previous scenario leave stale bases
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    if obj is not None:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def add_reference(image: bpy.types.Image, name: str) -> None:
    """What Add > Image > Reference makes: an image Empty holding the image, selected and active."""
    empty = bpy.data.objects.new(name, None)
    empty.empty_display_type = "IMAGE"
    empty.data = image
    bpy.context.scene.collection.objects.link(empty)
    select_only(empty)


def painted_image(name: str, float_buffer: bool) -> bpy.types.Image:
    """An image with no file: a red block on transparency, as if painted in Blender."""
    image = bpy.data.images.new(name, 96, 96, alpha=True, float_buffer=float_buffer)
    pixels = np.zeros((96, 96, 4), dtype=np.float32)
    pixels[20:76, 30:66] = (0.9, 0.2, 0.1, 1.0)
    image.pixels.foreach_set(pixels.ravel())
    return image


def describe(obj: bpy.types.Object) -> dict:
    mesh = obj.data
    corners = np.array([tuple(obj.matrix_world @ v.co) for v in mesh.vertices])
    material = obj.active_material
    links, vertex_color = [], []
    if material and material.node_tree:
        links = [[link.from_node.bl_idname, link.to_socket.name] for link in material.node_tree.links]
        vertex_color = [n.layer_name for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeVertexColor"]
    attribute = mesh.color_attributes[0] if len(mesh.color_attributes) else None
    colours = np.zeros((0, 4), dtype=np.float32)
    if attribute is not None:
        colours = np.empty(len(attribute.data) * 4, dtype=np.float32)
        attribute.data.foreach_get("color", colours)
        colours = colours.reshape(-1, 4)
    images = (
        [n.image for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage" and n.image]
        if material and material.node_tree
        else []
    )
    return {
        "name": obj.name,
        "mesh_name": mesh.name,
        "images": [
            {
                "name": i.name,
                "size": list(i.size),
                "packed": i.packed_file is not None,
                "colorspace": i.colorspace_settings.name,
            }
            for i in images
        ],
        "uv_layers": len(mesh.uv_layers),
        "colour_attributes": len(mesh.color_attributes),
        "type": obj.type,
        "location": list(obj.location),
        "rotation": list(obj.rotation_euler),
        "rotation_mode": obj.rotation_mode,
        "dimensions": list(obj.dimensions),
        "custom": obj["image_to_3d"].to_dict() if "image_to_3d" in obj else None,
        "scale": list(obj.scale),
        "bbox_min": corners.min(axis=0).tolist(),
        "bbox_max": corners.max(axis=0).tolist(),
        "vertices": len(mesh.vertices),
        "faces": len(mesh.polygons),
        "smooth": all(p.use_smooth for p in mesh.polygons),
        "attribute": [attribute.name, attribute.domain, attribute.data_type] if attribute else None,
        "colour_spread": float(np.ptp(colours[:, :3])) if len(colours) else 0.0,
        "vertex_color_node": vertex_color,
        "links": links,
        "material": material.name if material else None,
        "selected": obj.select_get(),
        "active": bpy.context.view_layer.objects.active == obj,
        "selected_count": len([o for o in bpy.context.view_layer.objects if o.select_get()]),
        "parent": obj.parent.name if obj.parent else None,
        "materials": len(mesh.materials),
        "collections": [c.name for c in obj.users_collection],
    }


def selection() -> dict:
    layer = bpy.context.view_layer
    active = layer.objects.active
    return {
        "selected": sorted(o.name for o in layer.objects if o is not None and o.select_get()),
        "active": active.name if active else None,
        "mode": bpy.context.mode,
    }


def run(label: str, how: str = "EXEC_DEFAULT") -> None:
    """Run the operator as a script does (it finishes before returning), with Blender's own undo push."""
    bpy.context.scene.cursor.location = CURSOR
    bpy.ops.ed.undo_push(message="before generate")  # starts the undo system in background mode
    start_counts, start_names, start_selection = counts(), set(bpy.data.objects.keys()), selection()
    try:
        # (how, True): Blender pushes the operator's undo step, as it does for a UI call.
        result, error = sorted(bpy.ops.image_to_3d.generate(how, True)), None
    except RuntimeError as exc:  # an operator that reports ERROR raises in background mode
        result, error = ["CANCELLED"], str(exc)
    entry = {
        "result": result,
        "error": error,
        "before": start_counts,
        "after": counts(),
        "selection_before": start_selection,
        "selection_after": selection(),
    }
    entry["panel_image"] = settings().image.name if settings().image else None
    new = sorted((bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - start_names), key=lambda o: o.name)
    entry["new_objects"] = [describe(o) for o in new]
    if new and new[0].type == "MESH":  # the mesh's own coordinates, for the test to compare with the GLB
        co = np.empty(len(new[0].data.vertices) * 3, dtype=np.float32)
        new[0].data.vertices.foreach_get("co", co)
        entry["vertices_file"] = os.path.join(config["workdir"], f"{label}.npy")
        np.save(entry["vertices_file"], co.reshape(-1, 3))
    if result == ["FINISHED"]:
        bpy.ops.ed.undo()
        entry["after_undo"] = {"objects": sorted(bpy.data.objects.keys()), "counts": counts()}
        bpy.ops.ed.redo()
        entry["after_redo"] = sorted(set(bpy.data.objects.keys()) - start_names)
        remove_new(start_names)
    report["scenarios"][label] = entry


def remove_new(start_names: set[str]) -> None:
    for name in set(bpy.data.objects.keys()) - start_names:
        obj = bpy.data.objects[name]
        mesh, materials = obj.data, [s.material for s in obj.material_slots if s.material]
        images = {
            n.image.name
            for m in materials
            if m.node_tree
            for n in m.node_tree.nodes
            if n.bl_idname == "ShaderNodeTexImage" and n.image
        }
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        for material in materials:
            bpy.data.materials.remove(material)
        for image in images:
            bpy.data.images.remove(bpy.data.images[image])


@contextmanager
def changed_prefs(**values: object) -> Iterator[None]:
    """Some add-on preferences changed for a block, then put back."""
    saved = {name: getattr(prefs, name) for name in values}
    for name, value in values.items():
        setattr(prefs, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(prefs, name, value)


@contextmanager
def online_access(allowed: bool) -> Iterator[None]:
    bpy.context.preferences.system.use_online_access = allowed
    try:
        yield
    finally:
        bpy.context.preferences.system.use_online_access = True


def connection_test() -> dict:
    try:
        return {"result": sorted(bpy.ops.image_to_3d.test_connection()), "error": None}
    except RuntimeError as exc:
        return {"result": ["CANCELLED"], "error": str(exc)}


def record_reported_stages(client) -> list[str]:
    """Every stage the worker reports, in order: polling alone misses a stage shorter than a tick
    (a tiny model answers in a few milliseconds)."""
    reported: list[str] = []
    generate = client.generate

    def recording_generate(image, options, progress=None, cancel=None):
        def record(stage, fraction):
            if not reported or reported[-1] != stage:
                reported.append(stage)
            progress(stage, fraction)

        return generate(image, options, progress=record, cancel=cancel)

    client.generate = recording_generate
    return reported


def drive_job(cancel_at_stage: str | None) -> dict:
    """What the modal operator does on each timer tick: the same Batch and advance()."""
    bpy.context.scene.cursor.location = CURSOR
    start_counts = counts()
    batch = operators.Batch.from_context(bpy.context, wait=False)
    reported = record_reported_stages(batch.client)
    stages, statuses, ticks, outcome, jobs = [], [], 0, None, []
    encoded_when_started = []  # bytes already encoded when the main-thread step that started a job returned
    while outcome is None:
        if batch.job is not None and batch.job.stage == cancel_at_stage:
            batch.cancel.set()  # what Esc and the Cancel button do
        had_job = batch.job
        step_start = time.perf_counter()
        outcome = operators.advance(bpy.context, batch)
        step = time.perf_counter() - step_start
        if batch.job is not None and batch.job is not had_job:
            encoded_when_started.append({"sent": len(batch.job.sent), "step_s": step})
            jobs.append(batch.job)
        if jobs and (not stages or stages[-1] != jobs[-1].stage):
            stages.append(jobs[-1].stage)
        if not statuses or statuses[-1] != batch.status().split(":")[0]:
            statuses.append(batch.status().split(":")[0])
        ticks += 1
        time.sleep(0.02)
    for job in jobs:
        job.done.wait(120)  # the worker ends too; its late answer must not be imported
    new = [describe(o) for o in bpy.context.scene.objects if o.type == "MESH"]
    last = jobs[-1] if jobs else None
    return {
        "result": sorted(outcome.result),
        "level": outcome.level,
        "message": outcome.message,
        "stages": stages,
        "statuses": statuses,
        "reported": reported,
        "ticks": ticks,
        "before": start_counts,
        "after": counts(),
        "new_objects": new,
        "worker_error": last.error if last else None,
        "worker_got_mesh": bool(last and last.result),
        "encoded_when_started": encoded_when_started,
        "worker_threads": [job.worker_thread for job in jobs],
        "sent_sizes": [list(job.source.sent_size or ()) for job in jobs],
        "sent_types": [job.sent[:8].hex() for job in jobs],
    }


def undo_steps_back(names: list[str]) -> list[list[str]]:
    """The objects left among `names` after each Ctrl+Z, one per name."""
    left = []
    for _ in names:
        bpy.ops.ed.undo()
        left.append(sorted(n for n in names if n in bpy.data.objects))
    return left


def history_records() -> list[dict]:
    history = sys.modules[module + ".history"]
    return history.entries(history_ui.folder())


def mesh_vertices(obj: bpy.types.Object) -> list:
    co = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).tolist()


def paint_attribute(obj: bpy.types.Object, colour: tuple) -> None:
    attribute = obj.data.color_attributes[0]
    attribute.data.foreach_set("color", np.tile(np.array(colour, dtype=np.float32), len(attribute.data)))
    obj.data.update()


def paint_texture(obj: bpy.types.Object, colour: tuple) -> None:
    (image,) = [n.image for n in obj.active_material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
    image.pixels.foreach_set(np.tile(np.array(colour, dtype=np.float32), image.size[0] * image.size[1]))
    image.update()


def render_colours(obj: bpy.types.Object, engine: str, colours: list[tuple], paint=paint_attribute) -> dict:
    """Render the object from the Front with its colour attribute (or texture) painted each colour in
    turn; the mean colour of the image's centre shows whether the material reads it."""
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (obj.location.x, obj.location.y - 5.0, obj.location.z + obj.dimensions.z / 2)  # origin: bottom
    camera.rotation_euler = (1.5708, 0.0, 0.0)  # looking along +Y: the Front view
    scene.camera = camera
    scene.world = bpy.data.worlds.new("White")
    scene.world.color = (1.0, 1.0, 1.0)
    scene.render.engine = engine
    scene.view_settings.view_transform = "Standard"  # no tone mapping that desaturates bright colours
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.render.filepath = os.path.join(config["workdir"], f"render_{engine}.png")
    if engine == "CYCLES":
        scene.cycles.samples = 4
        scene.cycles.device = "CPU"
    result = {}
    for colour in colours:
        paint(obj, colour)
        try:
            bpy.ops.render.render(write_still=True)
        except RuntimeError as exc:
            return {"error": str(exc)}
        image = bpy.data.images.load(scene.render.filepath, check_existing=False)
        pixels = np.empty(32 * 32 * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        bpy.data.images.remove(image)
        result[str(colour)] = pixels.reshape(32, 32, 4)[10:22, 10:22, :3].mean(axis=(0, 1)).tolist()
    return result


image_path = config["image"]
for scenario in config["scenarios"]:
    select_only(None)
    settings().image = None
    settings().filepath = ""
    settings().folder = ""
    if scenario == "reference":
        add_reference(bpy.data.images.load(image_path), "Ref")
        run(scenario)
    elif scenario == "invoke_background":  # a button or F3 in a background Blender: runs to the end too
        add_reference(bpy.data.images.load(image_path), "RefInvoke")
        run(scenario, "INVOKE_DEFAULT")
    elif scenario == "packed":
        image = bpy.data.images.load(image_path)
        image.pack()
        image.filepath = "//missing/nowhere.png"  # only the packed copy is left
        add_reference(image, "RefPacked")
        run(scenario)
    elif scenario == "generated":
        settings().image = painted_image("Painted", float_buffer=False)
        run(scenario)
    elif scenario == "generated_float":
        settings().image = painted_image("PaintedHDR", float_buffer=True)
        run(scenario)
    elif scenario == "file_path":
        settings().filepath = image_path
        run(scenario)
    elif scenario == "no_image":
        run(scenario)
    elif scenario == "missing_file":
        copy = os.path.join(config["workdir"], "vanishing.png")
        shutil.copy(image_path, copy)
        image = bpy.data.images.load(copy)
        os.remove(copy)
        image.reload()  # as after reopening a .blend whose image file was moved
        add_reference(image, "RefMissing")
        run(scenario)
    elif scenario == "garbage_file":
        settings().filepath = config["garbage"]
        run(scenario)
    elif scenario == "corrupt_png":
        settings().filepath = config["corrupt"]
        run(scenario)
    elif scenario == "target_faces_clamped":
        settings().target_faces = 5  # the server's minimum is 100: the field itself says 100
        report["target_faces_after_typing_5"] = settings().target_faces
        add_reference(bpy.data.images.load(image_path), "RefFaces")
        run(scenario)
        settings().target_faces = 0
    elif scenario == "panel_words":  # a fully transparent picture: the server's answer names an option
        image = bpy.data.images.new("Clear", 64, 64, alpha=True)
        image.pixels.foreach_set(np.zeros(64 * 64 * 4, dtype=np.float32))
        settings().image = image
        run(scenario)
    elif scenario == "oversized":  # a large painted image: copied out on the main thread, shrunk in the worker
        image = bpy.data.images.new("BigPainting", 3000, 2400, alpha=True)
        pixels = np.zeros((2400, 3000, 4), dtype=np.float32)
        pixels[300:2100, 900:2100] = (0.9, 0.3, 0.1, 1.0)
        image.pixels.foreach_set(pixels.ravel())
        settings().image = image
        report["scenarios"][scenario] = drive_job(cancel_at_stage=None)
        remove_new({o.name for o in bpy.data.objects if o.type != "MESH"})
        bpy.data.images.remove(image)
    elif scenario == "large_file":  # a 2500x2000 JPEG file: sent as it is (the server resamples it)
        settings().filepath = config["large_file"]
        report["scenarios"][scenario] = drive_job(cancel_at_stage=None)
        remove_new({o.name for o in bpy.data.objects if o.type != "MESH"})
    elif scenario == "movie":
        scene = bpy.context.scene
        saved = (scene.render.engine, scene.render.resolution_x, scene.render.resolution_y, scene.frame_end)
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.render.resolution_x = scene.render.resolution_y = 32
        scene.frame_start, scene.frame_end = 1, 3
        if hasattr(scene.render.image_settings, "media_type"):  # Blender 5.0 splits image and video formats
            scene.render.image_settings.media_type = "VIDEO"
        scene.render.image_settings.file_format = "FFMPEG"
        scene.render.ffmpeg.format, scene.render.ffmpeg.codec = "MPEG4", "H264"
        scene.render.filepath = os.path.join(config["workdir"], "movie", "clip_")
        camera = bpy.data.objects.new("MovieCamera", bpy.data.cameras.new("MovieCamera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        bpy.ops.render.render(animation=True)
        if hasattr(scene.render.image_settings, "media_type"):
            scene.render.image_settings.media_type = "IMAGE"
        scene.render.image_settings.file_format = "PNG"
        scene.render.engine, scene.render.resolution_x, scene.render.resolution_y, scene.frame_end = saved
        (movie_file,) = os.listdir(os.path.join(config["workdir"], "movie"))
        movie = bpy.data.images.load(os.path.join(config["workdir"], "movie", movie_file))
        report["movie_image"] = [movie.name, movie.source]
        add_reference(movie, "RefMovie")
        report["movie_name"] = [c.name for c in sys.modules[module + ".image_source"].choose_sources(bpy.context)]
        run(scenario)
    elif scenario == "sequence":  # frames clip_0001..3: the chair is frame 2
        folder = os.path.join(config["workdir"], "sequence")
        os.makedirs(folder, exist_ok=True)
        for number, path in enumerate([config["garbage"], image_path, config["garbage"]], start=1):
            shutil.copy(path, os.path.join(folder, f"clip_{number:04d}.png"))
        image = bpy.data.images.load(os.path.join(folder, "clip_0002.png"))
        image.source = "SEQUENCE"
        add_reference(image, "RefSequence")
        user = bpy.data.objects["RefSequence"].image_user
        user.frame_start, user.frame_duration, user.frame_offset = 1, 3, 0
        bpy.context.scene.frame_set(2)
        run(scenario)
        bpy.context.scene.frame_set(1)
    elif scenario == "render_result":
        scene = bpy.context.scene
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.render.resolution_x = scene.render.resolution_y = 16
        camera = bpy.data.objects.new("ResultCamera", bpy.data.cameras.new("ResultCamera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        bpy.ops.render.render()
        settings().image = bpy.data.images["Render Result"]
        run(scenario)
    elif scenario == "placement":
        image = bpy.data.images.load(image_path)
        add_reference(image, "RefPlace")
        settings().placement = "CENTER"
        run("placement_center")
        settings().placement = "BASE"
        select_only(bpy.data.objects["RefPlace"])
        bpy.context.preferences.edit.object_align = "CURSOR"
        bpy.context.scene.cursor.rotation_euler = (0.0, 0.0, 0.5)
        run("placement_aligned")
        bpy.context.preferences.edit.object_align = "WORLD"
        bpy.context.scene.cursor.rotation_euler = (0.0, 0.0, 0.0)
        select_only(bpy.data.objects["RefPlace"])
        bpy.context.scene.unit_settings.scale_length = 0.5
        settings().height = 1.8
        run("placement_height")
        settings().height = 0.0
        bpy.context.scene.unit_settings.scale_length = 1.0
    elif scenario == "history":
        before_records = len(history_records())
        add_reference(bpy.data.images.load(image_path), "RefHistory")
        bpy.context.scene.cursor.location = CURSOR
        bpy.ops.image_to_3d.generate()
        made = bpy.context.view_layer.objects.active
        records = history_records()
        key = records[0]["key"]
        folder = history_ui.folder()
        outcome = {
            "records_added": len(records) - before_records,
            "record": records[0],
            "files": sorted(n for n in os.listdir(folder) if n.startswith(key)),
            "folder": folder,
            "made_custom": made["image_to_3d"].to_dict(),
            "list": [e.key for e in bpy.context.window_manager.image_to_3d_history.entries],
        }
        np.save(os.path.join(config["workdir"], "history_made.npy"), np.array(mesh_vertices(made), dtype=np.float32))
        path = os.path.join(config["workdir"], "history.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path, compress=False, copy=True)
        outcome["key_in_blend"] = key.encode() in open(path, "rb").read()
        select_only(None)
        with changed_prefs(endpoint=config["down_endpoint"]):  # no server at all
            names = set(bpy.data.objects.keys())
            outcome["reimport"] = sorted(bpy.ops.image_to_3d.history_import(key=key))
        (again,) = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - names]
        outcome["again"] = describe(again)
        np.save(os.path.join(config["workdir"], "history_again.npy"), np.array(mesh_vertices(again), dtype=np.float32))
        again_name = again.name
        bpy.ops.ed.undo()  # the re-import is one undo step too
        outcome["after_undo_has_copy"] = again_name in bpy.data.objects
        bpy.ops.image_to_3d.history_delete(key=key)
        outcome["after_delete"] = [r["key"] for r in history_records()]
        outcome["files_after_delete"] = sorted(n for n in os.listdir(folder) if n.startswith(key))
        report["scenarios"][scenario] = outcome
    elif scenario in ("batch", "batch_one_bad", "batch_status", "batch_cancel"):
        good = bpy.data.images.load(image_path)
        clear = bpy.data.images.new("Clear", 64, 64, alpha=True)  # the server finds nothing in it
        clear.pixels.foreach_set(np.zeros(64 * 64 * 4, dtype=np.float32))
        images = [good, clear if scenario == "batch_one_bad" else good, good]
        empties = []
        for old in [o for o in bpy.data.objects if o.name.startswith("RefBatch")]:
            bpy.data.objects.remove(old)  # the previous batch scenario's references
        for number, image in enumerate(images, start=1):
            add_reference(image, f"RefBatch{number}")
            empty = bpy.data.objects[f"RefBatch{number}"]
            empty.location = (number * 4.0, 3.0, 1.0)
            empties.append(empty)
        bpy.context.view_layer.update()
        for empty in empties:
            empty.select_set(True)
        bpy.context.view_layer.objects.active = empties[0]
        if scenario in ("batch_status", "batch_cancel"):
            report["scenarios"][scenario] = drive_job("generating" if scenario == "batch_cancel" else None)
            remove_new({o.name for o in bpy.data.objects if o.type != "MESH"})
            continue
        bpy.ops.ed.undo_push(message="before batch")
        names = set(bpy.data.objects.keys())
        try:
            result, error = sorted(bpy.ops.image_to_3d.generate()), None
        except RuntimeError as exc:
            result, error = ["CANCELLED"], str(exc)
        new = sorted((bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - names), key=lambda o: o.name)
        outcome = {
            "result": result,
            "error": error,
            "made": [describe(o) for o in new],
            "references": {e.name: list(e.location) for e in empties},
        }
        outcome["undo"] = undo_steps_back([o.name for o in new])
        report["scenarios"][scenario] = outcome
    elif scenario == "folder":
        folder = os.path.join(config["workdir"], "folder")
        os.makedirs(folder, exist_ok=True)
        for name in ("chair.png", "robot.png"):
            shutil.copy(os.path.join(os.path.dirname(image_path), name), folder)
        settings().folder = folder
        names = set(bpy.data.objects.keys())
        bpy.context.scene.cursor.location = CURSOR
        result = sorted(bpy.ops.image_to_3d.generate())
        new = sorted((bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - names), key=lambda o: o.name)
        report["scenarios"][scenario] = {"result": result, "made": [describe(o) for o in new]}
        settings().folder = ""
    elif scenario == "offline_remote":
        add_reference(bpy.data.images.load(image_path), "RefOffline")
        with online_access(False), changed_prefs(endpoint="http://example.invalid:8000"):
            report["online_access_when_off"] = bpy.app.online_access
            run(scenario)
    elif scenario == "offline_loopback":
        add_reference(bpy.data.images.load(image_path), "RefLoop")
        with online_access(False):
            run(scenario)
    elif scenario in ("wrong_token", "missing_token", "server_down"):
        add_reference(bpy.data.images.load(image_path), "RefAuth")
        change = {
            "wrong_token": {"token": "not-the-token"},
            "missing_token": {"token": ""},
            "server_down": {"endpoint": config["down_endpoint"]},
        }[scenario]
        with changed_prefs(**change):
            run(scenario)
    elif scenario == "test_connection":
        outcome: dict = {"up": connection_test()}
        with changed_prefs(token="not-the-token"):
            outcome["wrong_token"] = connection_test()
        with changed_prefs(endpoint=config["down_endpoint"]):
            outcome["down"] = connection_test()
        with online_access(False), changed_prefs(endpoint="https://example.invalid"):
            outcome["offline"] = connection_test()
        report["scenarios"][scenario] = outcome
    elif scenario == "worker":
        add_reference(bpy.data.images.load(image_path), "RefWorker")
        report["scenarios"][scenario] = drive_job(cancel_at_stage=None)
        remove_new({o.name for o in bpy.data.objects if o.type != "MESH"})
    elif scenario == "worker_cancel":
        add_reference(bpy.data.images.load(image_path), "RefCancel")
        settings().resolution = 256  # long enough to press Esc while the server generates
        report["scenarios"][scenario] = drive_job(cancel_at_stage="generating")
        settings().resolution = 32
    elif scenario == "importer_edge_cases":  # GLBs our server never sends, fed to the add-on's importer
        importer = sys.modules[module + ".importer"]
        add_reference(bpy.data.images.load(image_path), "RefEdge")
        outcome = {}
        for label, path in config["edge_glbs"].items():
            select_only(bpy.data.objects["RefEdge"])
            bpy.context.scene.cursor.location = CURSOR
            before, names, chosen = counts(), set(bpy.data.objects.keys()), selection()
            try:
                made, error = describe(importer.import_glb(bpy.context, open(path, "rb").read(), "Edge")), None
            except Exception as exc:
                made, error = None, f"{type(exc).__name__}: {exc}"
            outcome[label] = {
                "made": made,
                "error": error,
                "before": before,
                "after": counts(),
                "selection_before": chosen,
                "selection_after": selection(),
                "new_names": sorted(set(bpy.data.objects.keys()) - names),
            }
            remove_new(names)
        report["scenarios"][scenario] = outcome
    elif scenario in ("render_cycles", "render_eevee"):
        add_reference(bpy.data.images.load(image_path), "RefRender")
        bpy.context.scene.cursor.location = CURSOR
        bpy.ops.image_to_3d.generate()
        obj = bpy.context.view_layer.objects.active
        if scenario == "render_cycles":
            report["scenarios"][scenario] = render_colours(obj, "CYCLES", [(1, 0, 0, 1), (0, 1, 0, 1)])
        else:  # what Material Preview draws with; slow to start without a GPU, so one colour
            engines = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
            eevee = "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in engines else "BLENDER_EEVEE"  # 4.2 names it _NEXT
            report["scenarios"][scenario] = render_colours(obj, eevee, [(1, 0, 0, 1)])
    elif scenario == "texture":  # Colour: Texture 512
        settings().texture_size = "512"
        add_reference(bpy.data.images.load(image_path), "RefTexture")
        report["sent_texture_size"] = sys.modules[module + ".properties"].request_options(settings())["texture_size"]
        run(scenario)  # made, one undo step (the image included), removed again
        outcome: dict = {}
        key = history_records()[0]["key"]
        outcome["record_settings"] = history_records()[0]["settings"]
        select_only(None)
        bpy.context.scene.cursor.location = CURSOR
        with changed_prefs(endpoint=config["down_endpoint"]):  # re-import from the history, no server
            names = set(bpy.data.objects.keys())
            outcome["reimport"] = sorted(bpy.ops.image_to_3d.history_import(key=key))
        (again,) = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - names]
        outcome["again"] = describe(again)
        (image,) = [n.image for n in again.active_material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
        # The texture read at each face corner's UV: the object's colours are in it, not one flat grey.
        uv = np.empty(len(again.data.loops) * 2, dtype=np.float32)
        again.data.uv_layers.active.data.foreach_get("uv", uv)
        uv = uv.reshape(-1, 2)
        pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        pixels = pixels.reshape(image.size[1], image.size[0], 4)
        columns = np.clip((uv[:, 0] * image.size[0]).astype(int), 0, image.size[0] - 1)
        rows = np.clip((uv[:, 1] * image.size[1]).astype(int), 0, image.size[1] - 1)
        outcome["corner_colour_spread"] = float(np.ptp(pixels[rows, columns, :3]))
        # Packed: the image file's bytes are inside a saved .blend.
        path = os.path.join(config["workdir"], "texture.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path, compress=False, copy=True)
        outcome["image_bytes_in_blend"] = bytes(image.packed_file.data) in open(path, "rb").read()
        outcome["render_cycles"] = render_colours(again, "CYCLES", [(1, 0, 0, 1), (0, 1, 0, 1)], paint=paint_texture)
        report["scenarios"][scenario + "_more"] = outcome
        settings().texture_size = "0"
    elif scenario == "token_not_in_blend":
        path = os.path.join(config["workdir"], "scene.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path, compress=False)
        data = open(path, "rb").read()
        report["scenarios"][scenario] = {
            "token_set": prefs.token == config["token"] and bool(config["token"]),
            "token_in_blend": config["token"].encode() in data,
            "endpoint_in_blend": prefs.endpoint.encode() in data,
            "settings_in_blend": b"image_to_3d" in data,
        }
    else:
        raise SystemExit(f"unknown scenario {scenario}")

with open(config["output"], "w") as out:
    json.dump(report, out)
