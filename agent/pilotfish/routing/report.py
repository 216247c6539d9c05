"""Routing counts of worker processes, for the owner's ``/status`` and ``/metrics``.

Under gunicorn or ``uvicorn --workers`` the outbound calls happen in workers,
while ``:55199`` lives in the owner. Each worker therefore writes its
:func:`pilotfish.routing.core.snapshot` next to the per-container shared
memory (one small JSON file per process, rewritten atomically at most once a
second and only when a count moved), and the owner adds up the files of
processes that are still alive. Counts are per process since it started, so a
restarted worker starts again from zero, as Prometheus counters may.
"""

from __future__ import annotations

import glob
import json
import os
import threading
from typing import Any, Callable, Dict, Optional

from .. import log, shared

SUFFIX = ".routing"
INTERVAL = 1.0

_writer_pid = 0


def _prefix() -> Optional[str]:
    segment = shared.segment()
    return segment.path + SUFFIX if segment is not None else None


def start_writer(snapshot: Callable[[], Dict[str, Any]]) -> None:
    """In a worker process: write ``snapshot()`` (this process's routing view,
    :func:`pilotfish.routing.core.snapshot`) while it changes (idempotent)."""
    global _writer_pid
    if _writer_pid == os.getpid():
        return
    _writer_pid = os.getpid()
    threading.Thread(
        target=_write_loop, args=(snapshot,), name="pilotfish-routing-report", daemon=True
    ).start()


def _write_loop(snapshot: Callable[[], Dict[str, Any]]) -> None:
    last = ""
    while True:
        try:
            prefix = _prefix()
            if prefix is not None:
                view = snapshot()
                text = json.dumps(view, sort_keys=True)
                if text != last:
                    path = "%s.%d.json" % (prefix, os.getpid())
                    with open(path + ".tmp", "w") as handle:
                        handle.write(text)
                    os.replace(path + ".tmp", path)
                    last = text
        except Exception:
            log.exception_once("routing-report", "could not report routing counts to the owner")
        threading.Event().wait(INTERVAL)


def merge_workers(view: Dict[str, Any]) -> None:
    """Add every live worker's counts into ``view`` (the owner's own snapshot)."""
    prefix = _prefix()
    if prefix is None:
        return
    for path in glob.glob(glob.escape(prefix) + ".*.json"):
        try:
            pid = int(path[len(prefix) + 1 : -len(".json")])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove(path)
            continue
        except OSError:
            pass
        try:
            with open(path) as handle:
                other = json.load(handle)
        except (OSError, ValueError):
            continue
        _add(view, other)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _add(view: Dict[str, Any], other: Dict[str, Any]) -> None:
    for name, theirs in (other.get("services") or {}).items():
        mine = view["services"].get(name)
        if mine is None:
            view["services"][name] = theirs
            continue
        for lane, count in (theirs.get("requests_by_lane") or {}).items():
            mine["requests_by_lane"][lane] = mine["requests_by_lane"].get(lane, 0) + count
        mine["fallbacks"] += theirs.get("fallbacks") or 0
        rows = {(r["lane"], r["instance_tag"], r["outcome"]): r for r in mine["outcomes"]}
        for row in theirs.get("outcomes") or ():
            key = (row["lane"], row["instance_tag"], row["outcome"])
            if key in rows:
                rows[key]["requests"] += row["requests"]
            else:
                rows[key] = dict(row)
        mine["outcomes"] = [rows[key] for key in sorted(rows)]
        instances = {(i["pod"], i["ip"]): i for i in mine["instances"]}
        for item in theirs.get("instances") or ():
            found = instances.get((item["pod"], item["ip"]))
            if found is not None:
                found["sent"] += item.get("sent") or 0
                found["ejections"] += item.get("ejections") or 0
