#!/usr/bin/env python3
"""Where the inbound wrappers' per-request microseconds go, step by step.

A profiling aid for the agent's hot path, not a budget check: in one process under
the agent (awake, with its shared-memory slot), each step the WSGI/ASGI wrappers
take per request is timed on its own with ``timeit`` (best of 7), next to a trivial
app called bare and wrapped. Steps name the agent function they time
(``file:function``), so a regression points at its line. A step whose function is
gone from the agent is reported as ``n/a`` rather than failing.

Usage: ``python -m hack.bench.wrapper_parts [--python PY] [--number N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import timeit
from typing import Any, Dict, List, Optional, Tuple

from .common import ROOT, bench_python, config_env, markdown_table
from .rps import free_port


def child(number: int) -> List[Tuple[str, Optional[float]]]:
    import asyncio
    import io

    from _pilotfish_agent import runtime, shared
    from _pilotfish_agent.inbound import asgi, wsgi
    from _pilotfish_agent.inbound import request as rq

    from .wrapper import ASGI_SCOPE, WSGI_ENVIRON

    runtime.wake("AF_INET", ("127.0.0.1", 0))
    slot = rq.slot()
    if slot is None:
        raise SystemExit("wrapper_parts: no shared-memory slot; the agent is not counting")
    environ = dict(WSGI_ENVIRON)
    rows: List[Tuple[str, Optional[float]]] = []

    def best(stmt: str, scope: Dict[str, Any], n: int = number) -> float:
        return min(timeit.repeat(stmt, globals=scope, number=n, repeat=7)) / n * 1e6

    def step(label: str, stmt: str, scope: Dict[str, Any], n: int = number) -> None:
        try:
            rows.append((label, best(stmt, scope, n)))
        except (AttributeError, NameError, TypeError):
            rows.append((label, None))

    step(
        "request.py:classify (path, User-Agent)",
        "rq.classify(e.get('PATH_INFO') or '/', e.get('HTTP_USER_AGENT'))",
        {"rq": rq, "e": environ},
    )
    step("request.py:slot", "rq.slot()", {"rq": rq})
    step("shared.py:is_offline", "shared.is_offline()", {"shared": shared})
    step("shared.py:Slot.begin + Slot.end", "s.begin(None); s.end()", {"s": slot})
    step("shared.py:Slot.begin('gray') + Slot.end (tagged)", "s.begin('gray'); s.end()", {"s": slot})
    step(
        "wsgi.py:_is_instance (not a file)",
        "ii(r, e.get('wsgi.file_wrapper', object))",
        {"ii": getattr(wsgi, "_is_instance", None), "r": [b"x"], "e": environ},
    )
    step(
        "wsgi.py:_SizedFinishing() + close()",
        "s.begin(None); F([b'x'], s).close()",
        {"F": getattr(wsgi, "_SizedFinishing", None), "s": slot},
    )

    def trivial_wsgi(env: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    def call(app: Any) -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(b"")
        result = app(env, start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()

    wrapped_wsgi = wsgi.wrap_wsgi(trivial_wsgi)
    step("trivial WSGI app, bare", "call(a)", {"call": call, "a": trivial_wsgi})
    step("trivial WSGI app, wrap_wsgi", "call(a)", {"call": call, "a": wrapped_wsgi})

    async def trivial_asgi(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    async def receive() -> Dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    loop = asyncio.new_event_loop()
    batch = 1000

    def run(app: Any) -> None:
        async def many() -> None:
            for _ in range(batch):
                await app(dict(ASGI_SCOPE), receive, send)

        loop.run_until_complete(many())

    n = max(number // batch // 10, 3)
    for label, app in (("bare", trivial_asgi), ("wrap_asgi", asgi.wrap_asgi(trivial_asgi))):
        rows.append(("trivial ASGI app, %s" % label, best("run(a)", {"run": run, "a": app}, n) / batch))
    loop.close()
    return rows


def measure(python: str, number: int) -> List[Tuple[str, Optional[float]]]:
    """Run :func:`child` in a process started under the agent; its rows."""
    extra = {"PILOTFISH_STATUS_HOST": "127.0.0.1", "PILOTFISH_STATUS_PORT": str(free_port())}
    done = subprocess.run(
        [python, "-m", "hack.bench.wrapper_parts", "--child", "--number", str(number)],
        env=config_env("pilotfish", None, extra),
        cwd=str(ROOT),  # `-m` finds the package from the repository root
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError("wrapper_parts failed:\n" + done.stderr)
    return [(label, us) for label, us in json.loads(done.stdout.strip().splitlines()[-1])]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench.wrapper_parts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--python", help="interpreter (default: .venvs/bench/bin/python)")
    parser.add_argument("--number", type=int, default=100000, help="calls per timing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.number)))
        return 0
    rows = measure(bench_python(args.python), args.number)
    print(
        markdown_table(
            ["step (agent file:function)", "µs per call, best of 7"],
            [[label, "n/a" if us is None else "%.2f" % us] for label, us in rows],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
