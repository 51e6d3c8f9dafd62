"""The demo worker's chart: a bar chart of a CSV column as a PNG, with nothing but the standard library.

``optio-host demo`` uploads this file next to ``demo_worker.sh``; the worker
runs it on the host as ``python3 _demo_chart.py data.csv COLUMN chart.png``
(when the host has a python3). Stand-alone: it imports nothing from optio_host.
"""

from __future__ import annotations

import csv
import struct
import sys
import zlib

WIDTH, HEIGHT, MARGIN = 320, 200, 10
BACKGROUND = (255, 255, 255)
BAR = (46, 110, 180)
AXIS = (60, 60, 60)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` (rows of (r, g, b))."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\0" + bytes(value for pixel in row for value in pixel) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def bar_chart(values: list[float]) -> list[list[tuple[int, int, int]]]:
    """Bars for ``values`` (left to right), scaled to the tallest, on a white canvas with axes."""
    pixels = [[BACKGROUND] * WIDTH for _ in range(HEIGHT)]
    top = max(values) or 1.0
    slot = (WIDTH - 2 * MARGIN) / len(values)
    floor = HEIGHT - MARGIN
    for index, value in enumerate(values):
        left = MARGIN + int(index * slot) + 1
        right = MARGIN + int((index + 1) * slot) - 1
        bar_top = floor - int(value / top * (HEIGHT - 2 * MARGIN))
        for y in range(bar_top, floor):
            pixels[y][left:right] = [BAR] * (right - left)
    for x in range(MARGIN, WIDTH - MARGIN):
        pixels[floor][x] = AXIS
    for y in range(MARGIN, floor + 1):
        pixels[y][MARGIN] = AXIS
    return pixels


def main(argv: list[str]) -> int:
    source, column, target = argv
    with open(source, newline="") as handle:
        values = [float(row[column]) for row in csv.DictReader(handle)]
    with open(target, "wb") as out:
        out.write(png(bar_chart(values)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
