"""Decoding every image mode, background removal through real rembg + onnxruntime, crop/pad, bad input."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import ImageDraw

from conftest import EXAMPLES
from remote.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidOptionError,
    ModelLoadError,
    NoForegroundError,
)
from remote.preprocess import BackgroundRemover, frame_object, load_image, prepare_image
from image_to_3d_dev.tiny_u2net import build_tiny_u2net
from upstream_preprocess import STORED, STORED_CASES, load_rgba, upstream_model_input, upstream_square

RED = (200, 30, 30)


def encode(image: PIL.Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def disk_on(background="white", size=(200, 160), box=(50, 40, 130, 120), colour=RED) -> PIL.Image.Image:
    """A filled ellipse (81 x 81 pixels for the default box) on a plain background."""
    image = PIL.Image.new("RGB", size, background)
    ImageDraw.Draw(image).ellipse(box, fill=colour)
    return image


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG written chunk by chunk, for what Pillow cannot save (16-bit RGB, huge sizes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def huge_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height, a few hundred KB at most (rows compress well)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return png(width, height, 1, 0, data)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_u2net(tmp_path_factory.mktemp("u2net") / "tiny_u2net.onnx")


@pytest.fixture
def remover(tiny_model) -> BackgroundRemover:
    return BackgroundRemover(tiny_model)


# ---------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"),
    [
        ("RGB", "PNG", "RGB"),
        ("RGBA", "PNG", "RGBA"),
        ("L", "PNG", "RGB"),
        ("LA", "PNG", "RGBA"),
        ("P", "PNG", "RGB"),
        ("1", "PNG", "RGB"),
        ("RGB", "JPEG", "RGB"),
        ("L", "JPEG", "RGB"),
        ("CMYK", "JPEG", "RGB"),
        ("RGB", "WEBP", "RGB"),
        ("LA", "WEBP", "RGBA"),
    ],
)
def test_every_mode_decodes_to_8_bit_rgb_or_rgba(mode, fmt, expected):
    image = disk_on().convert(mode)
    if "A" in mode:  # one transparent pixel, so encoders keep the alpha channel
        alpha = np.full((160, 200), 255, dtype=np.uint8)
        alpha[0, 0] = 0
        image.putalpha(PIL.Image.fromarray(alpha))
    options = {"lossless": True} if fmt == "WEBP" else {}
    loaded = load_image(encode(image, fmt, **options))
    assert loaded.mode == expected and loaded.size == (200, 160)
    source = np.asarray(image.convert(expected)).astype(int)
    pixels = np.asarray(loaded).astype(int)
    for y, x in [(80, 90), (5, 5), (150, 195)]:  # object, two background corners
        assert np.abs(pixels[y, x] - source[y, x]).max() < 12, (y, x)


def test_cmyk_jpeg_keeps_its_colours():
    loaded = np.asarray(load_image(encode(disk_on().convert("CMYK"), "JPEG", quality=95))).astype(int)
    assert np.abs(loaded[80, 90] - RED).max() < 12 and np.abs(loaded[5, 5] - 255).max() < 12


def test_alpha_survives_png_and_webp():
    image = disk_on().convert("RGBA")
    image.putpixel((0, 0), (255, 255, 255, 0))
    image.putpixel((1, 0), (255, 255, 255, 100))
    for fmt, options in [("PNG", {}), ("WEBP", {"lossless": True})]:
        loaded = np.asarray(load_image(encode(image, fmt, **options)))
        assert tuple(loaded[0, :2, 3]) == (0, 100), fmt


@pytest.mark.parametrize("mode", ["P", "L", "RGB"])
def test_transparency_key_becomes_alpha(mode):
    """A tRNS chunk (palette index, grey level or RGB colour) turns into a real alpha channel."""
    image = PIL.Image.new("RGB", (10, 10), (0, 0, 0))
    image.paste((255, 255, 255), (2, 2, 8, 8))
    image = image.convert(mode)
    key = 0 if mode in ("P", "L") else (0, 0, 0)
    if mode == "P":
        key = image.getpixel((0, 0))
    loaded = np.asarray(load_image(encode(image, "PNG", transparency=key)))
    assert loaded.shape == (10, 10, 4)
    assert loaded[0, 0, 3] == 0 and tuple(loaded[5, 5]) == (255, 255, 255, 255)


def test_16_bit_grey_png_is_scaled_not_clipped():
    ramp = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096 + 4095).astype(np.uint16)
    image = PIL.Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    loaded = load_image(encode(image))
    assert loaded.mode == "RGB"
    grey = np.asarray(loaded)[:, :, 0].astype(int)
    np.testing.assert_array_equal(grey, np.round(ramp / 65535 * 255).astype(int))  # 4095 -> 16, 65535 -> 255


def test_16_bit_grey_png_with_transparency_key():
    ramp = np.full((4, 4), 40000, dtype=np.uint16)
    ramp[0, 0] = 1234
    loaded = np.asarray(load_image(encode(PIL.Image.fromarray(ramp), "PNG", transparency=1234)))
    assert loaded.shape == (4, 4, 4)
    assert loaded[0, 0, 3] == 0 and tuple(loaded[1, 1]) == (156, 156, 156, 255)  # 40000/65535*255


def test_16_bit_rgb_png_is_scaled():
    pixel = struct.pack(">HHH", 0xFFFF, 0x8000, 0x0FFF)  # -> 255, 128, 15
    rows = zlib.compress((b"\x00" + pixel * 3) * 2)
    loaded = load_image(png(3, 2, 16, 2, rows))
    assert loaded.mode == "RGB" and tuple(np.asarray(loaded)[1, 2]) == (255, 128, 15)


def marker_image() -> PIL.Image.Image:
    """40 x 20, white, with a red band on its left quarter."""
    image = PIL.Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))
    return image


def red_side(pixels: np.ndarray) -> str:
    red = (pixels[:, :, 0] > 200) & (pixels[:, :, 1] < 80)
    rows, cols = np.nonzero(red)
    height, width = red.shape
    if cols.max() < width / 3:
        return "left"
    if cols.min() > 2 * width / 3:
        return "right"
    if rows.max() < height / 3:
        return "top"
    assert rows.min() > 2 * height / 3
    return "bottom"


@pytest.mark.parametrize(
    ("orientation", "size", "side"),
    [(1, (40, 20), "left"), (3, (40, 20), "right"), (6, (20, 40), "top"), (8, (20, 40), "bottom")],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_is_applied(orientation, size, side, fmt):
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation  # 3: rotate 180, 6: rotate 90 clockwise, 8: 90 anticlockwise to display
    loaded = load_image(encode(marker_image(), fmt, exif=exif.tobytes(), quality=95))
    assert loaded.size == size
    assert red_side(np.asarray(loaded)) == side
    assert loaded.getexif().get(0x0112) in (None, 1)  # nothing downstream rotates it again


def test_the_remover_masks_the_image_as_given_whatever_its_exif_says(remover):
    """rembg applies EXIF orientation itself; the mask must match the pixels we hand it, both for an
    image load_image has turned upright and for one opened raw (its EXIF still says "rotate")."""
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    data = encode(disk_on(size=(200, 120), box=(20, 20, 80, 100)), "JPEG", exif=exif.tobytes())
    for image, size in [(load_image(data), (120, 200)), (PIL.Image.open(io.BytesIO(data)), (200, 120))]:
        assert image.size == size
        cut = np.asarray(remover(image))
        assert cut.shape == (size[1], size[0], 4)
        solid = (cut[:, :, 3] > 128) == (np.asarray(image.convert("RGB"))[:, :, 1] < 128)
        assert solid.mean() > 0.97  # the mask lies on the red object, not on a turned copy of it


def test_paths_are_read(tmp_path):
    file = tmp_path / "disk.png"
    file.write_bytes(encode(disk_on()))
    assert load_image(file).size == load_image(str(file)).size == (200, 160)
    with pytest.raises(InvalidImageError, match="No such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="No such image file"):
        load_image(str(tmp_path))  # a folder is not an image file


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty .*send a PNG, JPEG or WebP"),
        (b"this is not an image at all" * 10, "not a PNG, JPEG or WebP image"),
        (encode(disk_on())[:300], "could not be decoded .*truncated or corrupt"),
        (encode(disk_on(), "JPEG")[:600], "could not be decoded .*truncated or corrupt"),
        (encode(disk_on(), "WEBP")[:200], "could not be decoded .*truncated or corrupt"),
        (encode(disk_on(), "GIF"), "GIF images are not accepted; convert the image to PNG, JPEG or WebP"),
        (encode(disk_on(), "BMP"), "BMP images are not accepted"),
        (encode(disk_on(), "TIFF"), "TIFF images are not accepted"),
    ],
    ids=["zero-bytes", "garbage", "truncated-png", "truncated-jpeg", "truncated-webp", "gif", "bmp", "tiff"],
)
def test_bad_bytes_are_refused_with_a_clear_message(data, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(data)


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    bomb = huge_png(30000, 30000)
    assert len(bomb) < 300_000
    with pytest.raises(ImageTooLargeError, match="900000000 pixels.*at most 16.0 MP"):
        load_image(bomb)  # past Pillow's own limit too: its check answers first
    with pytest.raises(ImageTooLargeError, match="4000x3000 \\(12.0 MP\\), over the limit of 10.0 MP"):
        load_image(huge_png(4000, 3000), max_pixels=10_000_000)
    # A header that promises 8000 x 6000 pixels and carries no valid pixel data: only a check made
    # before decoding can answer "too large" rather than "corrupt".
    no_pixels = png(8000, 6000, 8, 2, b"not zlib data")
    with pytest.raises(ImageTooLargeError, match="8000x6000"):
        load_image(no_pixels)
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        load_image(no_pixels, max_pixels=None)


def test_pillows_decompression_bomb_check_stays_on_without_our_limit():
    with pytest.raises(ImageTooLargeError, match="too large to decode safely .*at most 89.5 MP"):
        load_image(huge_png(30000, 30000), max_pixels=None)


# ---------------------------------------------------------------------------------------------
# Background removal (real rembg + onnxruntime, tiny ONNX model)


def test_real_rembg_session_cuts_out_the_object(remover):
    image = disk_on()
    cut = np.asarray(remover(image))
    assert cut.shape == (160, 200, 4)
    assert cut[80, 90, 3] > 230 and cut[5, 5, 3] < 20
    disk_area = np.pi * 40.5**2
    assert abs((cut[:, :, 3] > 128).sum() - disk_area) < 0.1 * disk_area
    # rembg's own cutout, as upstream uses it: the colours are multiplied by the mask.
    expected = np.asarray(image).astype(np.float64) * cut[:, :, 3:4] / 255
    assert np.abs(cut[:, :, :3] - expected).max() <= 1
    assert remover.calls == 1


def test_the_tiny_model_finds_the_object_on_any_plain_background(remover):
    cut = np.asarray(remover(disk_on(background=(127, 127, 127))))
    assert cut[80, 90, 3] > 230 and cut[5, 5, 3] < 20 and cut[155, 195, 3] < 20


def test_one_session_is_created_and_reused_across_threads(tiny_model):
    remover = BackgroundRemover(tiny_model)
    sessions: list[object] = []
    threads = [threading.Thread(target=lambda: sessions.append(remover.session())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sessions) == 4 and len({id(session) for session in sessions}) == 1
    remover(disk_on())
    assert remover.session() is sessions[0]


def test_missing_or_broken_model_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist; point --rembg-model at a u2net.onnx"):
        BackgroundRemover(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    remover = BackgroundRemover(broken)
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        remover(disk_on())


def test_default_session_uses_the_file_in_u2net_home_without_downloading(tiny_model, tmp_path, monkeypatch):
    """rembg's default u2net session takes U2NET_HOME/u2net.onnx as it is when the checksum check is off."""
    (tmp_path / "u2net.onnx").write_bytes(tiny_model.read_bytes())
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    monkeypatch.setenv("MODEL_CHECKSUM_DISABLED", "1")
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # any download attempt fails at once
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    cut = np.asarray(BackgroundRemover()(disk_on()))
    assert cut[80, 90, 3] > 230 and cut[5, 5, 3] < 20


def test_default_session_with_a_wrong_checksum_tries_to_download_and_says_what_to_do(tiny_model, tmp_path, monkeypatch):
    (tmp_path / "u2net.onnx").write_bytes(tiny_model.read_bytes())  # not the published MD5
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    monkeypatch.delenv("MODEL_CHECKSUM_DISABLED", raising=False)
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ModelLoadError, match="put u2net.onnx in U2NET_HOME .* or pass --rembg-model"):
        BackgroundRemover().session()
    assert (tmp_path / "u2net.onnx").read_bytes() == tiny_model.read_bytes()


# ---------------------------------------------------------------------------------------------
# Crop, pad, composite, resize: upstream's preprocessing


@pytest.mark.parametrize("name", STORED_CASES)
def test_model_input_is_upstreams_for_stored_cut_outs(name, upstream_expected):
    """Odd sizes, wide and tall, larger than 1024 px, soft alpha, smaller than 512: the stored input
    that upstream's preprocessing gives its model, matched on every pixel."""
    image = load_image(STORED / f"{name}.png")
    ratio = float(upstream_expected[f"{name}_ratio"])
    prepared = prepare_image(image, foreground_ratio=ratio)
    expected = upstream_expected[name]
    assert prepared.shape == expected.shape == (512, 512, 3) and prepared.dtype == np.float32
    error = np.abs(prepared - expected).max()
    assert error <= 1 / 255  # the contract
    assert error < 1e-5  # and in fact the same numbers, up to float32 rounding


@pytest.mark.parametrize("ratio", [0.5, 0.66, 0.85, 1.0])
@pytest.mark.parametrize("name", ["chair", "hamburger", "robot"])
def test_model_input_is_upstreams_for_the_examples_at_any_ratio(name, ratio):
    rgba = load_rgba(EXAMPLES / f"{name}.png")
    prepared = prepare_image(PIL.Image.fromarray(rgba, "RGBA"), foreground_ratio=ratio)
    assert np.abs(prepared - upstream_model_input(rgba, ratio)).max() < 1e-5


@pytest.mark.slow  # a large image
def test_a_large_sharp_subject_is_resized_exactly_without_building_the_square():
    big = PIL.Image.new("RGBA", (3000, 2000), (0, 0, 0, 0))
    ImageDraw.Draw(big).rectangle((100, 100, 2899, 1899), fill=(0, 200, 0, 255))
    ImageDraw.Draw(big).ellipse((900, 500, 1300, 900), fill=(250, 20, 20, 140))
    prepared = prepare_image(big, foreground_ratio=0.85)
    reference = upstream_model_input(np.asarray(big), 0.85)
    assert np.abs(prepared - reference).max() < 1e-5
    green = prepared[:, :, 1] > 0.6
    rows, cols = np.flatnonzero(green.any(axis=1)), np.flatnonzero(green.any(axis=0))
    assert (cols[-1] - cols[0] + 1) / 512 == pytest.approx(0.85, abs=0.01)
    assert (rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1) == pytest.approx(1799 / 2799, abs=0.01)


def test_framing_drops_the_last_row_and_column_and_pads_twice():
    """A 100 x 50 rectangle: upstream crops 99 x 49 (its slice end is the last index), pads to a
    99-pixel square (25 rows on top), then to int(99 / 0.8) = 123 (12 more on top and left)."""
    alpha = np.zeros((200, 300), dtype=np.uint8)
    alpha[30:80, 50:150] = 255
    framing = frame_object(alpha, 0.8)
    assert (framing.top_row, framing.bottom_row, framing.left_col, framing.right_col) == (30, 79, 50, 149)
    assert (framing.side, framing.top, framing.left) == (123, 25 + 12, 0 + 12)
    canvas = np.zeros((200, 300, 4), dtype=np.uint8)
    canvas[alpha > 0] = (255, 0, 0, 255)
    square = upstream_square(canvas, 0.8)
    assert square.shape == (123, 123, 3)
    red = np.argwhere(square[:, :, 0] == 255)
    assert red.min(axis=0).tolist() == [37, 12] and red.max(axis=0).tolist() == [37 + 48, 12 + 98]


def test_grey_is_upstreams_truncated_127_and_soft_alpha_is_composited_then_truncated():
    canvas = np.zeros((64, 64, 4), dtype=np.uint8)
    canvas[8:56, 8:56] = (200, 100, 0, 128)
    prepared = prepare_image(PIL.Image.fromarray(canvas, "RGBA"), foreground_ratio=0.5)
    assert prepared[0, 0].tolist() == [np.float32(127) / np.float32(255)] * 3  # not 0.5
    a = np.float32(128) / np.float32(255)
    expected = [int((np.float32(v / 255) * a + (1 - a) * np.float32(0.5)) * np.float32(255)) for v in (200, 100, 0)]
    assert expected == [163, 113, 63]
    np.testing.assert_allclose(prepared[256, 256], np.array(expected) / 255, atol=1e-6)


def test_an_object_one_pixel_thin_is_refused_clearly():
    canvas = np.zeros((40, 40, 4), dtype=np.uint8)
    canvas[20, 5:35] = 255
    with pytest.raises(NoForegroundError, match="single row or column"):
        prepare_image(PIL.Image.fromarray(canvas, "RGBA"))


@pytest.mark.parametrize("ratio", [0.5, 0.85, 1.0])
def test_object_spans_the_foreground_ratio(remover, ratio):
    """The square's side is int(extent of alpha > 0 (less its last pixel) / ratio), the disk in its middle."""
    cut = np.asarray(remover(disk_on()))
    framing = frame_object(cut[:, :, 3], ratio)
    extent = max(framing.bottom_row - framing.top_row, framing.right_col - framing.left_col)
    assert framing.side == int(extent / ratio)
    prepared = prepare_image(disk_on(), foreground_ratio=ratio, remover=remover)
    box = red_bbox(prepared)
    assert (box[1] - box[0] + 1) / 512 == pytest.approx(81 / framing.side, abs=0.02)
    assert_centred(box, 512, tolerance=512 / framing.side * 1.5)
    np.testing.assert_allclose(prepared[256, 256], np.array(RED) / 255, atol=0.02)


def red_bbox(prepared: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns (first, last) of the red disk (red well above green)."""
    red = prepared[:, :, 0] - prepared[:, :, 1] > 0.3
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def assert_centred(box: tuple[int, int, int, int], side: int, tolerance: float = 1.5) -> None:
    top, bottom, left, right = box
    assert abs((top + bottom) / 2 - (side - 1) / 2) <= tolerance
    assert abs((left + right) / 2 - (side - 1) / 2) <= tolerance


def test_background_removal_is_upstreams_rembg_cutout_then_its_crop(remover):
    """An opaque picture goes through rembg's cutout (colours times mask), then exactly the cut-out
    path: the soft edge is multiplied by the mask twice, as upstream does."""
    image = disk_on()
    cut = remover(image)
    prepared = prepare_image(image, remover=remover)
    assert remover.calls == 2
    reference = upstream_model_input(np.asarray(cut), 0.85)
    assert np.abs(prepared - reference).max() < 1e-5


def test_transparent_images_skip_background_removal_in_auto(remover):
    image = disk_on().convert("RGBA")
    alpha = np.where(np.asarray(disk_on())[:, :, 1] < 128, 255, 0).astype(np.uint8)
    image.putalpha(PIL.Image.fromarray(alpha))
    prepared = prepare_image(image, remover=remover)
    assert remover.calls == 0
    assert np.abs(prepared - upstream_model_input(np.asarray(image), 0.85)).max() < 1e-5
    opaque = disk_on().convert("RGBA")  # an alpha channel that hides nothing is not a cut-out
    prepare_image(opaque, remover=remover)
    prepare_image(disk_on(), remover=remover)
    assert remover.calls == 2


def test_always_ignores_what_transparent_pixels_hide(remover):
    """ "always" runs the remover even on a cut-out; junk under alpha 0 must not become the object."""
    rgb = np.asarray(disk_on(size=(240, 160), box=(140, 40, 220, 120))).copy()
    rgb[:, :100] = (30, 60, 220)  # blue junk on the left, all of it transparent
    alpha = np.where(np.arange(240) < 100, 0, 255).astype(np.uint8)[None, :].repeat(160, axis=0)
    image = PIL.Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    never = prepare_image(image, remove_background="never", remover=remover)
    always = prepare_image(image, remove_background="always", remover=remover)
    assert remover.calls == 1
    assert np.abs(never - upstream_model_input(np.dstack([rgb, alpha]), 0.85)).max() < 1e-5
    blue = (always[:, :, 2] - always[:, :, 0] > 0.3).sum()
    assert blue == 0  # the junk is gone
    assert_centred(red_bbox(always), 512, tolerance=8)
    np.testing.assert_allclose(always[256, 256], np.array(RED) / 255, atol=0.02)


def test_never_uses_the_whole_opaque_picture(remover):
    """The whole picture is the object (less upstream's last row and column), padded to the ratio."""
    never = prepare_image(disk_on(), remove_background="never", remover=remover)
    assert remover.calls == 0
    opaque = np.asarray(disk_on().convert("RGBA"))
    assert np.abs(never - upstream_model_input(opaque, 0.85)).max() < 1e-5
    np.testing.assert_allclose(never[256, 2], 127 / 255)  # grey padding at the side
    np.testing.assert_allclose(never[256 - 150, 256], 1.0, atol=1e-6)  # the white picture


def test_other_modes_passed_straight_to_prepare_image_are_normalised(remover):
    grey_with_alpha = disk_on().convert("LA")
    alpha = np.where(np.asarray(disk_on())[:, :, 1] < 128, 255, 0).astype(np.uint8)
    grey_with_alpha.putalpha(PIL.Image.fromarray(alpha))
    prepared = prepare_image(grey_with_alpha, remover=remover)
    assert remover.calls == 0 and prepared.shape == (512, 512, 3)
    rgba = np.asarray(grey_with_alpha.convert("RGBA"))
    assert np.abs(prepared - upstream_model_input(rgba, 0.85)).max() < 1e-5


def test_fully_transparent_image_has_no_foreground(remover):
    empty = load_image(encode(PIL.Image.new("RGBA", (50, 50), (255, 0, 0, 0))))
    for mode in ("auto", "never"):
        with pytest.raises(NoForegroundError, match="No object .*remove_background=never"):
            prepare_image(empty, remove_background=mode, remover=remover)
    assert remover.calls == 0


@pytest.mark.parametrize(
    "options",
    [{"foreground_ratio": 0.4}, {"foreground_ratio": 1.2}, {"remove_background": "maybe"}],
)
def test_options_out_of_range(options):
    with pytest.raises(InvalidOptionError, match="foreground_ratio must be between 0.5 and 1.0|auto, always, never"):
        prepare_image(disk_on(), **options)


def test_removal_without_a_remover_is_a_programming_error():
    with pytest.raises(ValueError, match="needs a BackgroundRemover"):
        prepare_image(disk_on())


# ---------------------------------------------------------------------------------------------
# The example images


@pytest.mark.parametrize("name", ["chair", "hamburger", "robot"])
def test_example_cut_outs_keep_their_alpha(name, remover):
    image = load_image(EXAMPLES / f"{name}.png")
    assert image.mode == "RGBA"
    prepared = prepare_image(image, remover=remover)
    assert remover.calls == 0
    assert prepared.shape == (512, 512, 3)
    np.testing.assert_allclose(prepared[0, 0], 127 / 255)
    assert np.abs(prepared - 0.5).max() > 0.2


def test_opaque_teapot_example_goes_through_rembg(remover):
    teapot = load_image(EXAMPLES / "teapot.png")
    assert teapot.mode == "RGB"
    mask = np.asarray(remover.mask(teapot))
    assert mask[0, 0] < 30 and mask[437, 437] > 200  # grey background out, the pot's body in
    prepared = prepare_image(teapot, remover=remover)
    assert remover.calls == 2
    framing = frame_object(mask, 0.85)
    assert framing.side < 874 / 0.85 - 50  # cropped to the pot, not the whole picture
    assert np.abs(prepared - upstream_model_input(np.asarray(remover(teapot)), 0.85)).max() < 1e-5
