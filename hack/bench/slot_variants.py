#!/usr/bin/env python3
"""One-off (2026-11-22, agent of main 7212355): what cheaper ``Slot.begin``/``end`` would save.

Backs the proposal in docs/benchmarks.md ("Where those µs go"). It times, in one process
under the awake agent and interleaved, the agent's own ``Slot.begin(None); Slot.end()``
against two variants subclassed here: leaving ``_count_tag`` out for untagged requests,
and additionally writing only the changed fields with precompiled ``struct.Struct``s.
Once ``pilotfish.shared`` changes, this script has served its purpose; delete it then.

Usage: ``python hack/bench/slot_variants.py [--python PY]``.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_python, config_env
from rps import free_port


def child() -> None:
    from pilotfish import runtime, shared
    from pilotfish.inbound import request as rq

    runtime.wake("AF_INET", ("127.0.0.1", 0))
    agent_slot = rq.slot()
    if agent_slot is None:
        raise SystemExit("no slot: the agent is not counting")
    mono = time.monotonic
    pair = struct.Struct("=qq")
    one = struct.Struct("=q")
    stamp = struct.Struct("=d")

    class NoTagWhenUntagged(shared.Slot):
        def begin(self, tag: Optional[str]) -> None:
            now = mono()
            with self.lock:
                self.in_flight += 1
                self.requests += 1
                struct.pack_into(
                    "=qqqqd",
                    self.segment.buf,
                    self._counters_at,
                    self.in_flight,
                    self.requests,
                    self.probes,
                    self.ignored,
                    now,
                )
                if tag:
                    self._count_tag(tag)

    class Lean(shared.Slot):
        def begin(self, tag: Optional[str]) -> None:
            now = mono()
            with self.lock:
                self.in_flight += 1
                self.requests += 1
                buf, at = self.segment.buf, self._counters_at
                pair.pack_into(buf, at, self.in_flight, self.requests)
                stamp.pack_into(buf, at + 32, now)
                if tag:
                    self._count_tag(tag)

        def end(self) -> None:
            with self.lock:
                self.in_flight -= 1
                one.pack_into(self.segment.buf, self._counters_at, self.in_flight)

    variants: Dict[str, Any] = {
        "agent's Slot": agent_slot,
        "skip _count_tag when untagged": NoTagWhenUntagged(agent_slot.segment, agent_slot.index + 1),
        "+ precompiled Structs, changed fields only": Lean(agent_slot.segment, agent_slot.index + 2),
    }
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(15):
        for name, slot in variants.items():
            best = min(timeit.repeat("s.begin(None); s.end()", globals={"s": slot}, number=50000, repeat=3))
            times[name].append(best / 50000 * 1e6)
    for name, values in times.items():
        values.sort()
        print("%-45s best %.2f µs, median %.2f µs" % (name, values[0], values[len(values) // 2]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child()
        return 0
    extra = {"PILOTFISH_STATUS_HOST": "127.0.0.1", "PILOTFISH_STATUS_PORT": str(free_port())}
    return subprocess.run(
        [bench_python(args.python), __file__, "--child"], env=config_env("pilotfish", None, extra)
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
