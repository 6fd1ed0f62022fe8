"""Run inside Blender (bpy as a module, in a subprocess): install the add-on zip, run scenarios.

    python addon_scenarios.py CONFIG.json

CONFIG: {"zip", "install": "extension"|"legacy", "endpoint", "token", "image", "scenarios": [...],
"output"}. Writes a JSON report of what each scenario left in the scene.
"""

from __future__ import annotations

import json
import sys

import bpy

config = json.loads(open(sys.argv[1]).read())
report: dict = {"scenarios": {}}

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.preferences.system.use_online_access = True
if config["install"] == "extension":
    bpy.ops.extensions.package_install_files(filepath=config["zip"], repo="user_default", enable_on_install=True)
    module = "bl_ext.user_default.image_to_3d"
else:
    bpy.ops.preferences.addon_install(filepath=config["zip"])
    bpy.ops.preferences.addon_enable(module="image_to_3d")
    module = "image_to_3d"
report["enabled"] = module in bpy.context.preferences.addons
report["in_add_menu"] = any(
    getattr(f, "__name__", "") == "menu_entry" for f in bpy.types.VIEW3D_MT_add._dyn_ui_initialize()
)
prefs = bpy.context.preferences.addons[module].preferences
prefs.endpoint = config["endpoint"]
prefs.token = config.get("token", "")
prefs.timeout = 120.0

scene = bpy.context.scene
settings = scene.image_to_3d
settings.resolution = 32


def counts() -> dict:
    return {kind: len(getattr(bpy.data, kind)) for kind in ("objects", "meshes", "materials", "images", "collections")}


def clear_selection() -> None:
    bpy.context.view_layer.update()
    for obj in bpy.context.scene.objects:
        obj.select_set(False)


def add_reference(image: bpy.types.Image, name: str) -> bpy.types.Object:
    empty = bpy.data.objects.new(name, None)
    empty.empty_display_type = "IMAGE"
    empty.data = image
    scene.collection.objects.link(empty)
    clear_selection()
    empty.select_set(True)
    bpy.context.view_layer.objects.active = empty
    return empty


def describe(obj: bpy.types.Object) -> dict:
    mesh = obj.data
    corners = [obj.matrix_world @ v.co for v in mesh.vertices]
    material = obj.active_material
    links = []
    if material and material.node_tree:
        links = [(l.from_node.bl_idname, l.to_socket.name) for l in material.node_tree.links]
    attribute = mesh.color_attributes[0] if mesh.color_attributes else None
    values = []
    if attribute is not None:
        values = [list(d.color)[:3] for d in attribute.data][:2000]
    return {
        "name": obj.name,
        "type": obj.type,
        "location": list(obj.location),
        "bbox_min": [min(c[i] for c in corners) for i in range(3)],
        "bbox_max": [max(c[i] for c in corners) for i in range(3)],
        "faces": len(mesh.polygons),
        "smooth": all(p.use_smooth for p in mesh.polygons),
        "attribute": [attribute.name, attribute.domain] if attribute else None,
        "colour_spread": (max(max(v) for v in values) - min(min(v) for v in values)) if values else 0.0,
        "links": links,
        "selected": obj.select_get(),
        "active": bpy.context.view_layer.objects.active == obj,
        "parent": obj.parent.name if obj.parent else None,
        "materials": len(mesh.materials),
    }


def run(label: str, setup) -> None:
    global scene, settings
    before = setup()
    bpy.ops.ed.undo_push(message="before generate")  # starts the undo system in background mode
    start_counts = counts()
    start_names = set(bpy.data.objects.keys())
    try:
        result = sorted(bpy.ops.image_to_3d.generate())
        error = None
    except RuntimeError as exc:  # operators that report ERROR raise in background mode
        result, error = ["CANCELLED"], str(exc)
    entry = {"result": result, "error": error, "before": start_counts, "after": counts()}
    new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - start_names]
    entry["new_objects"] = [describe(o) for o in new]
    if result == ["FINISHED"] and new:
        entry["undo_step"] = "UNDO" in bpy.types.IMAGE_TO_3D_OT_generate.bl_options
        try:
            # What the window manager does after a REGISTER|UNDO operator run from the UI; a
            # script call does not push it, so the test does.
            bpy.ops.ed.undo_push(message="Generate 3D from Image")
            bpy.ops.ed.undo()
            entry["after_undo"] = {"objects": sorted(bpy.data.objects.keys()), "counts": counts()}
            bpy.ops.ed.redo()
            entry["after_redo"] = sorted(bpy.data.objects.keys())
        except RuntimeError as exc:
            entry["undo_error"] = str(exc)
        scene = bpy.context.scene  # undo rebuilds the data: old references are gone
        settings = scene.image_to_3d
        new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - start_names]
        for obj in new:
            if obj.name in bpy.data.objects:
                mesh = obj.data
                bpy.data.objects.remove(obj)
                bpy.data.meshes.remove(mesh)
    if before is not None:
        entry["setup"] = before
    report["scenarios"][label] = entry


image_path = config["image"]
for scenario in config["scenarios"]:
    scene.cursor.location = (1.5, -2.0, 0.5)
    if scenario == "reference":
        image = bpy.data.images.load(image_path)
        run(scenario, lambda: add_reference(image, "Ref").name)
    elif scenario == "packed":
        image = bpy.data.images.load(image_path)
        image.pack()
        image.filepath = "//missing/nowhere.png"
        run(scenario, lambda: add_reference(image, "RefPacked").name)
    elif scenario == "generated":
        clear_selection()
        bpy.context.view_layer.objects.active = None
        image = bpy.data.images.new("Painted", 96, 96, alpha=True)
        import numpy as np

        pixels = np.zeros((96, 96, 4), dtype=np.float32)
        pixels[20:76, 30:66] = (0.9, 0.2, 0.1, 1.0)
        image.pixels.foreach_set(pixels.ravel())
        settings.image = image
        run(scenario, lambda: None)
        settings.image = None
    elif scenario == "no_image":
        clear_selection()
        bpy.context.view_layer.objects.active = None
        settings.image = None
        settings.filepath = ""
        run(scenario, lambda: None)
    elif scenario == "garbage_file":
        clear_selection()
        bpy.context.view_layer.objects.active = None
        settings.filepath = config["garbage"]
        run(scenario, lambda: None)
        settings.filepath = ""
    elif scenario == "offline_remote":
        bpy.context.preferences.system.use_online_access = False
        saved = prefs.endpoint
        prefs.endpoint = "http://example.invalid:8000"
        image = bpy.data.images.load(image_path)
        run(scenario, lambda: add_reference(image, "RefOffline").name)
        prefs.endpoint = saved
        report["online_access_now"] = bpy.app.online_access
    elif scenario == "offline_loopback":
        bpy.context.preferences.system.use_online_access = False
        image = bpy.data.images.load(image_path)
        run(scenario, lambda: add_reference(image, "RefLoop").name)
    elif scenario == "test_connection":
        outcome = {}
        for label, endpoint in (("up", prefs.endpoint), ("down", "http://127.0.0.1:9")):
            saved = prefs.endpoint
            prefs.endpoint = endpoint
            try:
                outcome[label] = {"result": sorted(bpy.ops.image_to_3d.test_connection()), "error": None}
            except RuntimeError as exc:
                outcome[label] = {"result": ["CANCELLED"], "error": str(exc)}
            prefs.endpoint = saved
        report["scenarios"][scenario] = outcome
    elif scenario == "bad_option":
        settings.foreground_ratio = 0.5
        settings.resolution = 32
        image = bpy.data.images.load(image_path)
        bpy.context.scene.image_to_3d["target_faces"] = 5  # below the server's minimum (100)
        run(scenario, lambda: add_reference(image, "RefBad").name)
        settings.target_faces = 0
        settings.foreground_ratio = 0.85

with open(config["output"], "w") as out:
    json.dump(report, out)
