"""remote/fast_png.py: libpng's pixels equal Pillow's wherever it is used, and every PNG it must not
decode (another mode, a colour key, EXIF or XMP, animation, interlacing, damage) is left to Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest

from conftest import EXAMPLES
from remote.errors import InvalidImageError
from remote.fast_png import plain_png_pixels, plain_png_shape
from remote.pipeline import warm_up_png
from remote.preprocess import load_image
from test_preprocess import disk_on, encode, png


def pillow_pixels(data: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(data)))


def noisy_rgba(seed: int, size=(97, 61)) -> PIL.Image.Image:
    """Random pixels with smooth regions, so the encoder picks every row filter somewhere."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size[0] * size[1] * 4).reshape(size[1], size[0], 4)
    noise = rng.integers(0, 256, (size[1], size[0], 4))
    mixed = np.where(rng.random((size[1], size[0], 1)) < 0.5, ramp, noise).astype(np.uint8)
    return PIL.Image.fromarray(mixed, "RGBA")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def after_header(data: bytes, kind: bytes, body: bytes) -> bytes:
    """`data` with one more chunk right after IHDR (8 signature bytes + 25 of IHDR), before the pixels."""
    return data[:33] + chunk(kind, body) + data[33:]


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """`data` with one more chunk just before IEND (after the pixels, where Pillow's open does not look)."""
    return data[:-12] + chunk(kind, body) + data[-12:]


PLAIN = {
    "rgba": encode(noisy_rgba(0)),
    "rgb": encode(noisy_rgba(1).convert("RGB")),
    "rgba-level-0": encode(noisy_rgba(2), compress_level=0),
    "rgba-optimised": encode(noisy_rgba(3), optimize=True),
    "rgb-1x1": encode(PIL.Image.new("RGB", (1, 1), (1, 2, 3))),
    "chair-cut-out": (EXAMPLES / "chair.png").read_bytes(),
}
PLAIN["with-text"] = with_chunk(PLAIN["rgba"], b"tEXt", b"Software\0an editor")  # text Pillow only stores
# Colour-management chunks neither decoder applies (libpng would, if asked to): the pixels stay the file's.
PLAIN["with-gamma"] = after_header(PLAIN["rgba"], b"gAMA", struct.pack(">I", 20000))  # gamma 0.2
PLAIN["with-srgb"] = after_header(PLAIN["rgb"], b"sRGB", b"\x00")
PLAIN["with-significant-bits"] = after_header(PLAIN["rgba"], b"sBIT", b"\x05\x05\x05\x05")
PLAIN["with-background"] = after_header(PLAIN["rgb"], b"bKGD", struct.pack(">3H", 10, 20, 30))


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_pngs_decode_to_pillows_pixels(name):
    data = PLAIN[name]
    pixels = plain_png_pixels(data)
    assert pixels is not None, "a plain 8-bit RGB(A) PNG should take libpng's path"
    expected = pillow_pixels(data)
    assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
    assert np.array_equal(pixels, expected)


def test_load_image_returns_libpngs_pixels_for_a_plain_png():
    data = PLAIN["chair-cut-out"]
    image = load_image(data)
    assert image.mode == "RGBA" and image.size == (512, 512)
    assert image.format is None, "a Pillow-decoded image would keep format PNG: the fast path was not taken"
    assert np.array_equal(np.asarray(image), pillow_pixels(data))


def test_the_warm_up_decodes_its_picture_on_libpngs_path():
    """So the first request after start-up finds libpng loaded (the codec loads on first use)."""
    pixels = plain_png_pixels(warm_up_png())
    assert pixels is not None and pixels.shape == (64, 64, 4)
    assert pixels[32, 32].tolist() == [200, 120, 60, 255] and pixels[0, 0, 3] == 0


def exif_orientation(value: int) -> bytes:
    exif = PIL.Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def text_info(keyword: str, value: str, international: bool = False) -> PIL.PngImagePlugin.PngInfo:
    info = PIL.PngImagePlugin.PngInfo()
    (info.add_itxt if international else info.add_text)(keyword, value)
    return info


LEFT_TO_PILLOW = {
    "palette": encode(noisy_rgba(5).convert("P")),
    "grey": encode(noisy_rgba(6).convert("L")),
    "grey-alpha": encode(noisy_rgba(7).convert("LA")),
    "rgb-colour-key": encode(disk_on(), transparency=(255, 255, 255)),
    "sixteen-bit-grey": encode(PIL.Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30))),
    "sixteen-bit-rgb": png(2, 1, 16, 2, zlib.compress(b"\x00" + bytes(range(12)))),
    "exif-chunk": encode(noisy_rgba(8), exif=exif_orientation(6)),
    "exif-after-pixels": with_chunk(PLAIN["rgba"], b"eXIf", exif_orientation(6)),
    "raw-exif-text": encode(noisy_rgba(9), pnginfo=text_info("Raw profile type exif", "\nexif\n 0\n")),
    "xmp": encode(noisy_rgba(10), pnginfo=text_info("XML:com.adobe.xmp", 'tiff:Orientation="6"', True)),
    "animated": encode(noisy_rgba(11), save_all=True, append_images=[noisy_rgba(12)]),
    "interlaced": PLAIN["rgba"][:28] + b"\x01" + PLAIN["rgba"][29:],  # IHDR's interlace byte
    "truncated": PLAIN["rgba"][:-100],
    "no-iend": PLAIN["rgba"][:-12],
    "not-png": encode(disk_on(), "JPEG"),
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(LEFT_TO_PILLOW))
def test_other_pngs_are_left_to_pillow(name):
    assert plain_png_shape(LEFT_TO_PILLOW[name]) is None
    assert plain_png_pixels(LEFT_TO_PILLOW[name]) is None


def test_exif_orientation_after_the_pixels_is_still_applied():
    """An eXIf chunk after IDAT is invisible until the whole file is read: the walk must still find it."""
    landscape = noisy_rgba(13, size=(40, 20))
    data = with_chunk(encode(landscape), b"eXIf", exif_orientation(6))  # 6: rotate 90 clockwise to view
    assert load_image(data).size == (20, 40)


def test_damaged_pixel_data_libpng_refuses_is_decoded_by_pillow_as_before():
    """A wrong IDAT checksum: libpng refuses the file, Pillow (which does not check it) decodes it."""
    data = bytearray(PLAIN["rgba"])
    crc_at = data.index(b"IDAT") + 4 + struct.unpack(">I", data[data.index(b"IDAT") - 4 : data.index(b"IDAT")])[0]
    data[crc_at] ^= 1
    assert plain_png_shape(bytes(data)) is not None and plain_png_pixels(bytes(data)) is None
    assert np.array_equal(np.asarray(load_image(bytes(data))), pillow_pixels(PLAIN["rgba"]))


def test_broken_pixel_data_is_still_refused_with_pillows_message():
    rows = b"".join(b"\x00" + bytes(range(64 * 4)) for _ in range(48))
    broken = png(64, 48, 8, 6, zlib.compress(rows)[:-30])  # chunks intact, the deflate stream cut short
    assert plain_png_shape(broken) is not None
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        load_image(broken)
