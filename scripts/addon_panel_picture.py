"""Picture of the add-on's panel, drawn by Blender itself (docs/images/addon-panel.png).

The bpy module the tests use (4.2, 4.5, 5.0 from PyPI) has no windows and cannot draw UI, so
this runs in a full Blender under a virtual X server: Debian's Blender 3.4.1 (the newest Blender
a package registry here offers). Its sidebar tab cannot be chosen from a script (Region has no
active_panel_category before 4.x), so the panel is opened as a popup with wm.call_panel, which
runs the same draw code. Reference images only, no history: a list inside a popup crashes 3.4.

    apt-get install blender xvfb xauth python3-numpy
    python build_addon.py -o /tmp/image_to_3d.zip
    xvfb-run -a -s "-screen 0 1600x1000x24" blender --factory-startup --enable-event-simulate \\
        --python scripts/addon_panel_picture.py -- /tmp/image_to_3d.zip docs/images/addon-panel.png
"""

import os
import sys

import bpy
import numpy as np

ZIP, OUT = sys.argv[sys.argv.index("--") + 1 :][:2]
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "examples")
MOUSE = (420, 960)  # the popup opens here (window pixels from the bottom left) ...
CROP = (250, 14, 592, 492)  # ... and covers this box (left, top, right, bottom from the top left)

bpy.ops.preferences.addon_install(filepath=os.path.abspath(ZIP))
bpy.ops.preferences.addon_enable(module="image_to_3d")
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
for number, name in enumerate(("robot", "chair")):
    empty = bpy.data.objects.new(name.title(), None)
    empty.empty_display_type = "IMAGE"
    empty.data = bpy.data.images.load(os.path.join(EXAMPLES, f"{name}.png"))
    empty.location = (-3 + 1.5 * number, 0, 0.5)
    empty.rotation_euler = (1.5708, 0, 0)
    bpy.context.scene.collection.objects.link(empty)
    empty.select_set(name == "chair")
bpy.context.view_layer.objects.active = bpy.data.objects["Chair"]
bpy.context.scene.image_to_3d.resolution = 96


def window_and_area():
    window = bpy.context.window_manager.windows[0]
    return window, next(a for a in window.screen.areas if a.type == "VIEW_3D")


def open_panel():
    window, area = window_and_area()
    window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=MOUSE[0], y=MOUSE[1])
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.wm.call_panel(name="VIEW3D_PT_image_to_3d", keep_open=True)


def shoot():
    window, _ = window_and_area()
    full = OUT + ".full.png"
    with bpy.context.temp_override(window=window):
        bpy.ops.screen.screenshot(filepath=full)
    shot = bpy.data.images.load(full)
    width, height = shot.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    shot.pixels.foreach_get(pixels)
    left, top, right, bottom = CROP
    box = pixels.reshape(height, width, 4)[height - bottom : height - top, left:right]  # rows bottom-up
    out = bpy.data.images.new("panel", right - left, bottom - top, alpha=True)
    out.pixels.foreach_set(np.ascontiguousarray(box).ravel())
    out.filepath_raw, out.file_format = os.path.abspath(OUT), "PNG"
    out.save()
    os.remove(full)
    bpy.ops.wm.quit_blender()


bpy.app.timers.register(open_panel, first_interval=3.0)
bpy.app.timers.register(shoot, first_interval=6.0)
