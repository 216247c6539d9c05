"""PNG charts with the standard-library writer of hack/routing_warmup_curve.py (no plotting package)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..routing_warmup_curve import Canvas, expected_share

GREY = (225, 225, 225)
AXIS = (0, 0, 0)
BLUE = (40, 90, 200)
GREEN = (30, 150, 60)
RED = (210, 30, 30)
LEFT, TOP, BOTTOM, RIGHT = 70, 40, 50, 20


def _frame(canvas: Canvas, title: str) -> Tuple[int, int, int, int]:
    x0, y0, x1, y1 = LEFT, TOP, canvas.width - RIGHT, canvas.height - BOTTOM
    canvas.text(LEFT, 10, title)
    canvas.line(x0, y1, x1, y1, AXIS)
    canvas.line(x0, y0, x0, y1, AXIS)
    return x0, y0, x1, y1


def timeline(
    title: str,
    series: Sequence[Tuple[str, Tuple[int, int, int], Sequence[Tuple[float, int, int]]]],
    windows: Sequence[Tuple[float, float]],
    seconds: float,
    width: int = 1000,
    height: int = 320,
) -> bytes:
    """Requests/s answered (one line per source) and failed (red bars, all sources) per second.

    ``series``: (label, color, per-second rows (t, ok, failed)); ``windows`` relative to t=0 are shaded.
    """
    canvas = Canvas(width, height)
    x0, y0, x1, y1 = LEFT, TOP, width - RIGHT, height - BOTTOM
    seconds = max(seconds, 1.0)
    peak = max([ok + bad for _, _, rows in series for _, ok, bad in rows] + [1])
    top = float(int(peak * 1.2) + 1)

    def x(t: float) -> float:
        return x0 + (x1 - x0) * t / seconds

    def y(v: float) -> float:
        return y1 - (y1 - y0) * v / top

    for a, b in windows:
        for px in range(int(x(max(0.0, a))), int(x(min(seconds, b))) + 1):
            canvas.line(px, y0, px, y1 - 1, GREY)
    _frame(canvas, title)
    failed: Dict[float, int] = {}
    for _, _, rows in series:
        for t, _, bad in rows:
            failed[t] = failed.get(t, 0) + bad
    for t, bad in failed.items():
        if bad:
            for px in range(int(x(t)), max(int(x(t)) + 1, int(x(t + 1)) - 1)):
                canvas.line(px, y(bad), px, y1 - 1, RED)
    for index, (label, color, rows) in enumerate(series):
        points = [(x(t + 0.5), y(ok)) for t, ok, _ in rows]
        thickness = 2 * (len(series) - index)  # the first line under the next, both visible
        for (ax, ay), (bx, by) in zip(points, points[1:]):
            canvas.line(ax, ay, bx, by, color, thickness)
        canvas.line(x1 - 260, 14 + index * 16, x1 - 240, 14 + index * 16, color, 3)
        canvas.text(x1 - 232, 8 + index * 16, label)
    canvas.line(x1 - 260, 14 + len(series) * 16, x1 - 240, 14 + len(series) * 16, RED, 3)
    canvas.text(x1 - 232, 8 + len(series) * 16, "failed")
    for v in (0, top / 2, top):
        canvas.text(8, int(y(v)) - 7, "%d/s" % v)
    step = 30 if seconds > 150 else 10
    t = 0.0
    while t <= seconds:
        canvas.line(x(t), y1, x(t), y1 + 5, AXIS)
        canvas.text(int(x(t)) - 10, y1 + 10, "%d" % t)
        t += step
    canvas.text(x1 - 330, height - 20, "time (s), grey = rollout")
    return canvas.png()


def share_chart(
    points: Sequence[Tuple[float, float, int]],
    warm: int,
    curve: float,
    floor: float,
    max_fraction: float,
    title: str = "",
    width: int = 700,
    height: int = 360,
) -> bytes:
    """Measured share of the new pod (points: fraction of T, share, requests) and the expected curve."""
    canvas = Canvas(width, height)
    x0, y0, x1, y1 = _frame(canvas, "%s: new pod share, %d warm pods" % (title, warm))
    max_fraction = max(max_fraction, 0.05)
    top = 0.5

    def xy(fraction: float, value: float) -> Tuple[float, float]:
        return x0 + (x1 - x0) * fraction / max_fraction, y1 - (y1 - y0) * min(value, top) / top

    previous = None
    steps = 200
    for i in range(steps + 1):
        f = max_fraction * i / steps
        here = xy(f, expected_share(f, warm, curve, floor))
        if previous is not None:
            canvas.line(previous[0], previous[1], here[0], here[1], BLUE, 2)
        previous = here
    for fraction, value, _ in points:
        px, py = xy(fraction, value)
        canvas.disc(px, py, 3, RED)
    for v in (0.0, 0.25, 0.5):
        canvas.text(8, int(xy(0, v)[1]) - 7, "%d%%" % (v * 100))
    for i in range(5):
        f = max_fraction * i / 4
        canvas.text(int(xy(f, 0)[0]) - 10, y1 + 10, "%.2f" % f)
    canvas.text(x0, height - 20, "t/T since ready. line: expected, dots: measured", scale=1)
    return canvas.png()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def valid_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and b"IHDR" in data[:20] and data.endswith(b"IEND\xaeB`\x82")


__all__: List[str] = ["timeline", "share_chart", "write", "valid_png"]
