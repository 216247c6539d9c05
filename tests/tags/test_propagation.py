"""The tag follows the work a request starts: threads, pools, asyncio tasks, executors.

Each test runs twice: with the propagation patches (the tag must arrive) and
without them, where the same code must lose the tag. The second run proves the
scenario really crosses a context boundary, so the first one is not passing
by accident.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional

import pytest
from pilotfish.tags import propagation
from pilotfish.tags.context import CURRENT_TAG


@pytest.fixture
def patched() -> Iterator[None]:
    propagation.patch()
    yield
    propagation.unpatch()


def seen_in_thread() -> Optional[str]:
    box: List[Optional[str]] = []
    thread = threading.Thread(target=lambda: box.append(CURRENT_TAG.get()))
    thread.start()
    thread.join(5)
    return box[0]


def test_without_the_patch_a_thread_loses_the_tag() -> None:
    CURRENT_TAG.set("gray")
    assert seen_in_thread() is None


def test_a_thread_started_during_a_tagged_request_has_the_tag(patched) -> None:
    CURRENT_TAG.set("gray")
    assert seen_in_thread() == "gray"


def test_a_thread_subclass_with_its_own_run_has_the_tag(patched) -> None:
    class Worker(threading.Thread):
        seen: Optional[str] = "unset"

        def run(self) -> None:
            self.seen = CURRENT_TAG.get()

    CURRENT_TAG.set("gray")
    worker = Worker()
    worker.start()
    worker.join(5)
    assert worker.seen == "gray"
    assert "run" not in worker.__dict__  # no reference cycle left behind


def test_a_thread_started_untagged_is_untouched(patched) -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join(5)
    assert "run" not in thread.__dict__
    assert seen_in_thread() is None


def test_starting_a_thread_twice_still_raises_as_usual(patched) -> None:
    CURRENT_TAG.set("gray")
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join(5)
    with pytest.raises(RuntimeError):
        thread.start()
    assert "run" not in thread.__dict__


def test_without_the_patch_a_pool_loses_the_tag() -> None:
    with ThreadPoolExecutor(1) as pool:
        CURRENT_TAG.set("gray")
        assert pool.submit(CURRENT_TAG.get).result(5) is None


def test_a_function_submitted_to_a_pool_has_the_tag(patched) -> None:
    with ThreadPoolExecutor(2) as pool:
        CURRENT_TAG.set("gray")
        assert pool.submit(CURRENT_TAG.get).result(5) == "gray"
        assert list(pool.map(lambda _: CURRENT_TAG.get(), range(3))) == ["gray"] * 3


def test_submit_passes_arguments_and_keyword_arguments_through(patched) -> None:
    def fn(a, b, fn=None, self=None):  # keyword names that collide with submit's own
        return (a, b, fn, self, CURRENT_TAG.get())

    with ThreadPoolExecutor(1) as pool:
        CURRENT_TAG.set("gray")
        assert pool.submit(fn, 1, 2, fn=3, self=4).result(5) == (1, 2, 3, 4, "gray")


def test_a_reused_pool_thread_does_not_leak_a_tag_to_the_next_task(patched) -> None:
    with ThreadPoolExecutor(1) as pool:
        CURRENT_TAG.set("gray")
        assert pool.submit(CURRENT_TAG.get).result(5) == "gray"
        CURRENT_TAG.set(None)
        assert pool.submit(CURRENT_TAG.get).result(5) is None
        CURRENT_TAG.set("blue")
        assert pool.submit(CURRENT_TAG.get).result(5) == "blue"
        CURRENT_TAG.set(None)
        assert pool.submit(CURRENT_TAG.get).result(5) is None


def test_pool_threads_created_by_a_tagged_submit_do_not_keep_the_tag(patched) -> None:
    with ThreadPoolExecutor(1) as pool:
        CURRENT_TAG.set("gray")  # the first submit starts the worker thread
        assert pool.submit(CURRENT_TAG.get).result(5) == "gray"
        CURRENT_TAG.set(None)
        assert pool.submit(CURRENT_TAG.get).result(5) is None


def test_a_reused_thread_serving_requests_sees_only_each_requests_tag(patched) -> None:
    """What a sync server's worker thread does: the inbound wrapper sets the tag every request."""
    results = []

    def serve(tags):
        for tag in tags:
            CURRENT_TAG.set(tag)  # the inbound wrapper's job, None included
            with ThreadPoolExecutor(1) as pool:
                results.append((tag, seen_in_thread(), pool.submit(CURRENT_TAG.get).result(5)))

    thread = threading.Thread(target=serve, args=(["gray", None, "blue", None],))
    thread.start()
    thread.join(10)
    assert results == [
        ("gray", "gray", "gray"),
        (None, None, None),
        ("blue", "blue", "blue"),
        (None, None, None),
    ]


async def _tag_in_task() -> Optional[str]:
    return CURRENT_TAG.get()


def test_asyncio_tasks_carry_the_tag_natively() -> None:
    async def request(tag: str) -> List[Optional[str]]:
        CURRENT_TAG.set(tag)
        return list(await asyncio.gather(_tag_in_task(), asyncio.ensure_future(_tag_in_task())))

    async def main():
        return await asyncio.gather(request("gray"), request("blue"))

    assert asyncio.run(main()) == [["gray", "gray"], ["blue", "blue"]]


def test_without_the_patch_run_in_executor_loses_the_tag() -> None:
    async def main():
        CURRENT_TAG.set("gray")
        return await asyncio.get_running_loop().run_in_executor(None, CURRENT_TAG.get)

    assert asyncio.run(main()) is None


def test_run_in_executor_carries_the_tag_and_concurrent_requests_never_cross(patched) -> None:
    async def request(tag: Optional[str]) -> List[Optional[str]]:
        CURRENT_TAG.set(tag)
        loop = asyncio.get_running_loop()
        seen = []
        for _ in range(5):
            seen.append(await loop.run_in_executor(None, CURRENT_TAG.get))
            await asyncio.sleep(0)
        return seen

    async def main():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        return await asyncio.gather(*(request(tag) for tag in ["gray", None, "blue", None] * 5))

    for tag, seen in zip(["gray", None, "blue", None] * 5, asyncio.run(main())):
        assert seen == [tag] * 5


def test_asyncio_to_thread_carries_the_tag(patched) -> None:
    async def main():
        CURRENT_TAG.set("gray")
        return await asyncio.to_thread(CURRENT_TAG.get)

    assert asyncio.run(main()) == "gray"


def test_unpatch_restores_the_originals() -> None:
    import concurrent.futures.thread as cft

    start, submit = threading.Thread.start, cft.ThreadPoolExecutor.submit
    propagation.patch()
    assert threading.Thread.start is not start
    propagation.unpatch()
    assert threading.Thread.start is start and cft.ThreadPoolExecutor.submit is submit
