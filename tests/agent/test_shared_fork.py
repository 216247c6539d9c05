"""A fork at any instant leaves the child able to claim its slot.

gunicorn forks a replacement worker the moment one exits, from the master, which
is also the agent's owner: its status thread may be freeing a dead worker's slot
at that very instant. The slot table's lock must not be inherited held by the
child (an ``flock`` is: it belongs to the open file description the child
shares), or the new worker blocks in its claim forever, and every later worker
queues behind it.

These run in the test process with a real segment and a real ``os.fork()``. To
fork at the worst instant, the releasing (or claiming) thread is paused inside
the locked section, where it writes the slot, until the fork is done.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import uuid
from typing import Any, Callable, Iterator, Optional, Tuple

import pytest
from pilotfish import shared
from support.wait import eventually


@pytest.fixture()
def segment() -> Iterator[shared.Segment]:
    created = shared.Segment.create("test-" + uuid.uuid4().hex[:8])
    try:
        yield created
    finally:
        created.close()


class _PausingStruct:
    """``struct`` for ``pilotfish.shared``: ``pack_into`` on the paused thread waits for a go."""

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.inside, self.go = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(struct, name)

    def pack_into(self, *args: Any) -> None:
        if threading.current_thread().name == self.thread_name:
            self.inside.set()
            self.go.wait(30)
        struct.pack_into(*args)


def _fork_and_claim(segment: shared.Segment, then: Callable[[], None]) -> int:
    """Fork; the child does what the agent does after a fork (forget, claim). Its exit status.

    ``then`` runs in the parent right after the fork: the paused thread goes on, as it
    would have, and leaves the locked section (in the parent; the child has no such thread).
    """
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(10)  # a child stuck in the claim dies of SIGALRM
        try:
            shared.forget_slot_after_fork()
            os._exit(0 if segment.claim_slot(os.getpid()) is not None else 3)
        finally:
            os._exit(4)
    then()

    def reaped() -> Optional[Tuple[int, int]]:
        pid, status = os.waitpid(child, os.WNOHANG)
        return (pid, status) if pid else None

    try:
        return eventually(reaped, 30, "the child's exit", interval=0.01)[1]
    except AssertionError:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return -1


def test_a_child_forked_while_the_owner_frees_a_slot_claims_its_own_at_once(
    segment: shared.Segment, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_worker = os.fork()
    if dead_worker == 0:  # pragma: no cover
        os._exit(0)
    os.waitpid(dead_worker, 0)
    index = segment.claim_slot(dead_worker)
    assert index is not None
    pausing = _PausingStruct("releaser")
    monkeypatch.setattr(shared, "struct", pausing)
    releaser = threading.Thread(target=segment.release_slot, args=(index, dead_worker), name="releaser")
    releaser.start()
    try:
        assert pausing.inside.wait(10), "the release never reached its locked section"
        status = _fork_and_claim(segment, pausing.go.set)  # forks while the table is locked
    finally:
        pausing.go.set()
        releaser.join(10)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        "the forked child could not claim a slot (wait status %r; SIGALRM = blocked in the claim)" % status
    )
    assert [values[0] for _, values, _ in segment.read_slots()] != [dead_worker]


def test_a_child_forked_while_another_thread_claims_a_slot_claims_its_own_at_once(
    segment: shared.Segment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a claim in progress in the parent (an owner that serves requests itself)."""
    pausing = _PausingStruct("claimer")
    monkeypatch.setattr(shared, "COUNTERS", _PausingCounters(pausing))
    claimer = threading.Thread(target=segment.claim_slot, args=(os.getpid(),), name="claimer")
    claimer.start()
    try:
        assert pausing.inside.wait(10), "the claim never reached its locked section"
        status = _fork_and_claim(segment, pausing.go.set)
    finally:
        pausing.go.set()
        claimer.join(10)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        "the forked child could not claim a slot (wait status %r; SIGALRM = blocked in the claim)" % status
    )


class _PausingCounters:
    """``COUNTERS`` for ``pilotfish.shared``: writing a claimed slot's head pauses like above."""

    def __init__(self, pausing: _PausingStruct) -> None:
        self.pausing = pausing

    def __getattr__(self, name: str) -> Any:
        return getattr(shared.COUNTERS.__class__, name)

    def pack_into(self, *args: Any) -> None:
        self.pausing.pack_into(COUNTERS_FORMAT, *args)


COUNTERS_FORMAT = shared.COUNTERS.format
