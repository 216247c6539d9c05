"""Instructions the lines added to uvicorn's ``run_asgi`` cost one usual request, alone.

The server-wide count (``instructions.py``) moves by ~1–2k instructions between starts
of an agent configuration (address layout: type-attribute-cache collisions, malloc's
state), more than the differences between two versions of the added lines. This takes
the server away: a minimal ``run_asgi`` of the same shape is recompiled by the agent
(``uvicorn_cycle.counting_run_asgi``) and driven, without an event loop, N times in one
process under ``valgrind --tool=callgrind``; the same is run with the function left
bare. Each configuration runs twice, with 1,000 and 1,000 + ``--requests`` calls, and
the difference of the two totals, divided by ``--requests``, is the cost of one call
with start-up taken out.

Reproduce: ``make bench`` once (bench venv), then
``.venvs/bench/bin/python -m hack.bench.cycle_instructions --headers 1,8``, or to compare
two agents: ``--trees build/agent-tree,/tmp/old-tree``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from .common import BOOTSTRAP, TREE_CONFIG, bench_python, config_env, markdown_table
from .rps import free_port

_WARM = 1000

# Run by the interpreter under valgrind: argv = mode ("bare" or "agent"), calls, headers.
_DRIVER = (
    r"""
import socket, sys, time
import uvicorn.protocols.http.httptools_impl  # the agent's uvicorn integration loads with it
mode, calls, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()  # the agent wakes on a listening socket

async def run_asgi(self, app):
    try:
        await app(self.scope, None, None)
    finally:
        self.done = True

async def app(scope, receive, send):
    pass

async def send(message):
    pass

function = run_asgi
if mode == "agent":
    for _ in range(400):
        cycle = sys.modules.get("_pilotfish_agent.inbound.uvicorn_cycle")
        shared = sys.modules.get("_pilotfish_agent.shared")
        if cycle is not None and shared is not None and shared.process_segment is not None:
            break
        time.sleep(0.05)
    else:
        raise SystemExit("the agent did not wake")
    cycle.count_app(app)
    function = cycle.counting_run_asgi(run_asgi)
    if function is None:
        raise SystemExit("run_asgi was not recompiled")
names = [b"host", b"accept", b"accept-encoding", b"user-agent", b"content-type",
         b"x-request-id", b"x-forwarded-for", b"traceparent", b"accept-language", b"cookie"]
names = (names * (count // len(names) + 1))[:count]

class Cycle:
    pass

default_headers = [(b"server", b"uvicorn")]

def one():
    cycle = Cycle()
    # new bytes each time, as the server's parser makes them (their hash is not cached)
    cycle.scope = {"type": "http", "headers": [(bytes(bytearray(n)), b"v") for n in names]}
    cycle.send = send
    cycle.default_headers = default_headers  # the server's, as uvicorn's protocol passes it
    coroutine = function(cycle, app)
    try:
        coroutine.send(None)
    except StopIteration:
        pass

for _ in range(%d):
    one()
if mode == "agent" and cycle._cache[0].app is not app:
    raise SystemExit("the usual request was not counted from the cache")
for _ in range(calls):
    one()
"""
    % _WARM
)


def write_driver(directory: Path) -> Path:
    """The driver as a file: the agent recompiles ``run_asgi`` from its source, which code
    given with ``-c`` does not have."""
    path = directory / "cycle_driver.py"
    path.write_text(_DRIVER)
    return path


def _total(python: str, tree: Optional[Path], calls: int, headers: int) -> int:
    outdir = Path(tempfile.mkdtemp(prefix="pilotfish-cycle-"))
    if tree is None:
        env = config_env("bare", None)
    else:
        status = {"PILOTFISH_STATUS_HOST": "127.0.0.1", "PILOTFISH_STATUS_PORT": str(free_port())}
        env = config_env(TREE_CONFIG + str(tree), None, status)
    env["PYTHONHASHSEED"] = "0"
    # Both runs compile alike: a first run that wrote a fresh tree's .pyc files would count
    # the compiling as calls.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                "--callgrind-out-file=%s/cg.%%p" % outdir,
                python,
                str(write_driver(outdir)),
                "agent" if tree is not None else "bare",
                str(calls),
                str(headers),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        mains = sorted(outdir.glob("cg.*-01"))
        if done.returncode != 0 or not mains:
            raise SystemExit("driver failed:\n" + done.stderr[-2000:])
        found = re.search(r"^(?:totals|summary):\s+(\d+)", mains[0].read_text(errors="replace"), re.M)
        if not found:
            raise SystemExit("no total in %s" % mains[0])
        return int(found.group(1))
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def per_call(python: str, tree: Optional[Path], requests: int, headers: int) -> float:
    """Instructions of one call of (recompiled or bare) ``run_asgi`` with ``headers`` headers."""
    return (_total(python, tree, requests, headers) - _total(python, tree, 0, headers)) / requests


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench.cycle_instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--headers", default="1,8", help="comma-separated header counts")
    parser.add_argument("--trees", default=str(BOOTSTRAP.parent), help="comma-separated agent trees")
    parser.add_argument("--python", help="interpreter (default: the bench venv's)")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind); nothing measured", file=sys.stderr)
        return 2
    python = bench_python(args.python)
    trees = [Path(t) for t in args.trees.split(",") if t]
    rows = []
    for headers in (int(h) for h in args.headers.split(",")):
        bare = per_call(python, None, args.requests, headers)
        rows.append([str(headers), "bare", "%.0f" % bare, "—"])
        for tree in trees:
            if not (tree / "bootstrap").is_dir():
                raise SystemExit("%s: no agent tree there (python -m hack.build_agent_tree --out DIR)" % tree)
            counted = per_call(python, tree, args.requests, headers)
            rows.append([str(headers), str(tree), "%.0f" % counted, "%+.0f" % (counted - bare)])
            print("headers %d %s: %+.0f" % (headers, tree, counted - bare), file=sys.stderr, flush=True)
    print(markdown_table(["headers", "run_asgi", "instructions/call", "added by the agent"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
