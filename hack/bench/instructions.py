"""Instructions per request under ``valgrind --tool=callgrind``: a count, not a time.

The requests/s runs measure time on a shared machine, where other jobs move the
numbers by more than the 3 % budget. Instructions executed do not depend on what
else runs: the same server, the same requests and the same environment give
nearly the same count (within ~0.5 % here), so a difference of 1 % between two
configurations shows in one run.

How: uvicorn is zeroed after ``--warmup`` requests and dumped after ``--requests``
more (``callgrind_control``); gunicorn's worker, which valgrind's gdbserver cannot
reach after fork, is measured whole, minus a run with the warm-up only. Only the
main thread of the process that served counts (uvicorn itself; gunicorn's worker,
not its arbiter). ``--extra`` adds configurations that differ from
``pilotfish`` by one variable (to split the cost: ``ignored=PILOTFISH_IGNORE_PATHS=/``
counts a request the agent classifies and skips).

Instructions are not time (cache misses and branch mispredictions are not
counted), so this is a check on the requests/s tables, not a replacement.

Reproduce: ``make bench`` once (bench venv), then
``.venv/bin/python -m hack.bench.instructions --app fastapi-uvicorn --requests 2000``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .common import bench_python, config_env, markdown_table
from .rps import APPS, free_port


def _requests(port: int, count: int, path: str = "/") -> None:
    """``count`` sequential GETs on one keep-alive connection (reconnect when closed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit("GET %s answered %d" % (path, response.status))
        if response.will_close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.close()


def _wait_up(port: int, server: subprocess.Popen[bytes], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("server exited with %s before answering" % server.returncode)
        try:
            _requests(port, 1)
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.5)
    raise SystemExit("server did not answer within %.0f s" % timeout)


def _exit_totals(outdir: Path, root: int, threads: str, dumped: bool = False) -> int:
    """Ir of the process that served: from the dumps at exit, or the ones requested (``dumped``).

    A gunicorn arbiter forks its worker: the worker served, so the root's own
    dumps are left out whenever there are others. ``threads="main"`` keeps only
    each process's main thread (files ending in ``-01``): background threads (the
    agent's status server polls twice a second) keep wall-clock timers while
    valgrind runs the server ~50x slower, which would inflate them ~50x per request.
    """
    totals: Dict[int, int] = {}
    for path in outdir.iterdir():
        match = re.match(r"cg\.(\d+)(\.\d+)?(?:-(\d+))?$", path.name)
        if (
            not match
            or bool(match.group(2)) != dumped
            or (threads == "main" and match.group(3) not in (None, "01"))
        ):
            continue
        found = re.search(r"^(?:totals|summary):\s+(\d+)", path.read_text(errors="replace"), re.M)
        if found:
            pid = int(match.group(1))
            totals[pid] = totals.get(pid, 0) + int(found.group(1))
    if len(totals) > 1:
        totals.pop(root, None)
    return sum(totals.values())


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, timeout=120, check=False)


def _children(pid: int) -> List[int]:
    try:
        return [int(p) for p in Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()]
    except OSError:
        return []


def _run_once(app: str, env: Dict[str, str], warmup: int, requests: int, threads: str) -> int:
    """Start the server under callgrind, send requests, return the instructions they took.

    A single-process server (uvicorn) is zeroed after the warm-up and dumped after
    the measured requests (``callgrind_control``), which is exact. A forked worker
    (gunicorn) cannot be reached that way (valgrind's gdbserver does not follow
    fork), so it is measured whole: the arbiter is killed, the worker notices its
    parent is gone, exits, and callgrind writes its totals; ``measure`` subtracts
    a run with the warm-up only.
    """
    port = free_port()
    outdir = Path(tempfile.mkdtemp(prefix="pilotfish-callgrind-"))
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        "--callgrind-out-file=%s/cg.%%p" % outdir,
        *APPS[app].argv(bench_python(), port),
    ]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(port, server)
        _requests(port, warmup)
        workers = _children(server.pid)
        if not workers:
            _control("--zero", str(server.pid))
            _requests(port, requests)
            _control("--dump=measured", str(server.pid))
            time.sleep(1.0)
            return _exit_totals(outdir, server.pid, threads, dumped=True)
        _requests(port, requests)
        server.kill()
        server.wait()
        deadline = time.monotonic() + 120
        while any(Path("/proc/%d" % pid).exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        return _exit_totals(outdir, server.pid, threads)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(outdir, ignore_errors=True)


def measure(
    app: str,
    config: str,
    extra: Dict[str, str],
    requests: int,
    warmup: int,
    tree: Optional[Path],
    threads: str,
) -> int:
    """Instructions per request of one server in one configuration."""
    env = config_env(config, None, extra)
    # A fixed hash seed: str/bytes hashes, and so dict and set layouts, repeat from run
    # to run. With a random seed the count moves by ~1k instructions per request.
    env.setdefault("PYTHONHASHSEED", "0")
    if config == "pilotfish" and tree is not None:
        env["PYTHONPATH"] = str(tree / "bootstrap")
    if config == "pilotfish":
        env.setdefault("PILOTFISH_STATUS_HOST", "127.0.0.1")
        env.setdefault("PILOTFISH_STATUS_PORT", str(free_port()))
    if APPS[app].name != "flask-gunicorn":
        return _run_once(app, env, warmup, requests, threads) // requests
    whole = _run_once(app, env, warmup, requests, threads)
    warmup_only = _run_once(app, env, warmup, 0, threads)
    return (whole - warmup_only) // requests


def _parse_extra(items: List[str]) -> List[Tuple[str, Dict[str, str]]]:
    configs: List[Tuple[str, Dict[str, str]]] = []
    for item in items:
        name, _, assignment = item.partition("=")
        key, _, value = assignment.partition("=")
        if not name or not key:
            raise SystemExit("--extra takes NAME=VAR=VALUE, got %r" % item)
        configs.append((name, {key: value}))
    return configs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--app", choices=sorted(APPS), action="append")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration (the count repeats)")
    parser.add_argument(
        "--extra", action="append", default=[], help="NAME=VAR=VALUE: pilotfish plus one variable"
    )
    parser.add_argument("--tree", type=Path, help="agent tree for pilotfish (default build/agent-tree)")
    parser.add_argument("--no-bare", action="store_true", help="skip bare (compare with an earlier run)")
    parser.add_argument("--threads", choices=("main", "all"), default="main", help="which threads to count")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind); nothing measured", file=sys.stderr)
        return 2
    rows = []
    for app in args.app or sorted(APPS):
        configs: List[Tuple[str, str, Dict[str, str]]] = [
            ("bare", "bare", {}),
            ("pilotfish", "pilotfish", {}),
        ]
        configs = configs[1 if args.no_bare else 0 :]
        configs += [(name, "pilotfish", env) for name, env in _parse_extra(args.extra)]
        counts: Dict[str, List[int]] = {name: [] for name, _, _ in configs}
        for _ in range(args.repeat):
            for name, config, env in configs:
                count = measure(app, config, env, args.requests, args.warmup, args.tree, args.threads)
                counts[name].append(count)
                print("%s %s: %s instructions/request" % (app, name, counts[name]), file=sys.stderr)
        bare = sorted(counts["bare"])[len(counts["bare"]) // 2] if "bare" in counts else 0
        for name, _, _ in configs:
            values = sorted(counts[name])
            mid = values[len(values) // 2]
            rows.append(
                [
                    APPS[app].label,
                    name,
                    "%d" % mid,
                    "%d–%d" % (values[0], values[-1]),
                    "—" if name == "bare" or not bare else "%+d" % (mid - bare),
                    "1" if name == "bare" else "%.3f" % (mid / bare) if bare else "—",
                ]
            )
    print(
        markdown_table(
            [
                "app · server",
                "configuration",
                "instructions/request",
                "runs (min–max)",
                "added",
                "ratio to bare",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
