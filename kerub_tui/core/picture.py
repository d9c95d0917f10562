"""Pictures of a guest's screen: what libvirt's screenshot gives (PPM), PNG files, and a smaller copy
for drawing in a terminal. Standard library only (zlib): no image package is needed for this.

A :class:`Picture` is 8-bit RGB, row by row. :func:`from_ppm` reads binary PPM (P6, what qemu's
screendump writes), :func:`from_png` reads the PNGs :meth:`Picture.png` writes and any other
non-interlaced 8-bit RGB or RGBA PNG, :meth:`Picture.scaled` averages boxes of pixels.
Anything else is refused with :class:`PictureError` and one line.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 8192 * 8192
_PPM_HEADER = re.compile(rb"P6\s+(?:#[^\n]*\n\s*)*(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)\s")


class PictureError(ValueError):
    """Not an image this module reads; one line."""


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    rgb: bytes  # width * height * 3 bytes, rows top to bottom

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width * self.height > MAX_PIXELS:
            raise PictureError(f"a picture of {self.width}x{self.height} pixels is refused")
        if len(self.rgb) != self.width * self.height * 3:
            raise PictureError(f"{len(self.rgb)} bytes of pixels for {self.width}x{self.height}")

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        at = (y * self.width + x) * 3
        return self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]

    def png(self, level: int = 9) -> bytes:
        """This picture as a PNG file (8-bit RGB, no filter: small for a text screen's few colours);
        ``level``: zlib's, 1 when it is only handed to another program."""
        stride = self.width * 3
        raw = b"".join(b"\x00" + self.rgb[y * stride:(y + 1) * stride] for y in range(self.height))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, level))
                + _chunk(b"IEND", b""))

    def doubled(self) -> Picture:
        """Twice as wide and high, each pixel a 2x2 square (for OCR of small fonts)."""
        stride = self.width * 3
        rows = []
        for y in range(self.height):
            row = self.rgb[y * stride:(y + 1) * stride]
            wide = b"".join(row[x:x + 3] * 2 for x in range(0, stride, 3))
            rows += [wide, wide]
        return Picture(self.width * 2, self.height * 2, b"".join(rows))

    def scaled(self, width: int, height: int) -> Picture:
        """A ``width`` x ``height`` copy, each pixel the average of the box of pixels it covers."""
        if width <= 0 or height <= 0:
            raise PictureError(f"cannot scale to {width}x{height}")
        xs = [(x * self.width // width, max(x * self.width // width + 1, (x + 1) * self.width // width))
              for x in range(width)]
        out = bytearray()
        stride = self.width * 3
        src = self.rgb
        for y in range(height):
            top = y * self.height // height
            bottom = max(top + 1, (y + 1) * self.height // height)
            rows = [src[row * stride:(row + 1) * stride] for row in range(top, bottom)]
            for left, right in xs:
                count = (right - left) * len(rows)
                r = g = b = 0
                for row in rows:
                    box = row[left * 3:right * 3]
                    r += sum(box[0::3])
                    g += sum(box[1::3])
                    b += sum(box[2::3])
                out += bytes((r // count, g // count, b // count))
        return Picture(width, height, bytes(out))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def from_ppm(data: bytes) -> Picture:
    """A binary PPM (P6) with 8-bit samples."""
    match = _PPM_HEADER.match(data)
    if not match:
        raise PictureError("not a binary PPM image (no P6 header)")
    width, height, depth = (int(match.group(i)) for i in (1, 2, 3))
    if depth != 255:
        raise PictureError(f"a PPM with {depth} as its largest sample is not read (only 255)")
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise PictureError(f"a PPM of {width}x{height} pixels is refused")
    pixels = data[match.end():match.end() + width * height * 3]
    if len(pixels) != width * height * 3:
        raise PictureError(f"the PPM is truncated ({len(pixels)} of {width * height * 3} bytes of pixels)")
    return Picture(width, height, bytes(pixels))


def from_png(data: bytes) -> Picture:
    """A non-interlaced 8-bit RGB or RGBA PNG (alpha dropped)."""
    if not data.startswith(PNG_SIGNATURE):
        raise PictureError("not a PNG file")
    at = len(PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    compressed = bytearray()
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        body = data[at + 8:at + 8 + length]
        if len(body) != length or len(data) < at + 12 + length:
            raise PictureError("the PNG is truncated")
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise PictureError(f"the PNG's {kind.decode(errors='replace')} chunk is damaged (CRC)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
        at += 12 + length
    if header is None:
        raise PictureError("the PNG has no header")
    width, height, depth, colour, _compression, _filter, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise PictureError("only non-interlaced 8-bit RGB or RGBA PNGs are read")
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise PictureError(f"a PNG of {width}x{height} pixels is refused")
    channels = 3 if colour == 2 else 4
    try:
        raw = zlib.decompress(bytes(compressed))
    except zlib.error:
        raise PictureError("the PNG's image data is damaged") from None
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise PictureError("the PNG's image data has the wrong size")
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        row_filter = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        _unfilter(row_filter, line, previous, channels)
        rows.append(line)
        previous = line
    pixels = b"".join(bytes(row) for row in rows)
    if channels == 4:
        pixels = b"".join(pixels[i:i + 3] for i in range(0, len(pixels), 4))
    return Picture(width, height, pixels)


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    if kind == 0:
        return
    if kind == 2:
        for i in range(len(line)):
            line[i] = (line[i] + previous[i]) & 0xFF
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + predictor) & 0xFF
        else:
            raise PictureError(f"the PNG uses an unknown row filter ({kind})")


def decode(data: bytes) -> Picture:
    """A PPM or a PNG, whichever ``data`` is."""
    if data.startswith(PNG_SIGNATURE):
        return from_png(data)
    if data.startswith(b"P6"):
        return from_ppm(data)
    raise PictureError("neither a PNG nor a binary PPM image")


__all__ = ["MAX_PIXELS", "Picture", "PictureError", "decode", "from_png", "from_ppm"]
