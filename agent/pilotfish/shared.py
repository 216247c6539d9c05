"""Per-container shared memory between the owner process and the app's workers.

Why shared memory: gunicorn forks workers and ``uvicorn --workers`` spawns them,
but exactly one process serves the status port. The owner must know every
worker's in-flight count and last request time (to say "drained"), and every
worker must learn at once that the pod went offline (to add ``Connection:
close``). A small ``mmap`` of a file under ``/dev/shm`` does both with no
threads and no sockets in the workers: each worker writes only its own slot,
the owner only reads slots and writes the header flag.

Layout: a 64-byte header (magic, slot count, offline flag, owner pid) then
``SLOTS`` fixed slots. A slot holds the worker's pid, its counters and a small
table of per-tag request counts. Writers hold no lock across processes; each
field has one writer. Claiming a slot takes an ``flock`` on a fresh file
descriptor (flock locks belong to open file descriptions, which fork shares).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

from pilotfish import log

MAGIC = b"PILOTFS1"
SLOTS = 256
HEADER = struct.Struct("=8sIIqd32x")  # magic, slot count, offline flag, owner pid, created at
assert HEADER.size == 64
# pid, in_flight, requests, probes, ignored, last_request_at, started_at, deaths_seen
COUNTERS = struct.Struct("=qqqqqddq")
TAGS = 8
TAG_NAME = 32
TAG_ENTRY = struct.Struct("=%dsq" % TAG_NAME)
SLOT_SIZE = 512
assert COUNTERS.size + TAGS * TAG_ENTRY.size <= SLOT_SIZE
SIZE = HEADER.size + SLOTS * SLOT_SIZE
OTHER_TAG = "__other__"
ENV_VAR = "PILOTFISH_SHM"

_OFFLINE_OFFSET = 8 + 4  # after magic and slot count: the offline flag (uint32)


def _shm_dir() -> str:
    return (
        "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    )


class Segment:
    """The mapped file. ``create`` in the owner, ``attach`` in a worker."""

    def __init__(self, path: str, buf: mmap.mmap, owner: bool) -> None:
        self.path = path
        self.buf = buf
        self.owner = owner

    @classmethod
    def create(cls, key: str) -> Segment:
        path = os.path.join(_shm_dir(), "pilotfish-%s-%d.shm" % (key, os.getpid()))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            buf = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        HEADER.pack_into(buf, 0, MAGIC, SLOTS, 0, os.getpid(), time.time())
        return cls(path, buf, owner=True)

    @classmethod
    def attach(cls, path: str) -> Optional[Segment]:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != SIZE:
                return None
            buf = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        if buf[:8] != MAGIC:
            buf.close()
            return None
        return cls(path, buf, owner=False)

    # -- the offline flag (header) -------------------------------------------------
    def set_offline(self, offline: bool) -> None:
        struct.pack_into("=I", self.buf, _OFFLINE_OFFSET, 1 if offline else 0)

    def is_offline(self) -> bool:
        return self.buf[_OFFLINE_OFFSET] != 0

    def owner_pid(self) -> int:
        return int(HEADER.unpack_from(self.buf, 0)[3])

    # -- slots ---------------------------------------------------------------------
    def claim_slot(self, pid: int) -> Optional[int]:
        """Take the first free slot (or one whose process is gone) for ``pid``."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Free slots first: the slot of a dead worker is left for the owner to
            # reap, so that it notices the death and keeps its request counts.
            for reuse_dead in (False, True):
                for index in range(SLOTS):
                    offset = slot_offset(index)
                    holder = struct.unpack_from("=q", self.buf, offset)[0]
                    if holder in (0, pid) or (reuse_dead and not process_alive(holder)):
                        self.buf[offset : offset + SLOT_SIZE] = bytes(SLOT_SIZE)
                        COUNTERS.pack_into(self.buf, offset, pid, 0, 0, 0, 0, 0.0, time.monotonic(), 0)
                        return index
            return None
        finally:
            os.close(fd)  # closing releases the flock

    def release_slot(self, index: int, pid: int) -> None:
        """Free the slot if ``pid`` still holds it (under the claim lock)."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            offset = slot_offset(index)
            if struct.unpack_from("=q", self.buf, offset)[0] == pid:
                struct.pack_into("=q", self.buf, offset, 0)
        finally:
            os.close(fd)

    def read_slots(self) -> List[Tuple[int, Tuple, Dict[str, int]]]:
        """Every occupied slot: (index, counters tuple, {tag: requests})."""
        slots = []
        for index in range(SLOTS):
            offset = slot_offset(index)
            counters = COUNTERS.unpack_from(self.buf, offset)
            if counters[0] == 0:
                continue
            tags: Dict[str, int] = {}
            base = offset + COUNTERS.size
            for position in range(TAGS):
                raw, count = TAG_ENTRY.unpack_from(self.buf, base + position * TAG_ENTRY.size)
                name = raw.rstrip(b"\0").decode("utf-8", "replace")
                if raw[:1] != b"\0" or count:
                    tags[name] = tags.get(name, 0) + count
            slots.append((index, counters, tags))
        return slots

    def close(self) -> None:
        try:
            self.buf.close()
        except Exception:
            pass
        if self.owner:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def slot_offset(index: int) -> int:
    return HEADER.size + index * SLOT_SIZE


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Slot:
    """This process's own slot: the hot-path writer used by the inbound wrappers.

    Counters live in Python ints guarded by one thread lock and are copied into
    shared memory on every change, so the owner's view is exact at all times.
    """

    __slots__ = (
        "segment",
        "index",
        "offset",
        "lock",
        "in_flight",
        "requests",
        "probes",
        "ignored",
        "tags",
        "_counters_at",
    )

    def __init__(self, segment: Segment, index: int) -> None:
        self.segment = segment
        self.index = index
        self.offset = slot_offset(index)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0
        self.probes = 0
        self.ignored = 0
        self.tags: Dict[str, int] = {}
        self._counters_at = self.offset + 8  # skip pid

    def begin(self, tag: Optional[str]) -> None:
        now = time.monotonic()
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
            self._count_tag(tag or "")

    def end(self) -> None:
        with self.lock:
            self.in_flight -= 1
            struct.pack_into("=q", self.segment.buf, self._counters_at, self.in_flight)

    def probe(self) -> None:
        with self.lock:
            self.probes += 1
            struct.pack_into("=q", self.segment.buf, self._counters_at + 16, self.probes)

    def ignore(self) -> None:
        with self.lock:
            self.ignored += 1
            struct.pack_into("=q", self.segment.buf, self._counters_at + 24, self.ignored)

    def _count_tag(self, tag: str) -> None:
        position = self.tags.get(tag)
        if position is None:
            position = self._tag_position(tag)
        base = self.offset + COUNTERS.size + position * TAG_ENTRY.size
        count = struct.unpack_from("=q", self.segment.buf, base + TAG_NAME)[0]
        struct.pack_into("=q", self.segment.buf, base + TAG_NAME, count + 1)

    def _tag_position(self, tag: str) -> int:
        name = tag.encode("utf-8")[:TAG_NAME]
        used = len(self.tags)
        if used < TAGS - 1:
            position = used
        else:
            position, name = TAGS - 1, OTHER_TAG.encode()
        base = self.offset + COUNTERS.size + position * TAG_ENTRY.size
        TAG_ENTRY.pack_into(self.segment.buf, base, name, 0)
        if position == TAGS - 1:
            self.tags.setdefault(OTHER_TAG, position)
        self.tags[tag] = position
        return position


_segment: Optional[Segment] = None
_slot: Optional[Slot] = None


def create(key: str) -> Segment:
    """Owner: create the segment and advertise it to processes spawned later."""
    global _segment
    _segment = Segment.create(key)
    os.environ[ENV_VAR] = _segment.path
    return _segment


def attach_from_env() -> Optional[Segment]:
    """Worker started by spawn/exec: find the owner's segment through the environment."""
    global _segment
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    segment = Segment.attach(path)
    if segment is not None and process_alive(segment.owner_pid()):
        _segment = segment
        return segment
    return None


def segment() -> Optional[Segment]:
    return _segment


def claim() -> Optional[Slot]:
    """Give this process a slot in the current segment (once per process)."""
    global _slot
    if _segment is None:
        return None
    if _slot is not None and struct.unpack_from("=q", _segment.buf, _slot.offset)[0] == os.getpid():
        return _slot
    index = _segment.claim_slot(os.getpid())
    if index is None:
        log.once("shm-full", "warning", "more than %d worker processes; extra ones are not counted" % SLOTS)
        return None
    _slot = Slot(_segment, index)
    return _slot


def my_slot() -> Optional[Slot]:
    return _slot


def forget_slot_after_fork() -> None:
    """A forked child must not write into its parent's slot."""
    global _slot
    _slot = None


def set_offline(offline: bool) -> None:
    if _segment is not None:
        _segment.set_offline(offline)


def is_offline() -> bool:
    segment = _segment
    return segment is not None and segment.buf[_OFFLINE_OFFSET] != 0
