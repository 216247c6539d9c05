#!/usr/bin/env python3
"""The agent's share of a loaded server's CPU, from cProfile: noise-proof, per function.

Requests/s on a shared machine cannot resolve a 3 % budget (see docs/benchmarks.md);
a ratio of CPU times inside one process can, because whatever else runs on the
machine slows the agent's code and the app's alike. Each server of ``rps.py`` is
run once under pilotfish with cProfile on CPU time (``apps/profiled.py``; gunicorn:
in its worker), loaded with wrk (or the fallback generator) for a few seconds,
and stopped; we then sum the CPU time of every function defined in the agent tree
and divide by the CPU time of the whole profiled process.

cProfile charges a fixed cost per Python call, so call-heavy code looks slower
than it is; the agent's wrapper makes ~8 calls per request against the
framework's hundreds, so its share here is if anything overstated a little.

``--diff`` also profiles each server bare and lists the functions whose CPU per
request grew most, the agent's own or not (everything it makes other code do).

Usage: ``python -m hack.bench.profile_share [--python PY] [--duration S] [--diff]``.
"""

from __future__ import annotations

import argparse
import glob
import os
import pstats
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .common import APPS_DIR, BOOTSTRAP, bench_python, config_env, markdown_table
from .rps import APPS, Server, check_agents, free_port, run_pyload, run_wrk, wait_agents

AGENT_LIB = str(BOOTSTRAP.parent / "lib" / "pilotfish")


@dataclass
class Share:
    app: str
    requests: int
    total_s: float
    agent_s: float
    functions: List[Tuple[str, int, float]] = field(default_factory=list)  # (file:function, calls, s)
    files: List[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.agent_s / self.total_s if self.total_s else 0.0


def analyse(app: str, files: List[str], requests: int) -> Share:
    stats = pstats.Stats(files[0])
    for extra in files[1:]:
        stats.add(extra)
    total = 0.0
    agent = 0.0
    functions: Dict[str, Tuple[int, float]] = {}
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, calls, tottime, _ct, _callers) in raw.items():
        total += tottime
        if filename.startswith(AGENT_LIB):
            agent += tottime
            key = "%s:%s" % (os.path.relpath(filename, os.path.dirname(AGENT_LIB)), name)
            prev = functions.get(key, (0, 0.0))
            functions[key] = (prev[0] + calls, prev[1] + tottime)
    ranked = sorted(((k, c, t) for k, (c, t) in functions.items()), key=lambda r: r[2], reverse=True)
    return Share(app, requests, total, agent, ranked)


def profile_app(
    python: str,
    app_name: str,
    duration: float,
    warmup: float,
    workdir: Path,
    timer: str = "cpu",
    config: str = "pilotfish",
) -> Share:
    app = APPS[app_name]
    port = free_port()
    argv = app.argv(python, port)
    server_name = argv[2]  # [python, "-m", "gunicorn" | "uvicorn", ...]
    out = str(workdir / ("%s-%s.prof" % (app_name, config)))
    extra = {
        "PILOTFISH_STATUS_HOST": "127.0.0.1",
        "PILOTFISH_STATUS_PORT": str(free_port()),
        "BENCH_PROFILE_TIMER": timer,
    }
    server = Server(
        [python, str(APPS_DIR / "profiled.py"), out, server_name, *argv[3:]],
        config_env(config, None, extra),
        workdir / ("%s-%s.log" % (app_name, config)),
    )
    base = "http://127.0.0.1:%d" % port
    try:
        check_agents(config, wait_agents(base, server))
        load = run_wrk if shutil.which("wrk") else run_pyload
        if warmup:
            load(base + "/", warmup, app.connections)
        result = load(base + "/", duration, app.connections)
    finally:
        server.stop()
    files = sorted(glob.glob(out + "*"))
    if not files:
        raise RuntimeError("no profile written for %s under %s" % (app_name, config))
    # The profile also covers start-up and warm-up: count their requests too (wrk's
    # warm-up is not known exactly, so the per-request columns are upper bounds).
    share = analyse(app_name, files, result.requests)
    share.files = files
    return share


def share_table(shares: List[Share], top: int = 8) -> str:
    rows = []
    for s in shares:
        rows.append(
            [
                APPS[s.app].label,
                "**%.2f %%**" % (100 * s.share),
                "%.1f" % (1e6 * s.agent_s / s.requests if s.requests else 0.0),
                "%.0f" % (1e6 * s.total_s / s.requests if s.requests else 0.0),
                "<br>".join(
                    "`%s` %.2f calls, %.1f µs" % (name, calls / s.requests, 1e6 * t / s.requests)
                    for name, calls, t in s.functions[:top]
                ),
            ]
        )
    return markdown_table(
        [
            "server (pilotfish, cProfile on CPU time)",
            "agent share of server CPU",
            "agent µs/request (profiled)",
            "all µs/request (profiled)",
            "agent functions per request (file:function, calls, profiled µs)",
        ],
        rows,
    )


def per_request(share: Share) -> Dict[str, Tuple[float, float]]:
    """file:function -> (calls, CPU µs) per request, over the whole profiled process."""
    stats = pstats.Stats(share.files[0])
    for extra in share.files[1:]:
        stats.add(extra)
    out: Dict[str, Tuple[float, float]] = {}
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, calls, tottime, _ct, _callers) in raw.items():
        key = "%s:%s" % ("/".join(filename.split("/")[-2:]), re.sub(r" at 0x[0-9a-f]+", "", name))
        prev = out.get(key, (0.0, 0.0))
        out[key] = (prev[0] + calls / share.requests, prev[1] + 1e6 * tottime / share.requests)
    return out


def diff_table(bare: Share, agent: Share, top: int = 15) -> str:
    """Functions whose CPU per request grew most from bare to pilotfish (agent's own or not)."""
    a, b = per_request(bare), per_request(agent)
    rows = []
    for key in set(a) | set(b):
        calls0, us0 = a.get(key, (0.0, 0.0))
        calls1, us1 = b.get(key, (0.0, 0.0))
        rows.append((us1 - us0, key, calls0, calls1, us0, us1))
    rows.sort(reverse=True)
    total0 = 1e6 * bare.total_s / bare.requests
    total1 = 1e6 * agent.total_s / agent.requests
    body = [
        ["**all functions**", "", "", "%.1f" % total0, "%.1f" % total1, "%+.1f" % (total1 - total0)],
        *[
            ["`%s`" % key, "%.2f" % c0, "%.2f" % c1, "%.1f" % u0, "%.1f" % u1, "%+.1f" % d]
            for d, key, c0, c1, u0, u1 in rows[:top]
        ],
    ]
    return markdown_table(
        [
            "function (profiled)",
            "calls/req bare",
            "calls/req pilotfish",
            "µs/req bare",
            "µs/req pilotfish",
            "Δ µs",
        ],
        body,
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench.profile_share", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--python", help="interpreter (default: .venvs/bench/bin/python)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--timer", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--diff", action="store_true", help="also profile bare and list what grew")
    args = parser.parse_args(argv)
    python = bench_python(args.python)
    with tempfile.TemporaryDirectory(prefix="pilotfish-profile-") as tmp:
        shares = [
            profile_app(python, name, args.duration, args.warmup, Path(tmp), args.timer) for name in APPS
        ]
        print(share_table(shares))
        if args.diff:
            for share in shares:
                bare = profile_app(
                    python, share.app, args.duration, args.warmup, Path(tmp), args.timer, "bare"
                )
                print("\n%s: CPU per request, bare vs pilotfish (cProfile)\n" % APPS[share.app].label)
                print(diff_table(bare, share))
    return 0


if __name__ == "__main__":
    sys.exit(main())
