"""The rollout benchmark (hack/bench_rollout/) counts what it says it counts.

Not a cluster run: the open-loop schedule and latency from the scheduled time on a fake
clock, each failure cause from a real failed request on loopback, percentiles, the
steady/rollout split, and the analysis of a small synthetic run down to valid PNGs.
"""

from __future__ import annotations

import argparse
import http.server
import socket
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from hack.bench_rollout import plots
from hack.bench_rollout.__main__ import analyse, load_raw, parse, save_raw, table
from hack.bench_rollout.loadgen import OpenLoop, requests_sender
from hack.bench_rollout.stats import (
    Record,
    classify_error,
    due_indices,
    per_second,
    percentile,
    schedule,
    share,
    split,
    summarize,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_schedule_is_a_fixed_rate_and_a_late_sender_catches_up_at_once() -> None:
    assert [schedule(10.0, 4.0, i) for i in range(3)] == [10.0, 10.25, 10.5]
    assert list(due_indices(10.0, 4.0, 0, 9.9)) == []
    assert list(due_indices(10.0, 4.0, 0, 10.0)) == [0]
    assert list(due_indices(10.0, 4.0, 1, 10.6)) == [1, 2]  # behind: both due now, none skipped
    assert list(due_indices(10.0, 4.0, 3, 10.6)) == []


def test_latency_counts_from_the_scheduled_time_not_the_send_time() -> None:
    """A server taking 0.25 s per answer at 10 requests/s, one sender: open loop keeps the
    schedule (10 due in the first second), and each answer's latency includes its wait."""
    clock = FakeClock()

    def make() -> Any:
        def send() -> Tuple[int, str]:
            clock.now += 0.25
            return 200, "pod-a"

        return send

    load = OpenLoop(make, rate=10.0, workers=0, clock=clock, sleep=clock.sleep)
    load.run(until=clock.now + 1.0)
    records = load.records
    start = load.start_time
    assert [round(r.scheduled - start, 6) for r in records[:4]] == [0.0, 0.1, 0.2, 0.3]
    latencies = [round(r.latency, 6) for r in records[:4]]
    assert latencies == [0.25, 0.4, 0.55, 0.7]  # closed-loop timing would say 0.25 each
    assert all(r.outcome == "ok" and r.pod == "pod-a" for r in records)
    assert len(records) == 10 or records[-1].scheduled - start < 1.0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/reset":
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.connection.close()
            self.close_connection = True
            return
        if self.path == "/slow":
            self.server.release.wait(5)  # type: ignore[attr-defined]
        status = 503 if self.path == "/busy" else 200
        body = b"pod-x"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % httpd.server_address[1]
    finally:
        httpd.release.set()  # type: ignore[attr-defined]
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_each_failure_is_counted_by_its_cause(server: str) -> None:
    def one(url: str, timeout: float = 2.0) -> Record:
        load = OpenLoop(requests_sender(url, timeout), rate=1.0, workers=0)
        load._one(load.make_sender(), 0.0)
        return load.records[0]

    assert one(server + "/").outcome == "ok" and one(server + "/").pod == "pod-x"
    assert one(server + "/busy").outcome == "5xx"
    assert one("http://127.0.0.1:%d/" % _closed_port()).outcome == "refused"
    assert one(server + "/reset").outcome == "reset"
    assert one(server + "/slow", timeout=0.3).outcome == "timeout"
    assert classify_error(ValueError("something else")) == "other"


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(list(reversed(values)), 100) == 100.0


def _synthetic() -> Tuple[List[Record], List[Tuple[float, float]]]:
    records = []
    for i in range(200):  # 20 s at 10/s; a rollout from 8 s to 12 s with two failures and slow answers
        t = 100.0 + i / 10
        rolling = 108.0 <= t <= 112.0
        outcome = {95: "refused", 101: "reset"}.get(i, "ok")
        latency = 0.050 if rolling else 0.002
        pod = "new" if t >= 109.0 and i % 4 == 0 else "old"
        records.append(Record(t, t + latency, outcome, pod if outcome == "ok" else ""))
    return records, [(108.0, 112.0)]


def test_the_split_and_summary_per_phase() -> None:
    records, windows = _synthetic()
    phases = split(records, windows)
    assert len(phases["rollout"]) == 41 and len(phases["steady"]) == 159
    summary = summarize(records, windows)
    assert summary["total"] == 200 and summary["failed"] == 2
    assert summary["causes"] == {"refused": 1, "reset": 1, "5xx": 0, "timeout": 0, "other": 0}
    assert summary["latency_ms"]["steady"]["p99"] == pytest.approx(2.0)
    assert summary["latency_ms"]["rollout"]["p50"] == pytest.approx(50.0)
    rows = per_second(records, 100.0, 120.0)
    assert len(rows) == 20 and rows[0] == (0.0, 10, 0) and rows[9] == (9.0, 9, 1)
    shares = share(records, "new", 109.0, 111.0, 1.0)
    assert [(round(t, 3), round(v, 3), n) for t, v, n in shares] == [(0.5, 0.222, 9), (1.5, 0.333, 9)]


def test_a_small_synthetic_run_gives_the_table_and_valid_pngs(tmp_path: Path) -> None:
    records, _ = _synthetic()
    raw: Dict[str, Any] = {
        "t0": 100.0,
        "t1": 120.0,
        "rollouts": [
            {"start": 108.0, "all_ready": 111.0, "done": 112.0, "new_ready": {"new": 109.0, "new2": 111.0}}
        ],
        "sources": {"outside": records, "consumer": records},
        "scale_up": {"pod": "new", "ready": 109.0, "end": 119.0},
    }
    save_raw(tmp_path / "raw-pilotfish.json", raw)
    args: argparse.Namespace = parse(["--out", str(tmp_path), "--warmup-seconds", "10"])
    assert args.scale_up and not parse(["--no-scale-up"]).scale_up
    result = analyse("pilotfish", load_raw(tmp_path / "raw-pilotfish.json"), args, tmp_path)
    assert result["sources"]["outside"]["failed"] == 2
    assert result["rollout_done_s"] == [4.0] and result["share_warm_pods"] == 3
    assert result["share_points"] and all(0 <= v <= 1 for _, v, _ in result["share_points"])
    for key in ("timeline_png", "share_png"):
        data = Path(result[key]).read_bytes()
        assert plots.valid_png(data) and len(data) > 1000
    text = table([result])
    assert "| pilotfish | outside | 200 | 2 | 1 | 1 | 0 | 0 | 0 |" in text
    assert "| pilotfish | 1 | 3.0 / 3.0 | 4.0 / 4.0 |" in text
