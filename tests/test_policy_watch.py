"""The policy file watcher for real: a FileSource running on its own event loop against files
in a temporary directory, changed the ways people and Kubernetes change them.

- with inotify a new content lands at once (far sooner than the settle interval, set long
  here so that only an event can explain a quick landing): a file renamed over the policy
  file, an in-place write once the writer closes it, a ConfigMap-style ``..data`` swap, the
  target of a symlinked policy file edited where it lives;
- a file written in place by a slow writer is never applied half-written, even when the
  settle interval is much shorter than the writer's pause;
- a deleted directory is reported and the last good policies stay; recreated, it is
  watched again and its file applied;
- invalid content is reported and the last good policies stay;
- without inotify (the process cannot open one more file descriptor, or it is turned off)
  the file is polled and a new content applied once it settled.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from pilotfish_webhook.config import sources
from pilotfish_webhook.config.sources import FileSource, Inotify
from pilotfish_webhook.config.store import PolicyStore

pytestmark = pytest.mark.skipif(Inotify.create() is None, reason="no inotify on this system")

SYSTEM = "pilotfish-system"

# Two documents: the first alone is valid YAML and a valid policy set, without the second's policy.
DOCS = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: a, namespace: shop}
spec:
  lossless: {warmup: {seconds: %d}}
---
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: b, namespace: shop}
spec:
  lossless: {warmup: {curve: %d}}
"""


class RecordingStore(PolicyStore):
    """A store that keeps every effective config it published for app ``x`` of ``shop``."""

    def __init__(self) -> None:
        super().__init__(SYSTEM)
        self.published: List[Dict[str, Any]] = []

    def _publish(self) -> None:
        super()._publish()
        self.published.append(dict(self.snapshot.effective("shop", "x").config))

    def current(self) -> Dict[str, Any]:
        """The last config published, read from the record itself: the watcher's thread sets
        ``snapshot`` before it appends, so reading ``snapshot`` could run ahead of the record."""
        return self.published[-1] if self.published else {}


class Watching:
    """``source.run()`` on an event loop in a thread, for the test's lifetime."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(source.run(), self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.future.cancel)
        wait_until(lambda: self.future.done(), 5, "the watcher to stop")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Seconds it took ``condition`` to hold; fails after ``seconds``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "timed out waiting for " + what
        time.sleep(0.005)
    return time.monotonic() - start


def config(seconds: int, curve: int) -> Dict[str, Any]:
    return {"warmup_seconds": seconds, "warmup_curve": curve}


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[..., Watching]]:
    started: List[Watching] = []

    def start(path: Path, **options: Any) -> Watching:
        store = RecordingStore()
        source = FileSource(path, store, **options)
        assert source.poll(complete=True)  # the initial content, whole (no settling at start)
        running = Watching(source)
        started.append(running)
        wait_until(lambda: source.watch != "none", 5, "the watcher to start")
        return running

    yield start
    for running in started:
        running.stop()


def replace(path: Path, text: str) -> None:
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def store_of(running: Watching) -> RecordingStore:
    store = running.source.store
    assert isinstance(store, RecordingStore)
    return store


def test_a_file_renamed_over_the_policy_file_lands_at_once(tmp_path: Path, watch: Any) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(DOCS % (60, 2))
    running = watch(path, settle=5.0)
    store = store_of(running)
    assert running.source.watch == "inotify"
    assert store.current() == config(60, 2)
    replace(path, DOCS % (45, 3))
    took = wait_until(lambda: store.current() == config(45, 3), 4, "the replaced file to land")
    assert took < 1.0, "landed after %.2f s: waited for something other than the rename" % took
    replace(path, DOCS % (30, 4))  # and again: the directory watch outlives a replaced file
    wait_until(lambda: store.current() == config(30, 4), 4, "the second replacement to land")
    assert store.published == [config(60, 2), config(45, 3), config(30, 4)]


def test_a_slow_in_place_writer_is_applied_once_it_closes_and_never_half_written(
    tmp_path: Path, watch: Any
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(DOCS % (60, 2))
    # Settle and re-hash far shorter than the writer's pause: polling alone would apply the half.
    running = watch(path, settle=0.05, rehash_every=0.1)
    store = store_of(running)
    final = DOCS % (45, 3)
    cut = final.index("---\n")
    reloads = running.source.reloads
    with open(path, "w") as out:  # truncates: an empty file is valid YAML too
        out.write(final[:cut])
        out.flush()
        os.fsync(out.fileno())
        time.sleep(0.6)  # the slow writer's pause: the first half alone is a valid policy set
        assert store.current() == config(60, 2), "a half-written file was applied"
        out.write(final[cut:])
    took = wait_until(lambda: store.current() == config(45, 3), 4, "the closed file to land")
    assert took < 1.0
    assert store.published == [config(60, 2), config(45, 3)]
    assert running.source.reloads == reloads + 1


def test_a_configmap_style_data_symlink_swap_lands_at_once(tmp_path: Path, watch: Any) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()

    def publish(generation: int, text: str) -> None:
        # What the kubelet's atomic writer does: a new timestamped directory, a temporary
        # symlink to it renamed over ``..data``, then the old directory removed.
        old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
        fresh = volume / ("..2026_12_03_12_00_0%d" % generation)
        fresh.mkdir()
        (fresh / "policies.yaml").write_text(text)
        os.symlink(fresh.name, volume / "..data_tmp")
        os.replace(volume / "..data_tmp", volume / "..data")
        if old is not None:
            shutil.rmtree(volume / old)

    publish(1, DOCS % (60, 2))
    os.symlink("..data/policies.yaml", volume / "policies.yaml")
    running = watch(volume / "policies.yaml", settle=5.0)
    store = store_of(running)
    assert store.current() == config(60, 2)
    publish(2, DOCS % (45, 3))
    took = wait_until(lambda: store.current() == config(45, 3), 4, "the swapped content to land")
    assert took < 1.0, "landed after %.2f s" % took
    publish(3, DOCS % (30, 4))
    took = wait_until(lambda: store.current() == config(30, 4), 4, "the second swap to land")
    assert took < 1.0, "landed after %.2f s" % took
    assert store.published == [config(60, 2), config(45, 3), config(30, 4)]


@pytest.mark.parametrize("where", ["same-directory", "other-directory"])
def test_the_target_of_a_symlinked_policy_file_edited_where_it_lives_lands_at_once(
    tmp_path: Path, watch: Any, where: str
) -> None:
    home = tmp_path if where == "same-directory" else tmp_path / "elsewhere"
    home.mkdir(exist_ok=True)
    target = home / "policies-v1.yaml"
    target.write_text(DOCS % (60, 2))
    link = tmp_path / "policies.yaml"
    os.symlink(target, link)
    running = watch(link, settle=5.0)
    store = store_of(running)
    target.write_text(DOCS % (45, 3))  # in place, then closed
    took = wait_until(lambda: store.current() == config(45, 3), 4, "the edited target to land")
    assert took < 1.0, "landed after %.2f s" % took
    assert store.published == [config(60, 2), config(45, 3)]


def test_a_deleted_directory_keeps_the_last_good_policies_and_is_watched_again_once_back(
    tmp_path: Path, watch: Any
) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    path = directory / "policies.yaml"
    path.write_text(DOCS % (60, 2))
    running = watch(path, settle=0.05)
    store = store_of(running)
    shutil.rmtree(directory)
    wait_until(lambda: store.source_error is not None, 4, "the missing file to be reported")
    assert "cannot read" in str(store.source_error)
    assert store.current() == config(60, 2)
    directory.mkdir()
    replace(path, DOCS % (45, 3))
    wait_until(lambda: store.current() == config(45, 3), 4, "the recreated file to land")
    assert store.source_error is None
    replace(path, DOCS % (30, 4))  # and the new directory is watched: a rename lands at once
    took = wait_until(lambda: store.current() == config(30, 4), 4, "a rename in the new directory")
    assert took < 1.0
    assert running.source.watch == "inotify"


def test_invalid_content_is_reported_and_the_last_good_policies_stay(tmp_path: Path, watch: Any) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(DOCS % (60, 2))
    running = watch(path, settle=5.0)
    store = store_of(running)
    replace(path, "spec: [unclosed\n")
    wait_until(lambda: store.source_error is not None, 4, "the broken file to be reported")
    assert "not valid YAML" in store.source_error["message"]  # type: ignore[index]
    assert store.current() == config(60, 2)
    replace(path, DOCS % (60, 50))  # valid YAML, invalid policy: that object keeps its last good
    wait_until(lambda: bool(store.errors), 4, "the invalid policy to be reported")
    assert store.current() == config(60, 2)
    replace(path, DOCS % (45, 3))
    wait_until(lambda: store.current() == config(45, 3), 4, "the repaired file to land")
    assert store.source_error is None and not store.errors


def test_inotify_is_unavailable_when_no_file_descriptor_is_left() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # the next descriptor is refused
    try:
        assert Inotify.create() is None
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    created = Inotify.create()
    assert created is not None
    created.close()


@pytest.mark.parametrize("how", ["unavailable", "turned-off"])
def test_without_inotify_the_file_is_polled_and_applied_once_settled(
    tmp_path: Path, watch: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "unavailable":
        monkeypatch.setattr(sources.Inotify, "create", classmethod(lambda cls: None))
    path = tmp_path / "policies.yaml"
    path.write_text(DOCS % (60, 2))
    options: Dict[str, Any] = {"settle": 0.3}
    if how == "turned-off":
        options["use_inotify"] = False
    running = watch(path, **options)
    store = store_of(running)
    assert running.source.watch == "poll"
    written = time.monotonic()
    replace(path, DOCS % (45, 3))
    wait_until(lambda: store.current() == config(45, 3), 4, "the polled change to land")
    assert time.monotonic() - written >= 0.3, "applied before it settled"
    final = DOCS % (30, 4)
    cut = final.index("---\n")
    with open(path, "w") as out:  # a quick in-place writer: its pause is shorter than the settle
        out.write(final[:cut])
        out.flush()
        time.sleep(0.1)
        out.write(final[cut:])
    wait_until(lambda: store.current() == config(30, 4), 4, "the rewritten file to land")
    assert store.published == [config(60, 2), config(45, 3), config(30, 4)]
