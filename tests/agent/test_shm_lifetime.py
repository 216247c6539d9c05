"""The shared-memory file's life: room for it, who finds it, and who removes it.

Spec: a pod's ``/dev/shm`` is a small tmpfs (64 MiB by default) shared by its
containers and kept across container restarts.

- A tmpfs without room for the segment must not kill the app (a sparse file
  there is SIGBUS at the first read): the owner counts its own requests, warns
  once, and ``/status`` says workers are not counted. The segment takes real
  pages for its first slots only (~36 KiB), and a worker that finds no room
  for a later slot serves uncounted: no process ever touches a page without room.
- The owner removes its files when it stops (SIGTERM), and the files of owners
  that are gone at its start (a crash, SIGKILL), but never a file of a live
  process: not another port's, not a running pid's, not one a process holds.
- The app's own subprocesses neither see the segment in their environment nor
  attach to it as workers.

Each server runs in its own mount namespace (``unshare -m``, as root) with a
directory of the test, or a small tmpfs, mounted on ``/dev/shm``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from support.interpreters import require_app_python
from support.servers import RunningServer
from support.wait import eventually

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to mount a private /dev/shm for the server",
)

CONSUMER = {"X-Pilotfish-Consumer": "checkout"}


def _private_shm(setup: str, *args: str) -> List[str]:
    """A command prefix: run the server in a new mount namespace after ``setup`` (sh, $0 = args[0])."""
    script = 'set -e; %s; exec "$@"' % setup
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, *(args or ("sh",))]


def _bound(directory: Path) -> List[str]:
    return _private_shm('mount --bind "$0" /dev/shm', str(directory))


def _ours(directory: Path) -> List[str]:
    """Segments and their companions (not the per-port lock and owner pointer, which are reused)."""
    return sorted(name for name in os.listdir(directory) if name.startswith("pilotfish-") and ".shm" in name)


@pytest.mark.parametrize(
    "tmpfs",
    [
        pytest.param("mount -t tmpfs -o size=16k tmpfs /dev/shm", id="tmpfs-of-16k"),
        pytest.param(
            "mount -t tmpfs -o size=1m tmpfs /dev/shm; head -c 1000k /dev/zero > /dev/shm/other-container",
            id="tmpfs-nearly-full",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn-sync"])
def test_without_room_for_the_segment_the_app_serves_and_the_owner_counts_alone(
    kind: str, tmpfs: str
) -> None:
    python = require_app_python("3.11")
    with RunningServer(kind, python, wrapper=_private_shm(tmpfs)) as server:
        # before the fix: SIGBUS in the owner at this first read. An event loop's agent wakes beside
        # the loop, so the status port may come up just after the app's: wait for it.
        before = server.wait_status(lambda s: True, timeout=20)
        for _ in range(5):
            assert server.get("/").status == 200
        # a response reaches the client before its request leaves in-flight: wait for that
        status = server.wait_status(lambda s: s["in_flight"] == 0)
        assert status["shared_memory"]["workers_counted"] is False
        assert "No space left on device" in status["shared_memory"]["reason"]
        if kind == "uvicorn":  # the owner serves: its own requests are counted
            assert status["requests_total"] == before["requests_total"] + 5
            assert status["in_flight"] == 0
        else:  # gunicorn's workers are not counted, and do not fail readiness for it
            assert status["workers"] == []
        assert server.status_get("/metrics").status == 200
        assert server.get("/").status == 200
        assert server.status()["ready"] is True
        assert _ours(Path("/proc/%d/root/dev/shm" % server.proc.pid)) == []  # type: ignore[union-attr]
        assert server.proc.poll() is None  # type: ignore[union-attr]
    warnings = [line for line in server.output().splitlines() if "no shared memory" in line]
    assert len(warnings) == 1, server.output()


ROOM_FOR_LATER_SLOTS = r"""
import json, os, subprocess, sys
from pilotfish import shared

directory = sys.argv[1]
segment = shared.Segment.create("room", directory=directory)
filler = os.open(os.path.join(directory, "other-container"), os.O_WRONLY | os.O_CREAT)
try:
    while os.write(filler, bytes(4096)):
        pass
except OSError:
    pass  # the tmpfs is full now
# live workers: a dead worker's slot would be taken over instead of a new one
workers = [subprocess.Popen(["sleep", "60"]) for _ in range(shared.PREALLOCATED_SLOTS + 4)]
pids = [worker.pid for worker in workers]
claimed = [segment.claim_slot(pid) for pid in pids]
for worker in workers:
    worker.kill()
read = segment.read_slots()
print(json.dumps({
    "claimed": claimed,
    "refused": segment.refused(),
    "read": [values[0] for _, values, _ in read],
    "pids": pids,
}))
"""


def test_a_worker_without_room_for_its_slot_serves_uncounted_and_nothing_touches_a_page_without_room(
    tmp_path: Path,
) -> None:
    agent_source = Path(__file__).resolve().parents[2] / "agent"
    shm = tmp_path / "shm"
    shm.mkdir()
    program = (sys.executable, "-c", ROOM_FOR_LATER_SLOTS, str(shm))
    result = subprocess.run(
        _private_shm('mount -t tmpfs -o size=64k tmpfs "$0"', str(shm), *program),
        env={**os.environ, "PYTHONPATH": str(agent_source)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr  # -7 is SIGBUS
    report = json.loads(result.stdout)
    counted = [index for index in report["claimed"] if index is not None]
    first = report["claimed"][:16]
    assert first == list(range(16)), report  # the preallocated slots are always there
    assert None in report["claimed"], report  # the tmpfs ran out for a later one
    assert report["refused"] == report["claimed"].count(None)
    assert report["read"] == report["pids"][: len(counted)]  # read back, and nothing above the mark
    assert "no room in" in result.stderr and "uncounted" in result.stderr


@pytest.mark.parametrize("kind", ["gunicorn-sync", "uvicorn", "uvicorn-workers"])
def test_the_owner_removes_its_files_when_the_server_stops_on_sigterm(kind: str, tmp_path: Path) -> None:
    python = require_app_python("3.11")
    shm = tmp_path / "shm"
    shm.mkdir()
    env = {"PILOTFISH_OFFLINE_QUIET_SECONDS": "0.5", "PILOTFISH_WARMUP_START": "first-request"}
    with RunningServer(kind, python, wrapper=_bound(shm), env=env) as server:
        # uvicorn alone serves in the owner, whose slot comes with its first counted request (the
        # harness's first request can precede the wake): wait only for the separate workers
        workers = 2 if kind != "uvicorn" else 0
        server.wait_status(lambda s: s["ready"] and len(s["workers"]) >= workers, timeout=30)
        owner = server.status()["pid"]
        segment = "pilotfish-%d-%d.shm" % (server.status_port, owner)
        assert _ours(shm) == [segment]
        for _ in range(4):
            assert server.get("/", headers=CONSUMER).status == 200
        if kind != "uvicorn":  # a worker reports the consumer marker in a file next to the segment
            eventually(
                lambda: _ours(shm) == [segment, segment + ".first-consumer"],
                30,
                "the segment and the consumer marker",
            )
        # what a worker that routed outbound calls leaves beside the segment (its routing counts)
        (shm / (segment + ".routing.4242.json")).write_text("{}")
        server.signal()
        server.proc.wait(timeout=60)  # type: ignore[union-attr]
    assert _ours(shm) == [], server.output()


def test_files_of_owners_that_are_gone_are_removed_at_start_and_no_others(tmp_path: Path) -> None:
    python = require_app_python("3.11")
    shm = tmp_path / "shm"
    shm.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = os.getpid()
    with RunningServer("uvicorn", python, wrapper=_bound(shm)) as server:
        server.stop()  # only to learn its ports; started again below with the stale files in place
    port = server.status_port
    stale = [
        "pilotfish-%d-%d.shm" % (port, dead.pid),
        "pilotfish-%d-%d.shm.first-consumer" % (port, dead.pid),
        "pilotfish-%d-%d.shm.routing.%d.json" % (port, dead.pid, dead.pid + 1),  # a worker's counts
    ]
    kept = [
        "pilotfish-%d-%d.shm" % (port + 1, dead.pid),  # another container's status port
        "pilotfish-%d-%d.shm" % (port, alive),  # a process that runs
        "pilotfish-%d-%d.shm" % (port, 2**22 + 7),  # held open: an owner in another pid namespace
        "pilotfish-%d-x.shm" % port,  # not a name we make
    ]
    for name in stale + kept:
        (shm / name).write_bytes(bytes(4096))
    held = os.open(str(shm / kept[2]), os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)
        server.start()
        try:
            # the app can answer before its agent has woken and bound the status port
            owner = server.wait_status(lambda s: s["ready"], timeout=30)["pid"]
            assert _ours(shm) == sorted(kept + ["pilotfish-%d-%d.shm" % (port, owner)])
        finally:
            server.stop()
    finally:
        os.close(held)
    assert _ours(shm) == sorted(kept)


@pytest.mark.parametrize("kind", ["gunicorn-sync", "uvicorn"])
def test_the_apps_own_subprocesses_neither_see_nor_attach_to_the_segment(kind: str, tmp_path: Path) -> None:
    python = require_app_python("3.11")
    shm = tmp_path / "shm"
    shm.mkdir()
    with RunningServer(kind, python, wrapper=_bound(shm)) as server:
        server.wait_status(lambda s: s["ready"], timeout=30)
        child = server.get("/subprocess", timeout=60).json()
        assert child["PILOTFISH_SHM"] is None
        assert child["role"] != "worker"  # it listened, so the agent in it woke: not as our worker
        assert child["pid"] not in {worker["pid"] for worker in server.status()["workers"]}
