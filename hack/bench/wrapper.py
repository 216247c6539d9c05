#!/usr/bin/env python3
"""Per-request cost of pilotfish's inbound wrappers, in process: µs added to one request.

Requests/s through a real server on a shared 2-core machine moves by tens of percent
from run to run, which hides a 3 % budget. This benchmark removes the server and the
network: in one process started under the agent (``PYTHONPATH=build/agent-tree/
bootstrap``, agent awake, so every request is counted in shared memory as in a pod),
it calls the hello-world app directly, bare and through ``wrap_wsgi``/``wrap_asgi``,
in interleaved blocks, and reports the median per-call time of each and the median
(p10-p90) of the paired per-block differences. The difference is what the agent adds
on the request path; set against a server's CPU time per request (from ``rps.py``)
it predicts the requests/s ratio.

Usage: ``python -m hack.bench.wrapper [--python PY] [--rounds N] [--calls K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from .common import APPS_DIR, ROOT, Summary, bench_python, config_env, markdown_table, rotated
from .rps import free_port

WSGI_ENVIRON: Dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_USER_AGENT": "pilotfish-bench",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}

ASGI_SCOPE: Dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"pilotfish-bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def time_wsgi(app: Any, calls: int) -> float:
    """Seconds per call of a WSGI app, response iterated and closed as a server does."""
    import io

    start = time.perf_counter()
    for _ in range(calls):
        environ = dict(WSGI_ENVIRON)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = app(environ, _start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - start) / calls


async def _receive() -> Dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def time_asgi(app: Any, calls: int, loop: asyncio.AbstractEventLoop) -> float:
    async def many() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await app(dict(ASGI_SCOPE), _receive, _send)
        return (time.perf_counter() - start) / calls

    return loop.run_until_complete(many())


def child(kind: str, rounds: int, calls: int) -> Dict[str, Any]:
    """Runs inside the process started under the agent."""
    import importlib

    from _pilotfish_agent import bootstrap, runtime, stats

    if not bootstrap.loaded:
        raise SystemExit("wrapper: pilotfish is not loaded in this process (PYTHONPATH?)")
    runtime.wake("AF_INET", ("127.0.0.1", 0))  # as when the server listens: owner, shared memory
    sys.path.insert(0, str(APPS_DIR))
    loop: Optional[asyncio.AbstractEventLoop] = None
    bare_app: Any
    wrapped: Any
    timer: Callable[[Any, int], float]
    if kind == "wsgi":
        from _pilotfish_agent.inbound.wsgi import wrap_wsgi

        bare_app = importlib.import_module("flask_hello").app
        wrapped = wrap_wsgi(bare_app)
        timer = time_wsgi
    else:
        from _pilotfish_agent.inbound.asgi import wrap_asgi

        bare_app = importlib.import_module("fastapi_hello").app
        wrapped = wrap_asgi(bare_app)
        loop = event_loop = asyncio.new_event_loop()

        def timer(app: Any, n: int) -> float:
            return time_asgi(app, n, event_loop)

    arms = {"bare": bare_app, "pilotfish": wrapped}
    for app in arms.values():  # warm caches, routing tables, lazy imports
        timer(app, max(calls // 5, 50))
    counted_before = stats.totals().requests_total
    per_call: Dict[str, List[float]] = {name: [] for name in arms}
    deltas: List[float] = []
    for r in range(rounds):
        block: Dict[str, float] = {}
        for name in rotated(list(arms), r):
            block[name] = timer(arms[name], calls) * 1e6
            per_call[name].append(block[name])
        deltas.append(block["pilotfish"] - block["bare"])
    counted = stats.totals().requests_total - counted_before
    if loop is not None:
        loop.close()
    return {"kind": kind, "per_call_us": per_call, "delta_us": deltas, "counted": counted, "calls": calls}


def measure(python: str, kind: str, rounds: int, calls: int) -> Dict[str, Any]:
    extra = {"PILOTFISH_STATUS_HOST": "127.0.0.1", "PILOTFISH_STATUS_PORT": str(free_port())}
    done = subprocess.run(
        [python, "-m", "hack.bench.wrapper", "--child", kind, "--rounds", str(rounds), "--calls", str(calls)],
        env=config_env("pilotfish", None, extra),
        cwd=str(ROOT),  # `-m` finds the package from the repository root
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError("wrapper benchmark (%s) failed:\n%s" % (kind, done.stderr))
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    wrapped_calls = rounds * calls
    if result["counted"] < wrapped_calls:
        raise RuntimeError(
            "the agent counted %d of %d wrapped calls: not measuring the counting path"
            % (result["counted"], wrapped_calls)
        )
    return result


def wrapper_table(results: List[Dict[str, Any]]) -> str:
    rows = []
    for res in results:
        bare = Summary.of(res["per_call_us"]["bare"])
        agent = Summary.of(res["per_call_us"]["pilotfish"])
        delta = Summary.of(res["delta_us"])
        fastest = min(res["per_call_us"]["pilotfish"]) - min(res["per_call_us"]["bare"])
        rows.append(
            [
                "Flask app, `wrap_wsgi`" if res["kind"] == "wsgi" else "FastAPI app, `wrap_asgi`",
                "%.1f (%.1f–%.1f)" % (bare.median, bare.p10, bare.p90),
                "%.1f (%.1f–%.1f)" % (agent.median, agent.p10, agent.p90),
                "%+.2f (%+.2f…%+.2f)" % (delta.median, delta.p10, delta.p90),
                "%+.2f" % fastest,
                "%d × %d" % (len(res["delta_us"]), res["calls"]),
            ]
        )
    return markdown_table(
        [
            "app called in process",
            "bare µs/call, median (p10–p90)",
            "wrapped µs/call",
            "added µs/request, median (p10…p90) of paired blocks",
            "added µs, fastest block vs fastest block",
            "blocks × calls",
        ],
        rows,
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.wrapper", description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="interpreter (default: .venvs/bench/bin/python)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--child", choices=["wsgi", "asgi"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.calls)))
        return 0
    python = bench_python(args.python)
    results = [measure(python, kind, args.rounds, args.calls) for kind in ("wsgi", "asgi")]
    print(wrapper_table(results))
    return 0


if __name__ == "__main__":
    os.environ.pop("PYTHONPROFILEIMPORTTIME", None)
    sys.exit(main())
