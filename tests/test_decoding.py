"""Decoding stays bounded: big JPEGs decode at reduced scale, the pixel limit is checked on what is
decoded, and only a few images decode at once."""

from __future__ import annotations

import io
import threading

import PIL.Image
import pytest

from remote.errors import ImageTooLargeError
from remote.preprocess import DECODE_SLOTS, DEFAULT_MAX_PIXELS, _decode_slots, load_image


def encode(image: PIL.Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """6000 x 4000 (24 MP): a camera photo."""
    image = PIL.Image.new("RGB", (6000, 4000), (90, 140, 200))
    image.paste((200, 60, 40), (2000, 1000, 4000, 3000))
    return encode(image, "JPEG", quality=80)


def test_a_jpeg_over_the_limit_is_decoded_at_reduced_scale(big_jpeg):
    image = load_image(big_jpeg)  # 24 MP against the 16 MP default
    assert image.size == (3000, 2000)  # libjpeg's 1/2 scale: the largest that fits
    assert image.mode == "RGB"
    assert image.getpixel((1500, 1000)) == pytest.approx((200, 60, 40), abs=8)  # the centre survives


def test_the_pixel_limit_applies_to_what_is_decoded(big_jpeg):
    """24 MP on paper, 6 MP decoded: under an 8 MP limit. A PNG cannot be reduced: refused."""
    assert load_image(big_jpeg, max_pixels=8_000_000).size == (3000, 2000)
    png = encode(PIL.Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(ImageTooLargeError, match=r"12.0 MP\), over the limit of 8.0 MP"):
        load_image(png, max_pixels=8_000_000)


def test_a_jpeg_within_the_limit_is_decoded_whole():
    """Every pixel, as upstream decodes it: the model's input stays upstream's."""
    image = load_image(encode(PIL.Image.new("RGB", (4800, 3200), "white"), "JPEG"))  # 15.4 MP
    assert image.size == (4800, 3200)


def test_the_default_limit_refuses_a_40_mp_png_before_decoding():
    png = encode(PIL.Image.new("1", (8000, 5000)), "PNG")  # a few KB on disk
    assert DEFAULT_MAX_PIXELS < 40_000_000
    with pytest.raises(ImageTooLargeError, match="over the limit of 16.0 MP"):
        load_image(png)


def test_only_a_few_images_decode_at_once():
    data = encode(PIL.Image.new("RGB", (64, 64), "white"), "PNG")
    for _ in range(DECODE_SLOTS):  # every slot busy, as with DECODE_SLOTS large decodes under way
        _decode_slots.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (load_image(data), done.set()))
    try:
        worker.start()
        assert not done.wait(0.5), "a decode ran while every decode slot was taken"
    finally:
        for _ in range(DECODE_SLOTS):
            _decode_slots.release()
    assert done.wait(10)
    worker.join()
