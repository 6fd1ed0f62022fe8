"""The add-on's pure-Python modules (no bpy): pixels, history, wording, and the server facts the
add-on keeps as constants, compared with the server's own values."""

from __future__ import annotations

import ast
import importlib
import io
import json
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from live_server import ROOT

_package = types.ModuleType("addon_pure")  # the add-on folder as a package, without its bpy __init__
_package.__path__ = [str(ROOT / "blender_addon")]
sys.modules["addon_pure"] = _package
pixels = importlib.import_module("addon_pure.pixels")
history = importlib.import_module("addon_pure.history")
wording = importlib.import_module("addon_pure.wording")


def constants(path, *names):
    """Module-level constants read from a file's source (properties.py needs bpy to import)."""
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in names:
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return [values[name] for name in names]


def test_server_facts_match_the_server():
    from remote.pipeline import GenerateOptions
    from remote.preprocess import MODEL_INPUT_SIDE

    # an object a quarter of a shrunk painting's long side still fills the model's input
    assert pixels.MAX_SIDE >= 4 * MODEL_INPUT_SIDE
    low, high = constants(ROOT / "blender_addon" / "properties.py", "TARGET_FACES_MIN", "TARGET_FACES_MAX")
    for faces in (low, high):
        GenerateOptions(target_faces=faces).validate()
    for faces in (low - 1, high + 1):
        with pytest.raises(Exception, match="target_faces"):
            GenerateOptions(target_faces=faces).validate()
    from remote.options import BY_NAME
    from remote.texture import TEXTURE_SIZES

    # the option's choices (the panel's "Colour" items, tests/test_options.py) are what the bake makes
    assert BY_NAME["texture_size"].choices == (0, *TEXTURE_SIZES)
    for size in BY_NAME["texture_size"].choices:
        GenerateOptions(texture_size=size).validate()


@pytest.mark.slow  # large images
def test_downscale_by_a_whole_factor_with_premultiplied_alpha():
    rgba = np.zeros((2400, 3000, 4), dtype=np.float32)
    rgba[:, :, 2] = 1.0  # blue everywhere ...
    rgba[:, 1::3, 3] = 1.0  # ... but opaque only in every third column; the rest transparent red
    rgba[:, 0::3, 0] = 1.0
    rgba[:, 0::3, 2] = 0.0
    small = pixels.downscale(rgba, 1024)
    assert small.shape == (800, 1000, 4)
    np.testing.assert_allclose(small[..., 3], 1 / 3, atol=1e-6)  # coverage averaged
    np.testing.assert_allclose(
        small[..., :3], np.broadcast_to([0, 0, 1], (800, 1000, 3)), atol=1e-6
    )  # no red bleeds in
    same = np.random.default_rng(0).random((pixels.MAX_SIDE, 700, 4), dtype=np.float32)
    assert pixels.downscale(same) is same
    odd = pixels.downscale(np.ones((1025, 10, 4), dtype=np.float32), 1024)  # factor 2, last row repeated
    assert odd.shape == (513, 5, 4) and np.all(odd == 1)


def test_encode_png_reads_back_with_pillow():
    rgba = np.random.default_rng(1).random((37, 53, 4), dtype=np.float32)
    png = pixels.encode_png(rgba)
    back = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    np.testing.assert_array_equal(back, np.round(rgba * 255).astype(np.uint8))
    linear = pixels.encode_png(np.full((2, 2, 4), 0.5, dtype=np.float32), linear=True)
    assert tuple(np.asarray(Image.open(io.BytesIO(linear)))[0, 0]) == (188, 188, 188, 128)  # sRGB of linear 0.5


@pytest.mark.parametrize(
    "kind,options",
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True, "exif": b"Exif\x00\x00" + bytes(60_000)}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"quality": 80}),
        ("WEBP", {"exif": b"Exif\x00\x00x"}),
    ],
)
def test_image_size_from_the_header(kind, options):
    buffer = io.BytesIO()
    Image.new("RGB", (1234, 567), (200, 10, 10)).save(buffer, format=kind, **options)
    assert pixels.image_size(buffer.getvalue()) == (1234, 567)


def test_image_size_of_no_picture():
    assert pixels.image_size(b"this is no picture") is None
    assert pixels.image_size(b"\x89PNG\r\n\x1a\n" + bytes(100)) is None


def png(side: int, seed: int) -> bytes:
    return pixels.encode_png(np.random.default_rng(seed).random((side, side, 4), dtype=np.float32))


def test_history_keeps_the_newest_within_its_size_limit(tmp_path):
    folder = str(tmp_path / "history")
    keys = []
    for number in range(3):
        keys.append(history.add(folder, bytes([number]) * 40_000, png(64, number), {"name": f"n{number}"}, 1_000_000))
    assert [r["key"] for r in history.entries(folder)] == keys[::-1]
    record = history.entries(folder)[0]
    assert record["name"] == "n2" and record["input"] == f"{keys[2]}.input.png"
    with open(history.glb_path(folder, keys[2]), "rb") as handle:
        assert handle.read() == bytes([2]) * 40_000
    one_entry = history.size(folder) // 3
    fourth = history.add(folder, b"\x04" * 40_000, png(64, 4), {"name": "n3"}, 2 * one_entry + one_entry // 2)
    assert [r["key"] for r in history.entries(folder)] == [fourth, keys[2]]  # the two oldest went
    assert not [n for n in os.listdir(folder) if n.startswith((keys[0], keys[1]))]
    history.add(folder, bytes(5_000_000), png(8, 5), {"name": "huge"}, 1_000)  # over the limit alone: kept
    assert [r["name"] for r in history.entries(folder)] == ["huge"]


def test_history_delete_and_damaged_records(tmp_path):
    folder = str(tmp_path)
    key = history.add(folder, b"glb", png(8, 0), {"name": "a"}, 10_000_000)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "orphan.json").write_text(json.dumps({"key": "orphan"}))  # no GLB beside it
    assert [r["key"] for r in history.entries(folder)] == [key]
    history.delete(folder, key)
    assert history.entries(folder) == [] and not [n for n in os.listdir(folder) if n.startswith(key)]


def test_messages_in_the_panels_words():
    words = {
        "remove_background": ("Remove background", {"auto": "Auto", "never": "Never"}),
        "target_faces": ("Target faces", {}),
    }
    text = "use an image with a clear subject, or remove_background=never. target_faces: at least 100 (got 5)"
    assert wording.in_panel_words(text, words) == (
        "use an image with a clear subject, or Remove background: Never. Target faces: at least 100 (got 5)"
    )
