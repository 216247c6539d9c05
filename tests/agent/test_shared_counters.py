"""The per-process request counters in shared memory (``pilotfish.shared``).

These run in the test process against a real segment under /dev/shm (or the temp
dir): the owner reads exactly what a worker's hot path wrote. The hot path takes
no lock, because each thread writes only its own cell; these tests are the
specification that the sums stay exact anyway: many threads at once, more
threads than cells, a request that ends on another thread, threads that come
and go (Django's runserver starts one per request).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Dict, Iterator, Tuple

import pytest
from pilotfish import shared


@pytest.fixture(params=[False, True], ids=["worker-cells-in-the-mapping", "owner-private-cells"])
def slot(request: pytest.FixtureRequest) -> Iterator[shared.Slot]:
    """Every counter spec holds for a worker's slot and for the owner's private one."""
    segment = shared.Segment.create("test-" + uuid.uuid4().hex[:8])
    index = segment.claim_slot(os.getpid())
    assert index is not None
    try:
        yield shared.Slot(segment, index, private=request.param)
    finally:
        segment.close()


def counters(slot: shared.Slot) -> Tuple[Tuple, Dict[str, int]]:
    """(pid, in_flight, requests, probes, ignored, started_at) and tags, as the owner reads them."""
    [(index, values, tags)] = slot.segment.read_slots()
    assert index == slot.index
    return values, tags


def test_a_request_is_in_flight_from_begin_to_end(slot: shared.Slot) -> None:
    slot.begin(None)
    values, _ = counters(slot)
    assert values[0] == os.getpid()
    assert (values[1], values[2]) == (1, 1)
    assert values[5] > 0  # when the worker claimed its slot
    slot.end()
    values, tags = counters(slot)
    assert (values[1], values[2]) == (0, 1)
    assert tags == {"": 1}  # untagged requests are the baseline


def test_probes_and_ignored_requests_are_counted_apart(slot: shared.Slot) -> None:
    slot.probe()
    slot.ignore()
    slot.ignore()
    values, _ = counters(slot)
    assert (values[1], values[2], values[3], values[4]) == (0, 0, 1, 2)


def test_tagged_requests_are_counted_by_tag_and_the_rest_is_baseline(slot: shared.Slot) -> None:
    for tag in ("gray", "gray", None, "blue", None, None):
        slot.begin(tag)
        slot.end()
    _, tags = counters(slot)
    assert tags == {"gray": 2, "blue": 1, "": 3}


def test_counts_stay_exact_with_more_threads_than_cells_at_once(slot: shared.Slot) -> None:
    threads_count, per_thread = shared.CELLS + 10, 300
    start = threading.Barrier(threads_count)

    def serve() -> None:
        start.wait()
        for _ in range(per_thread):
            slot.begin(None)
            slot.end()

    threads = [threading.Thread(target=serve) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values, _ = counters(slot)
    assert values[2] == threads_count * per_thread
    assert values[1] == 0


def test_a_request_may_end_on_another_thread(slot: shared.Slot) -> None:
    slot.begin(None)
    ender = threading.Thread(target=slot.end)
    ender.start()
    ender.join()
    values, _ = counters(slot)
    assert (values[1], values[2]) == (0, 1)


def test_a_thread_that_ends_gives_its_cell_to_the_next_one(slot: shared.Slot) -> None:
    """One short-lived thread per request, far more of them than cells: none falls back to the locked cell."""
    free_before = len(slot._free)

    def one_request() -> None:
        slot.begin(None)
        slot.end()

    for _ in range(shared.CELLS * 3):
        worker = threading.Thread(target=one_request)
        worker.start()
        worker.join()
    values, _ = counters(slot)
    assert (values[1], values[2]) == (0, shared.CELLS * 3)
    assert len(slot._free) == free_before
    assert slot.segment.ints[slot._shared] == 0  # the overflow cell was never needed


def test_in_flight_counts_requests_held_open_on_several_threads(slot: shared.Slot) -> None:
    holding, release = threading.Barrier(6), threading.Event()

    def hold() -> None:
        slot.begin(None)
        holding.wait()
        release.wait()
        slot.end()

    threads = [threading.Thread(target=hold) for _ in range(5)]
    for thread in threads:
        thread.start()
    holding.wait()
    values, _ = counters(slot)
    assert values[1] == 5
    release.set()
    for thread in threads:
        thread.join()
    values, _ = counters(slot)
    assert values[1] == 0


def test_a_caller_on_one_thread_may_hand_the_cell_from_begin_to_end(slot: shared.Slot) -> None:
    """The ASGI wrapper does: an asyncio task begins and ends on its loop's thread."""
    slot.begin(None)  # the first request claims the thread's cell
    cell = slot.begin(None)
    assert cell > 0
    slot.end(cell)
    slot.end()
    values, _ = counters(slot)
    assert (values[1], values[2]) == (0, 2)


def test_the_offline_flag_reaches_a_private_slot_set_before_or_after_it_was_claimed() -> None:
    segment = shared.Segment.create("test-" + uuid.uuid4().hex[:8])
    try:
        segment.set_offline(True)
        early = shared.Slot(segment, segment.claim_slot(os.getpid()) or 0, private=True)
        assert early.words[shared.OFFLINE_WORD] == 1
        segment.set_offline(False)
        assert early.words[shared.OFFLINE_WORD] == 0 and not segment.is_offline()
        segment.set_offline(True)
        assert early.words[shared.OFFLINE_WORD] == 1 and segment.is_offline()
    finally:
        segment.close()


def test_private_cells_are_read_only_by_the_process_that_counts_in_them() -> None:
    """A forked child inherits the owner's list as a stale copy: it must read the mapping."""
    segment = shared.Segment.create("test-" + uuid.uuid4().hex[:8])
    try:
        owner = shared.Slot(segment, segment.claim_slot(os.getpid()) or 0, private=True)
        owner.begin(None)
        assert segment.read_slots()[0][1][1:3] == (1, 1)  # in flight, requests
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.write(write, repr(segment.read_slots()[0][1][1:3]).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        assert os.read(read, 100) == b"(0, 0)"
        os.close(read)
    finally:
        segment.close()


def test_a_process_is_alive_until_it_exits_and_a_zombie_counts_as_dead() -> None:
    assert shared.process_alive(os.getpid())
    assert not shared.process_alive(0) and not shared.process_alive(-1)
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        # Wait for it to exit without reaping it: a zombie, which no longer serves anything.
        os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
        assert not shared.process_alive(child)
    finally:
        os.waitpid(child, 0)
    assert not shared.process_alive(child)
