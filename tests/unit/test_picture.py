"""core.picture: libvirt's PPM screenshots, PNG files written and read without an image package, and
the box-averaged copy the VM detail draws."""

from __future__ import annotations

import struct
import zlib

import pytest

from kerub_tui.core.picture import Picture, PictureError, decode, from_png, from_ppm


def checker(width: int, height: int) -> Picture:
    rgb = bytearray()
    for y in range(height):
        for x in range(width):
            rgb += bytes((255, 255, 255)) if (x // 2 + y // 2) % 2 else bytes((0, 0, 170))
    return Picture(width, height, bytes(rgb))


def test_a_ppm_as_qemu_writes_it_becomes_a_png_that_reads_back_the_same():
    picture = checker(10, 6)
    ppm = b"P6\n10 6\n255\n" + picture.rgb
    assert from_ppm(ppm) == picture
    png = picture.png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (10, 6)
    assert from_png(png) == picture
    assert decode(png) == decode(ppm) == picture


def test_pngs_with_row_filters_and_alpha_are_read():
    width, height = 5, 4
    rows = []
    expected = bytearray()
    for y in range(height):
        raw = b"".join(bytes((x * 40, y * 50, 200, 255)) for x in range(width))
        expected += b"".join(raw[i:i + 3] for i in range(0, len(raw), 4))
        # filter 1 (sub): each byte minus the one of the pixel to its left
        sub = bytes((raw[i] - (raw[i - 4] if i >= 4 else 0)) & 0xFF for i in range(len(raw)))
        rows.append(b"\x01" + sub)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    assert from_png(png) == Picture(width, height, bytes(expected))


def test_scaling_averages_the_boxes():
    picture = Picture(4, 2, bytes([0, 0, 0, 255, 255, 255] * 4))
    small = picture.scaled(2, 1)
    assert small.width == 2 and small.height == 1
    assert small.pixel(0, 0) == (127, 127, 127)
    assert checker(720, 400).scaled(80, 44).width == 80


@pytest.mark.parametrize("data, said", [
    (b"", "neither a PNG nor"),
    (b"P6\n10 10\n255\n" + b"\0" * 10, "truncated"),
    (b"P6\n10 10\n65535\n", "largest sample"),
    (b"P6\n100000 100000\n255\n", "refused"),
    (checker(4, 4).png()[:-20], "truncated"),
    (checker(4, 4).png()[:40] + b"X" + checker(4, 4).png()[41:], "CRC"),
])
def test_what_is_not_a_picture_is_one_line(data, said):
    with pytest.raises(PictureError, match=said):
        decode(data)


def test_tesseract_reads_the_words_of_a_captured_screen():
    from pathlib import Path

    from kerub_tui.core import ocr

    capture = Path(__file__).resolve().parents[1] / "captures" / "screens" / "grub-rescue-720x400.png"
    picture = from_png(capture.read_bytes())
    assert picture.doubled().scaled(720, 400) == picture
    if not ocr.available():
        assert ocr.read_text(picture) is None  # no tesseract here: nothing is said, nothing fails
        pytest.skip("tesseract-ocr is not installed")
    text = ocr.read_text(picture)
    assert text is not None and "GRUB" in text and "Booting from" in text and "Machine UUID" in text
