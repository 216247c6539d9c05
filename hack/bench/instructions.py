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
not its arbiter). ``--configs`` names the configurations as ``hack/bench/rps.py`` does
(``bare``, ``pilotfish``, ``pilotfish@DIR`` for an agent tree built with
``python -m hack.build_agent_tree --out DIR``); ``--extra`` adds configurations that differ
from ``pilotfish`` by one variable (to split the cost: ``ignored=PILOTFISH_IGNORE_PATHS=/``
counts a request the agent classifies and skips).

The configurations are measured interleaved: ``--repeat`` rounds, each running every
configuration once in rotating order, so a change of machine load (uvicorn's 0.1 s loop
tick and the agent's threads run on wall time, and valgrind slows the server ~50x) falls
on all of them alike. Only counts from one invocation compare; the table gives each
configuration's median, the spread of its rounds, and the median of the per-round
differences to bare.

Instructions are not time (cache misses and branch mispredictions are not
counted), so this is a check on the requests/s tables, not a replacement.

The table also gives CPython's type-cache misses per request (calls into
``find_name_in_mro``, where a lookup through a type goes when the type cache has not got
it). They show the layout draw: anything that runs before the app moves which of its
lookups share a cache slot, and a configuration that only does that (``shift@N``, see
``common.SHIFT_CONFIG``) can add several misses per request to an app where bare has none.

Reproduce: ``make bench`` once (bench venv), then
``.venv/bin/python -m hack.bench.instructions --app fastapi-uvicorn --requests 2000``, or to
compare two agents: ``--configs bare,pilotfish,pilotfish@/tmp/old-tree --repeat 3``.
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

from .common import (
    SHIFT_CONFIG,
    TREE_CONFIG,
    bench_python,
    config_env,
    is_pilotfish,
    markdown_table,
    median,
    rotated,
    shift_count,
)
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


def _serving_dumps(outdir: Path, root: int, threads: str, dumped: bool = False) -> List[Path]:
    """The callgrind files of the process that served: from the dumps at exit, or the ones
    requested (``dumped``).

    A gunicorn arbiter forks its worker: the worker served, so the root's own
    dumps are left out whenever there are others. ``threads="main"`` keeps only
    each process's main thread (files ending in ``-01``): background threads (the
    agent's status server polls twice a second) keep wall-clock timers while
    valgrind runs the server ~50x slower, which would inflate them ~50x per request.
    """
    by_pid: Dict[int, List[Path]] = {}
    for path in outdir.iterdir():
        match = re.match(r"cg\.(\d+)(\.\d+)?(?:-(\d+))?$", path.name)
        if (
            not match
            or bool(match.group(2)) != dumped
            or (threads == "main" and match.group(3) not in (None, "01"))
        ):
            continue
        by_pid.setdefault(int(match.group(1)), []).append(path)
    if len(by_pid) > 1:
        by_pid.pop(root, None)
    return [path for paths in by_pid.values() for path in paths]


def _total(dump: Path) -> int:
    found = re.search(r"^(?:totals|summary):\s+(\d+)", dump.read_text(errors="replace"), re.M)
    return int(found.group(1)) if found else 0


TYPE_CACHE_MISS = "find_name_in_mro"
"""The CPython function a type-attribute lookup runs when CPython's type cache misses (the walk
of the class's MRO dicts; 3.8-3.13). Its calls per request show the layout draw (see
``common.SHIFT_CONFIG``)."""


def type_cache_misses(dump: Path) -> Optional[int]:
    """Calls into :data:`TYPE_CACHE_MISS` recorded in one callgrind file, or None when the
    interpreter has no such symbol (stripped, or another implementation)."""
    names: Dict[str, str] = {}
    calls = 0
    seen = False
    callee: Optional[str] = None
    with dump.open(errors="replace") as lines:
        for line in lines:
            if line.startswith(("fn=", "cfn=")):
                # Callgrind names a function once, "(id) name", then by "(id)" alone.
                ident, _, name = line.partition("=")[2].strip().partition(" ")
                if name:
                    names[ident] = name
                    seen = seen or name == TYPE_CACHE_MISS
                callee = names.get(ident) if line.startswith("cfn=") else None
            elif line.startswith("calls=") and callee == TYPE_CACHE_MISS:
                calls += int(line[len("calls=") :].split()[0])
    return calls if seen else None


def _exit_totals(outdir: Path, root: int, threads: str, dumped: bool = False) -> Tuple[int, Optional[int]]:
    """Instructions and type-cache misses of the process that served (see :func:`_serving_dumps`)."""
    dumps = _serving_dumps(outdir, root, threads, dumped)
    misses = [type_cache_misses(dump) for dump in dumps]
    known = [m for m in misses if m is not None]
    return sum(_total(dump) for dump in dumps), (sum(known) if known else None)


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, timeout=120, check=False)


def _children(pid: int) -> List[int]:
    try:
        return [int(p) for p in Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()]
    except OSError:
        return []


def _run_once(
    app: str, env: Dict[str, str], warmup: int, requests: int, threads: str
) -> Tuple[int, Optional[int]]:
    """Start the server under callgrind, send requests, return the instructions they took and
    the type-cache misses among them (None where the interpreter's symbols do not show them).

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
) -> Tuple[int, Optional[float]]:
    """Instructions per request of one server in one configuration, and its type-cache misses
    per request (:data:`TYPE_CACHE_MISS`; None when they cannot be seen)."""
    env = config_env(config, None, extra)
    # A fixed hash seed: str/bytes hashes, and so dict and set layouts, repeat from run
    # to run. With a random seed the count moves by ~1k instructions per request.
    env.setdefault("PYTHONHASHSEED", "0")
    if config == "pilotfish" and tree is not None:
        env["PYTHONPATH"] = str(tree / "bootstrap")
    if is_pilotfish(config):
        env.setdefault("PILOTFISH_STATUS_HOST", "127.0.0.1")
        env.setdefault("PILOTFISH_STATUS_PORT", str(free_port()))
    if APPS[app].name != "flask-gunicorn":
        count, misses = _run_once(app, env, warmup, requests, threads)
        return count // requests, None if misses is None else misses / requests
    whole, whole_misses = _run_once(app, env, warmup, requests, threads)
    warmup_only, warmup_misses = _run_once(app, env, warmup, 0, threads)
    if whole_misses is None or warmup_misses is None:
        return (whole - warmup_only) // requests, None
    return (whole - warmup_only) // requests, (whole_misses - warmup_misses) / requests


def _parse_extra(items: List[str]) -> List[Tuple[str, Dict[str, str]]]:
    configs: List[Tuple[str, Dict[str, str]]] = []
    for item in items:
        name, _, assignment = item.partition("=")
        key, _, value = assignment.partition("=")
        if not name or not key:
            raise SystemExit("--extra takes NAME=VAR=VALUE, got %r" % item)
        configs.append((name, {key: value}))
    return configs


def _median(values: List[int]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _parse_configs(text: str, no_bare: bool) -> List[Tuple[str, str, Dict[str, str]]]:
    configs: List[Tuple[str, str, Dict[str, str]]] = []
    for name in (c.strip() for c in text.split(",")):
        if not name or (no_bare and name == "bare"):
            continue
        if name not in ("bare", "pilotfish") and not name.startswith((TREE_CONFIG, SHIFT_CONFIG)):
            raise SystemExit("--configs takes bare, pilotfish, pilotfish@DIR or shift@N, got %r" % name)
        if name.startswith(SHIFT_CONFIG):
            shift_count(name)
        if name.startswith(TREE_CONFIG) and not (Path(name[len(TREE_CONFIG) :]) / "bootstrap").is_dir():
            raise SystemExit("%s: no agent tree there (python -m hack.build_agent_tree --out DIR)" % name)
        configs.append((name, name, {}))
    return configs


def table_rows(
    label: str, counts: Dict[str, List[int]], misses: Optional[Dict[str, List[Optional[float]]]] = None
) -> List[List[str]]:
    """One row per configuration: median, min–max over rounds, added to bare (median of per-round
    differences, rounds paired), ratio of medians, and type-cache misses per request (median;
    "—" where the interpreter does not show them)."""
    rows = []
    bare = counts.get("bare")
    bare_mid = _median(bare) if bare else 0.0
    for name, values in counts.items():
        mid = _median(values)
        if name == "bare" or not bare:
            added = "—"
        else:
            diffs = [v - b for v, b in zip(values, bare)]
            added = "%+.0f (%+d…%+d)" % (_median(diffs), min(diffs), max(diffs))
        seen = [m for m in (misses or {}).get(name, []) if m is not None]
        rows.append(
            [
                label,
                name,
                "%.0f" % mid,
                "%d–%d" % (min(values), max(values)),
                added,
                "1" if name == "bare" else "%.4f" % (mid / bare_mid) if bare_mid else "—",
                "%.1f (%.1f–%.1f)" % (median(seen), min(seen), max(seen)) if seen else "—",
            ]
        )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--app", choices=sorted(APPS), action="append")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--configs",
        default="bare,pilotfish",
        help="comma-separated: bare, pilotfish, pilotfish@DIR (an agent tree built with --out DIR), "
        "shift@N (bare with type version tags moved on by N)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds; each runs every configuration once, interleaved"
    )
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
    configs = _parse_configs(args.configs, args.no_bare)
    configs += [(name, "pilotfish", env) for name, env in _parse_extra(args.extra)]
    if not configs:
        raise SystemExit("no configuration to measure")
    by_name = {name: (config, env) for name, config, env in configs}
    names = list(by_name)
    rows = []
    for app in args.app or sorted(APPS):
        counts: Dict[str, List[int]] = {name: [] for name in names}
        misses: Dict[str, List[Optional[float]]] = {name: [] for name in names}
        for round_index in range(args.repeat):
            for name in rotated(names, round_index):
                config, env = by_name[name]
                count, missed = measure(app, config, env, args.requests, args.warmup, args.tree, args.threads)
                counts[name].append(count)
                misses[name].append(missed)
                print(
                    "%s round %d %s: %d instructions/request, type-cache misses/request %s"
                    % (app, round_index + 1, name, count, "—" if missed is None else "%.2f" % missed),
                    file=sys.stderr,
                    flush=True,
                )
        rows += table_rows(APPS[app].label, counts, misses)
    print(
        markdown_table(
            [
                "app · server",
                "configuration",
                "instructions/request (median)",
                "rounds (min–max)",
                "added to bare (median of paired rounds, min…max)",
                "ratio to bare",
                "type-cache misses/request (median, min–max)",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
