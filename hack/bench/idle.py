#!/usr/bin/env python3
"""What an idle server costs, bare and under pilotfish: CPU and wake-ups per second, and memory.

"Invisible when idle" (docs/benchmarks.md): a pod that serves nothing should not burn CPU or
wake up for the agent much more than the server itself does. Idle cost is wake-ups:
each time a sleeping thread wakes it runs with cold caches, which costs ~0.2 ms of
CPU here, far more than the Python it then runs.

Method. The servers of ``rps.py`` (Flask under gunicorn, FastAPI under uvicorn), bare
and under pilotfish, all started at once and left alone (pilotfish's are first
waited on until ``/status`` says ready, then a settling pause). Then ``--windows``
windows of ``--window`` seconds, all servers measured over the same seconds: per
server, the CPU time (``/proc/<pid>/task/<tid>/schedstat``: nanoseconds on CPU,
user and kernel) and the number of times its threads were scheduled, summed over
every thread of every process of its session (gunicorn's arbiter and worker, every
agent thread). At the end of each window, the memory of the same processes: PSS
(``/proc/<pid>/smaps_rollup``), which splits the pages a gunicorn worker shares with
its arbiter instead of counting them twice. We report per server the median and
p10-p90 over the windows, and per app pilotfish minus bare.

Usage: ``python -m hack.bench.idle [--windows N] [--window S] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .common import Summary, bench_python, markdown_table, median, session_stats
from .rps import APPS, Live

CONFIGS = ("bare", "pilotfish")
"""Default configurations; ``--configs`` may add ``pilotfish@DIR`` (another agent tree)."""


def session_threads(session: int) -> Dict[str, Tuple[int, int]]:
    """``"pid/tid"`` -> (ns on CPU, times scheduled) of every thread of every process in ``session``."""
    threads: Dict[str, Tuple[int, int]] = {}
    for pid in session_stats(session):
        try:
            tids = os.listdir("/proc/%s/task" % pid)
        except OSError:
            continue  # the process ended while we looked
        for tid in tids:
            try:
                with open("/proc/%s/task/%s/schedstat" % (pid, tid), "rb") as handle:
                    run_ns, _wait_ns, timeslices = handle.read().split()[:3]
                threads["%s/%s" % (pid, tid)] = (int(run_ns), int(timeslices))
            except (OSError, ValueError):
                continue  # the thread ended while we looked
    return threads


def session_schedstat(session: int) -> Tuple[int, int]:
    """(ns on CPU, times scheduled) summed over every thread of every process in ``session``."""
    threads = session_threads(session).values()
    return sum(cpu for cpu, _ in threads), sum(slices for _, slices in threads)


def window_delta(before: Dict[str, Tuple[int, int]], after: Dict[str, Tuple[int, int]]) -> Tuple[int, int]:
    """(ns on CPU, times scheduled) between two :func:`session_threads` snapshots.

    Thread by thread: a thread that ended in between takes its whole life's count out of a
    plain sum of totals (an agent's start-up thread finishing in the window made it negative),
    so only threads seen at the end count, from zero if they started in the window."""
    cpu = slices = 0
    for key, (cpu1, n1) in after.items():
        cpu0, n0 = before.get(key, (0, 0))
        cpu += cpu1 - cpu0
        slices += n1 - n0
    return cpu, slices


def session_pss_kib(session: int) -> int:
    """Proportional set size (KiB) summed over every process in ``session``."""
    total = 0
    for pid in session_stats(session):
        try:
            with open("/proc/%s/smaps_rollup" % pid, "rb") as handle:
                for line in handle:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Window:
    app: str
    config: str
    window: int
    seconds: float
    cpu_ms_per_s: float
    wakeups_per_s: float
    pss_mib: float = 0.0


def wait_ready(live: Live, timeout: float = 60.0) -> None:
    """Under pilotfish, wait until the agent says ready: the lifecycle has settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = live.status()
        if status and status.get("ready") is True:
            return
        time.sleep(0.2)
    raise RuntimeError("pilotfish did not become ready within %.0f s: %r" % (timeout, live.status()))


def measure(lives: Sequence[Live], windows: int, window: float, settle: float) -> List[Window]:
    for live in lives:
        if live.status_port is not None:
            wait_ready(live)
    time.sleep(settle)
    results: List[Window] = []
    for index in range(windows):
        before = [session_threads(live.server.proc.pid) for live in lives]
        start = time.monotonic()
        time.sleep(window)
        after = [session_threads(live.server.proc.pid) for live in lives]
        seconds = time.monotonic() - start
        memory = [session_pss_kib(live.server.proc.pid) / 1024.0 for live in lives]
        for live, then, now, pss in zip(lives, before, after, memory):
            cpu_ns, slices = window_delta(then, now)
            if live.server.proc.poll() is not None:
                raise RuntimeError("%s %s exited while idle" % (live.app.name, live.config))
            results.append(
                Window(
                    live.app.name,
                    live.config,
                    index,
                    seconds,
                    cpu_ns / 1e6 / seconds,
                    slices / seconds,
                    pss,
                )
            )
        print("idle window %d/%d done" % (index + 1, windows), file=sys.stderr)
    return results


def _cell(values: Sequence[float]) -> str:
    s = Summary.of(values)
    return "%.2f (%.2f–%.2f)" % (s.median, s.p10, s.p90)


def idle_table(results: List[Window]) -> str:
    rows = []
    for app in dict.fromkeys(r.app for r in results):
        medians: Dict[str, Tuple[float, float, float]] = {}
        for config in dict.fromkeys(r.config for r in results):
            runs = [r for r in results if r.app == app and r.config == config]
            if not runs:
                continue
            cpu = [r.cpu_ms_per_s for r in runs]
            wakeups = [r.wakeups_per_s for r in runs]
            pss = [r.pss_mib for r in runs]
            medians[config] = (median(cpu), median(wakeups), median(pss))
            added = ""
            if config != "bare" and "bare" in medians:
                added = "%+.2f ms/s, %+.1f wake-ups/s, %+.1f MiB" % tuple(
                    mine - bare for mine, bare in zip(medians[config], medians["bare"])
                )
            rows.append(
                [
                    APPS[app].label,
                    config,
                    str(len(runs)),
                    _cell(cpu),
                    _cell(wakeups),
                    "%.1f" % median(pss),
                    added,
                ]
            )
    return markdown_table(
        [
            "app · server",
            "configuration",
            "windows",
            "CPU ms per second idle, median (p10–p90)",
            "wake-ups per second, median (p10–p90)",
            "memory, PSS MiB (median)",
            "added by pilotfish (medians)",
        ],
        rows,
    )


def run(
    python: str,
    apps: Sequence[str],
    windows: int,
    window: float,
    settle: float,
    configs: Sequence[str] = CONFIGS,
) -> List[Window]:
    logdir = Path(tempfile.mkdtemp(prefix="pilotfish-idle-"))
    lives: List[Live] = []
    try:
        for app in apps:
            for config in configs:
                lives.append(Live(python, APPS[app], config, None, logdir, use_wrk=False))
        return measure(lives, windows, window, settle)
    finally:
        for live in lives:
            live.server.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="interpreter that runs the servers (default: the bench venv's)")
    parser.add_argument("--apps", default=",".join(APPS), help="comma-separated, from: %s" % ", ".join(APPS))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="bare first; pilotfish, pilotfish@DIR")
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds left alone before measuring")
    parser.add_argument("--json", help="write the raw windows here")
    args = parser.parse_args(argv)
    apps = [a for a in args.apps.split(",") if a]
    configs = [c for c in args.configs.split(",") if c]
    if configs[:1] != ["bare"]:
        parser.error("--configs must start with bare (the other rows are compared with it)")
    results = run(bench_python(args.python), apps, args.windows, args.window, args.settle, configs)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(idle_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
