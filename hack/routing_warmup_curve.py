#!/usr/bin/env python3
"""Measure a new instance's share of traffic during warm-up, in real time, and draw it beside the curve.

One new instance among ``--warm`` warm ones, all of one Service, in a routing table
built from a registry answer exactly as the agent builds it (the server's ``now``,
the new instance's ``ready_at`` = now, the provider's warm-up settings). Then for
``--seconds`` x 1.1 of wall time the agent's pick runs in a loop on the real
monotonic clock; each pick is counted in the tenth of T it fell in. The share the
new instance got in each tenth is compared with the configured curve's expected
share ``w / (warm + w)``, ``w = max(min%, (t/T)^curve)`` at the middle of the tenth.

Writes the table to stdout and, with ``--png FILE``, a chart (standard library
only: a small PNG writer and a 5x7 pixel font, no plotting package needed).

Usage: ``.venv/bin/python -m hack.routing_warmup_curve --seconds 20 --png docs/routing-warmup.png``
"""

from __future__ import annotations

import argparse
import struct
import time
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

from pilotfish.routing import table as routing_table


def expected_share(fraction: float, warm: int, curve: float, floor: float) -> float:
    weight = 1.0 if fraction >= 1 else max(floor, fraction**curve)
    return weight / (warm + weight)


def measure(
    seconds: float, warm: int, curve: float, min_percent: float
) -> List[Tuple[float, float, float, int]]:
    """(middle of the tenth as a fraction of T, expected share, measured share, picks) per tenth."""
    now = time.time()
    warmup = {"enabled": True, "seconds": seconds, "curve": curve, "min_weight_percent": min_percent}
    instances = [
        {
            "pod": "warm-%d" % i,
            "ip": "10.0.0.%d" % (i + 1),
            "ports": {"80": 80},
            "ready_at": now - 10 * seconds,
        }
        for i in range(warm)
    ]
    instances.append({"pod": "new", "ip": "10.0.0.99", "ports": {"80": 80}, "ready_at": now})
    for item in instances:
        item.update(ready=True, state="registered", warmup=warmup)
    answer = {
        "version": "v",
        "namespace": "demo",
        "now": now,
        "services": [{"name": "svc", "ports": [{"port": 80}], "instances": instances}],
    }
    start = time.monotonic()
    service = routing_table.build(answer, "demo", start).services[0]
    tenths: Dict[int, List[int]] = {i: [0, 0] for i in range(10)}
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        chosen, _ = service.pick(80, None, False)
        bucket = tenths[min(9, int(elapsed / seconds * 10))]
        bucket[0] += 1
        bucket[1] += chosen is not None and chosen.pod == "new"
    rows = []
    for i in range(10):
        picks, new = tenths[i]
        middle = (i + 0.5) / 10
        rows.append(
            (middle, expected_share(middle, warm, curve, min_percent / 100), new / max(1, picks), picks)
        )
    return rows


# ------------------------------------------------------------------ drawing (stdlib only)

FONT = {  # 5x7, rows top to bottom, bit 4 = leftmost column
    "0": [14, 17, 19, 21, 25, 17, 14],
    "1": [4, 12, 4, 4, 4, 4, 14],
    "2": [14, 17, 1, 2, 4, 8, 31],
    "3": [30, 1, 1, 14, 1, 1, 30],
    "4": [2, 6, 10, 18, 31, 2, 2],
    "5": [31, 16, 30, 1, 1, 17, 14],
    "6": [6, 8, 16, 30, 17, 17, 14],
    "7": [31, 1, 2, 4, 8, 8, 8],
    "8": [14, 17, 17, 14, 17, 17, 14],
    "9": [14, 17, 17, 15, 1, 2, 12],
    ".": [0, 0, 0, 0, 0, 12, 12],
    "%": [24, 25, 2, 4, 8, 19, 3],
    "/": [1, 1, 2, 4, 8, 16, 16],
    " ": [0] * 7,
    "-": [0, 0, 0, 31, 0, 0, 0],
    "=": [0, 0, 31, 0, 31, 0, 0],
    "(": [2, 4, 8, 8, 8, 4, 2],
    ")": [8, 4, 2, 2, 2, 4, 8],
    "^": [4, 10, 17, 0, 0, 0, 0],
    ",": [0, 0, 0, 0, 12, 4, 8],
    ":": [0, 12, 12, 0, 12, 12, 0],
    "+": [0, 4, 4, 31, 4, 4, 0],
    "a": [0, 0, 14, 1, 15, 17, 15],
    "c": [0, 0, 14, 16, 16, 17, 14],
    "d": [1, 1, 13, 19, 17, 17, 15],
    "e": [0, 0, 14, 17, 31, 16, 14],
    "f": [6, 9, 8, 28, 8, 8, 8],
    "g": [0, 15, 17, 15, 1, 17, 14],
    "h": [16, 16, 22, 25, 17, 17, 17],
    "i": [4, 0, 12, 4, 4, 4, 14],
    "k": [16, 16, 18, 20, 24, 20, 18],
    "l": [12, 4, 4, 4, 4, 4, 14],
    "m": [0, 0, 26, 21, 21, 17, 17],
    "n": [0, 0, 22, 25, 17, 17, 17],
    "o": [0, 0, 14, 17, 17, 17, 14],
    "p": [0, 0, 30, 17, 30, 16, 16],
    "r": [0, 0, 22, 25, 16, 16, 16],
    "s": [0, 0, 14, 16, 14, 1, 30],
    "t": [8, 8, 28, 8, 8, 9, 6],
    "u": [0, 0, 17, 17, 17, 19, 13],
    "v": [0, 0, 17, 17, 17, 10, 4],
    "w": [0, 0, 17, 17, 21, 21, 10],
    "x": [0, 0, 17, 10, 4, 10, 17],
    "y": [0, 0, 17, 17, 15, 1, 14],
    "T": [31, 4, 4, 4, 4, 4, 4],
    "N": [17, 25, 21, 19, 17, 17, 17],
    "b": [16, 16, 22, 25, 17, 17, 30],
    "W": [17, 17, 17, 21, 21, 21, 10],
    "M": [17, 27, 21, 21, 17, 17, 17],
}


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: Tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            at = (y * self.width + x) * 3
            self.pixels[at : at + 3] = bytes(color)

    def line(
        self, x0: float, y0: float, x1: float, y1: float, color: Tuple[int, int, int], width: int = 1
    ) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for i in range(steps + 1):
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            for dx in range(width):
                for dy in range(width):
                    self.dot(int(x) + dx, int(y) + dy, color)

    def disc(self, cx: float, cy: float, radius: int, color: Tuple[int, int, int]) -> None:
        for dx in range(-radius, radius + 1):
            for dy in range(-radius, radius + 1):
                if dx * dx + dy * dy <= radius * radius:
                    self.dot(int(cx) + dx, int(cy) + dy, color)

    def text(
        self, x: int, y: int, text: str, color: Tuple[int, int, int] = (0, 0, 0), scale: int = 2
    ) -> None:
        for index, char in enumerate(text):
            rows = FONT.get(char, FONT[" "])
            for row, bits in enumerate(rows):
                for col in range(5):
                    if bits & (16 >> col):
                        for sx in range(scale):
                            for sy in range(scale):
                                self.dot(x + (index * 6 + col) * scale + sx, y + row * scale + sy, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            )

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def draw(
    rows: List[Tuple[float, float, float, int]], warm: int, curve: float, min_percent: float, seconds: float
) -> bytes:
    width, height, left, right, top, bottom = 760, 480, 80, 30, 50, 70
    canvas = Canvas(width, height)
    plot_w, plot_h = width - left - right, height - top - bottom
    top_share = 0.3

    def xy(fraction: float, share: float) -> Tuple[float, float]:
        return left + fraction * plot_w, top + plot_h - min(share, top_share) / top_share * plot_h

    grey, black, blue, red = (210, 210, 210), (0, 0, 0), (40, 90, 200), (210, 50, 40)
    for i in range(11):
        x, _ = xy(i / 10, 0)
        canvas.line(x, top, x, top + plot_h, grey)
        canvas.text(int(x) - 10, top + plot_h + 10, "%.1f" % (i / 10))
    for pct in range(0, 31, 5):
        _, y = xy(0, pct / 100)
        canvas.line(left, y, left + plot_w, y, grey)
        canvas.text(left - 50, int(y) - 7, "%d%%" % pct)
    canvas.line(left, top, left, top + plot_h, black, 2)
    canvas.line(left, top + plot_h, left + plot_w, top + plot_h, black, 2)
    previous = None
    for i in range(201):
        fraction = i / 200
        point = xy(fraction, expected_share(fraction, warm, curve, min_percent / 100))
        if previous is not None:
            canvas.line(previous[0], previous[1], point[0], point[1], blue, 2)
        previous = point
    for middle, _expected, measured, _picks in rows:
        canvas.disc(*xy(middle, measured), 5, red)
    canvas.text(left, 14, "share of a new instance among %d warm ones, T = %gs" % (warm, seconds))
    canvas.text(left + 250, height - 30, "t / T")
    canvas.line(left + 20, top + 16, left + 50, top + 16, blue, 2)
    canvas.text(
        left + 58,
        top + 9,
        "configured: w = max(%g%%, (t/T)^%g), share = w/(%d+w)" % (min_percent, curve, warm),
    )
    canvas.disc(left + 35, top + 40, 5, red)
    canvas.text(left + 58, top + 33, "measured: agent picks in real time, per tenth of T")
    return canvas.png()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hack.routing_warmup_curve", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="warm-up duration T")
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--curve", type=float, default=2.0)
    parser.add_argument("--min-percent", type=float, default=10.0)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    rows = measure(args.seconds, args.warm, args.curve, args.min_percent)
    print("t/T    expected  measured  picks")
    for middle, expected, measured, picks in rows:
        print("%.2f   %6.2f%%   %6.2f%%  %6d" % (middle, expected * 100, measured * 100, picks))
    worst = max(abs(m - e) for _, e, m, _ in rows)
    print("largest difference: %.2f points" % (worst * 100))
    if args.png is not None:
        args.png.write_bytes(draw(rows, args.warm, args.curve, args.min_percent, args.seconds))
        print("wrote %s" % args.png)


if __name__ == "__main__":
    main()
