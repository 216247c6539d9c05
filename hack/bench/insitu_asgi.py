#!/usr/bin/env python3
"""What ``pilotfish_asgi`` costs per request inside a loaded uvicorn, not in a tight loop.

Starts uvicorn (pinned like ``rps.py``) on ``apps/insitu_asgi_app.py`` with only the
agent's ``lib`` on ``PYTHONPATH``, loads it with wrk for a few seconds, stops it with
SIGINT (so ``atexit`` runs) and prints the wall µs per request spent inside the
wrapper but outside the app, round by round.

Usage: ``python -m hack.bench.insitu_asgi [--python PY] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

from .common import APPS_DIR, BOOTSTRAP, bench_python, config_env, taskset_prefix
from .rps import SERVER_CPU, free_port, http_get, run_pyload, run_wrk


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench.insitu_asgi", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--python")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args(argv)
    python = bench_python(args.python)
    load = run_wrk if subprocess.run(["which", "wrk"], capture_output=True).returncode == 0 else run_pyload
    for _ in range(args.rounds):
        port = free_port()
        env = config_env(
            "bare",
            None,
            {
                "PYTHONPATH": str(BOOTSTRAP.parent / "lib"),
                "PILOTFISH_STATUS_HOST": "127.0.0.1",
                "PILOTFISH_STATUS_PORT": str(free_port()),
            },
        )
        argv_ = [python, "-m", "uvicorn", "--app-dir", str(APPS_DIR), "--port", str(port)]
        argv_ += ["--log-level", "warning", "--no-access-log", "insitu_asgi_app:app"]
        proc = subprocess.Popen(
            taskset_prefix(SERVER_CPU) + argv_,
            env=env,
            start_new_session=True,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = "http://127.0.0.1:%d/" % port
        for _ in range(300):
            if http_get(base) is not None:
                break
            time.sleep(0.1)
        result = load(base, args.duration, 16)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        lines = [line for line in err.splitlines() if line.startswith("INSITU")]
        print("%.0f req/s; %s" % (result.rps, lines[0] if lines else "no report:\n" + err[-500:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
