"""Decoding every image mode, background removal through real rembg + onnxruntime, crop/pad, bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
from PIL import ImageDraw

from conftest import EXAMPLES
from remote.errors import ImageTooLargeError, InvalidImageError, InvalidOptionError, NoForegroundError
from remote.preprocess import BackgroundRemover, load_image, prepare_image
from tiny_u2net import build_tiny_u2net


def encode(image: PIL.Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def disk_on_white(size=(200, 160), colour=(200, 30, 30)) -> PIL.Image.Image:
    image = PIL.Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((50, 40, 130, 120), fill=colour)
    return image


@pytest.fixture(scope="module")
def remover(tmp_path_factory):
    return BackgroundRemover(build_tiny_u2net(tmp_path_factory.mktemp("u2net") / "tiny_u2net.onnx"))


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"),
    [
        ("RGB", "PNG", "RGB"), ("RGBA", "PNG", "RGBA"), ("L", "PNG", "RGB"), ("LA", "PNG", "RGBA"),
        ("P", "PNG", "RGB"), ("RGB", "JPEG", "RGB"), ("L", "JPEG", "RGB"), ("CMYK", "JPEG", "RGB"),
        ("RGB", "WEBP", "RGB"),
    ],
)
def test_every_mode_decodes_to_8_bit_rgb_or_rgba(mode, fmt, expected):
    image = disk_on_white().convert(mode)
    loaded = load_image(encode(image, fmt))
    assert loaded.mode == expected and loaded.size == (200, 160)
    source = np.asarray(image.convert(expected)).astype(int)
    assert np.abs(np.asarray(loaded).astype(int)[80, 90] - source[80, 90]).max() < 12
    assert np.abs(np.asarray(loaded).astype(int)[5, 5] - source[5, 5]).max() < 12


def test_webp_with_alpha_keeps_it():
    image = disk_on_white().convert("RGBA")
    image.putpixel((0, 0), (255, 255, 255, 0))
    loaded = load_image(encode(image, "WEBP", lossless=True))
    assert loaded.mode == "RGBA" and np.asarray(loaded)[0, 0, 3] == 0


def test_palette_with_transparency_keeps_it():
    image = PIL.Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (2, 2, 8, 8))
    loaded = load_image(encode(image, "PNG", transparency=0))
    assert loaded.mode == "RGBA"
    assert np.asarray(loaded)[0, 0, 3] == 0 and tuple(np.asarray(loaded)[5, 5]) == (255, 0, 0, 255)


def test_16_bit_png_is_scaled_not_clipped():
    ramp = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096 + 4095).astype(np.uint16)
    image = PIL.Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    loaded = np.asarray(load_image(encode(image)))
    assert loaded[0, 0, 0] == 16 and loaded[3, 3, 0] == 255  # 4095/65535 -> 16, 65535 -> 255


def test_exif_orientation_is_applied():
    image = PIL.Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (20, 40)
    pixels = np.asarray(loaded)
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 1] < 60  # red is now on top
    assert pixels[-3, 10, 1] > 200


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "not a PNG, JPEG or WebP"),
        (encode(disk_on_white())[:300], "truncated or corrupt"),
        (encode(disk_on_white(), "GIF"), "not a PNG, JPEG or WebP"),
        (encode(disk_on_white(), "BMP"), "not a PNG, JPEG or WebP"),
    ],
    ids=["zero-bytes", "garbage", "truncated-png", "gif", "bmp"],
)
def test_bad_bytes_are_refused_with_a_clear_message(data, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(data)


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, a few KB on disk (all rows identical and compressible)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    data = huge_png(30000, 30000)
    assert len(data) < 200_000
    with pytest.raises(ImageTooLargeError, match="too large|over the limit"):
        load_image(data)
    with pytest.raises(ImageTooLargeError, match="8000x6000 .* over the limit of 40.0 MP"):
        load_image(huge_png(8000, 6000))


def test_missing_file():
    with pytest.raises(InvalidImageError, match="No such image file"):
        load_image("/no/such/picture.png")


def test_real_rembg_session_cuts_out_the_object(remover):
    cut = np.asarray(remover(disk_on_white()))
    assert cut.shape == (160, 200, 4)
    assert cut[80, 90, 3] > 200 and cut[5, 5, 3] < 30
    assert abs((cut[:, :, 3] > 128).sum() - np.pi * 40 * 40) < 0.15 * np.pi * 40 * 40
    assert remover.session() is remover.session()  # one session, reused


def test_crop_pad_and_grey_composite(remover):
    prepared = prepare_image(disk_on_white(), foreground_ratio=0.8, remover=remover)
    alpha = np.asarray(remover(disk_on_white()))[:, :, 3]
    extent = max(np.ptp(np.flatnonzero(alpha.max(axis=1))), np.ptp(np.flatnonzero(alpha.max(axis=0)))) + 1
    side = prepared.shape[0]
    assert prepared.shape == (side, side, 3) and prepared.dtype == np.float32
    assert side == round(extent / 0.8)
    np.testing.assert_allclose(prepared[0, 0], 0.5)  # grey background
    centre = prepared[side // 2, side // 2]
    assert centre[0] > 0.7 and centre[1] < 0.2  # the red object, centred
    object_rows = np.flatnonzero(np.abs(prepared - 0.5).max(axis=(1, 2)) > 0.1)
    assert (object_rows[-1] - object_rows[0] + 1) / side == pytest.approx(81 / extent * 0.8, abs=0.03)


def test_transparent_images_skip_background_removal_in_auto():
    never_called = BackgroundRemover("/no/such/model.onnx")
    image = load_image(EXAMPLES / "chair.png")
    prepared = prepare_image(image, remover=never_called)
    assert never_called.calls == 0 and prepared.shape[0] == prepared.shape[1]
    with pytest.raises(InvalidOptionError, match="does not exist"):
        prepare_image(image, remove_background="always", remover=never_called)


def test_always_and_never(remover):
    always = prepare_image(disk_on_white(), remove_background="always", remover=remover)
    never = prepare_image(disk_on_white(), remove_background="never", remover=remover)
    assert remover.calls >= 1
    assert never.shape[0] == round(200 / 0.85)  # the whole picture is the object
    np.testing.assert_allclose(never[never.shape[0] // 2, 2], 0.5)  # side padding is grey
    assert always.shape[0] < never.shape[0]


def test_opaque_example_goes_through_rembg(remover):
    teapot = load_image(EXAMPLES / "teapot.png")
    assert teapot.mode == "RGB"
    before = remover.calls
    prepare_image(teapot, remover=remover)
    assert remover.calls == before + 1


def test_fully_transparent_image_has_no_foreground():
    empty = PIL.Image.new("RGBA", (50, 50), (255, 0, 0, 0))
    with pytest.raises(NoForegroundError, match="No object"):
        prepare_image(load_image(encode(empty)), remove_background="never")


@pytest.mark.parametrize("options", [{"foreground_ratio": 0.4}, {"foreground_ratio": 1.2}, {"remove_background": "maybe"}])
def test_options_out_of_range(options):
    with pytest.raises(InvalidOptionError):
        prepare_image(disk_on_white(), **options)


def test_large_images_are_scaled_to_a_bounded_square():
    big = PIL.Image.new("RGBA", (3000, 2000), (0, 0, 0, 0))
    ImageDraw.Draw(big).rectangle((100, 100, 2900, 1900), fill=(0, 200, 0, 255))
    prepared = prepare_image(big)
    assert prepared.shape[0] <= 1024 / 0.85 + 2
