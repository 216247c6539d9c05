"""Per-container shared memory between the owner process and the app's workers.

Why shared memory: gunicorn forks workers and ``uvicorn --workers`` spawns them,
but exactly one process serves the status port. The owner must know every
worker's in-flight and request counts (to say "drained"), and every
worker must learn at once that the pod went offline (to add ``Connection:
close``). A small ``mmap`` of a file under ``/dev/shm`` does both with no
threads and no sockets in the workers: each worker writes only its own slot,
the owner only reads slots and writes the header flag.

Layout: a 64-byte header (magic, offline flag, slot count, owner pid) then
``SLOTS`` fixed slots. A slot holds the worker's pid and start time, a small
table of per-tag request counts, and ``CELLS`` counter cells: one per thread
that serves requests, so that every cell has exactly one writer and the hot
path takes no lock (see :class:`Slot`). Claiming a slot takes an ``flock`` on a
fresh file descriptor (flock locks belong to open file descriptions, which fork
shares).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import log

MAGIC = b"PILOTFS4"
SLOTS = 256
# magic, offline flag, slot count, owner pid, created at. The offline flag is a
# whole int64 word so that a wrapper reads it from the same ``ints`` view it counts in.
HEADER = struct.Struct("=8sqI4xqd24x")
assert HEADER.size == 64
# The slot's head: pid, then five unused words (the counters live in the cells),
# started_at, one spare. ``read_slots`` sums the cells into
# (pid, in_flight, requests, probes, ignored, started_at).
COUNTERS = struct.Struct("=qqqqqddq")
TAGS = 8
TAG_NAME = 32
TAG_ENTRY = struct.Struct("=%dsq" % TAG_NAME)
# A cell: requests begun, requests ended, probes, ignored (int64). No time stamp: a
# time.monotonic() per request cost ~1k instructions; the drain watches the counts move.
CELL_WORDS = 4
CELL_SIZE = CELL_WORDS * 8
CELLS = 40
CELLS_AT = COUNTERS.size + TAGS * TAG_ENTRY.size
SLOT_SIZE = 2048
assert CELLS_AT + CELLS * CELL_SIZE <= SLOT_SIZE
SIZE = HEADER.size + SLOTS * SLOT_SIZE
OTHER_TAG = "__other__"
ENV_VAR = "PILOTFISH_SHM"

OFFLINE_WORD = 1  # ``Segment.ints[OFFLINE_WORD]``: nonzero while the pod is offline
# Private cells (a Slot of the owner process, see Slot): a list with the offline flag
# mirrored at OFFLINE_WORD and the cells from PRIVATE_FIRST_CELL on.
PRIVATE_FIRST_CELL = CELL_WORDS


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
        view = memoryview(buf)
        self.ints = view.cast("q")  # 8-byte aligned fields, by index
        self.floats = view.cast("d")
        # slot index -> (pid, cells) of a slot whose cells live in that process's
        # memory (see Slot); only that process reads them.
        self.private: Dict[int, Tuple[int, List[int]]] = {}

    @classmethod
    def create(cls, key: str) -> Segment:
        path = os.path.join(_shm_dir(), "pilotfish-%s-%d.shm" % (key, os.getpid()))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            buf = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        HEADER.pack_into(buf, 0, MAGIC, 0, SLOTS, os.getpid(), time.time())
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
        flag = 1 if offline else 0
        self.ints[OFFLINE_WORD] = flag
        for _pid, cells in list(self.private.values()):
            cells[OFFLINE_WORD] = flag

    def is_offline(self) -> bool:
        return self.ints[OFFLINE_WORD] != 0

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
        """Every occupied slot: (index, counters tuple, {tag: requests}).

        The counters tuple is (pid, in_flight, requests, probes, ignored,
        started_at), the slot's cells summed. Ended counts are read before begun
        counts: both only grow, so the in-flight difference is never below the
        truth at the time of the read.
        """
        slots = []
        ints, floats = self.ints, self.floats
        me = os.getpid()
        for index in range(SLOTS):
            offset = slot_offset(index)
            pid = ints[offset // 8]
            if pid == 0:
                continue
            cells: Sequence[int] = ints
            first = (offset + CELLS_AT) // 8
            private = self.private.get(index)
            if private is not None and private[0] == pid == me:
                cells, first = private[1], PRIVATE_FIRST_CELL
            stop = first + CELLS * CELL_WORDS
            ended = sum(cells[first + 1 : stop : CELL_WORDS])
            begun = sum(cells[first:stop:CELL_WORDS])
            probes = sum(cells[first + 2 : stop : CELL_WORDS])
            ignored = sum(cells[first + 3 : stop : CELL_WORDS])
            started_at = floats[offset // 8 + 6]
            counters = (pid, begun - ended, begun, probes, ignored, started_at)
            tags: Dict[str, int] = {}
            base = offset + COUNTERS.size
            for position in range(TAGS):
                raw, count = TAG_ENTRY.unpack_from(self.buf, base + position * TAG_ENTRY.size)
                if raw[:1] != b"\0":
                    name = raw.rstrip(b"\0").decode("utf-8", "replace")
                    tags[name] = tags.get(name, 0) + count
            baseline = counters[2] - sum(tags.values())  # untagged requests are not tabled
            if baseline > 0:
                tags[""] = baseline
            slots.append((index, counters, tags))
        return slots

    def close(self) -> None:
        try:
            self.ints.release()
            self.floats.release()
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


class _Local(threading.local):
    """Per thread: the index (in ``Slot._q``) of the thread's cell; 0 until claimed."""

    cell = 0


class _Lease:
    """Held in a thread's :class:`_Local`: gives the cell back when the thread ends.

    A thread's locals are dropped when it exits, which runs ``__del__``; the cell
    keeps its counts (they are totals) and serves the next new thread.
    """

    __slots__ = ("slot", "cell")

    def __init__(self, slot: Slot, cell: int) -> None:
        self.slot = slot
        self.cell = cell

    def __del__(self) -> None:
        try:
            self.slot._release_cell(self.cell)
        except Exception:
            pass


class Slot:
    """This process's own slot: the hot-path writer used by the inbound wrappers.

    Why cells: a lock around every update cost more than the rest of the
    request accounting together (``with lock`` is ~0.1 µs, taken twice per
    request). Instead each thread that serves requests gets its own cell, and
    only that thread writes it, so ``+= 1`` on the mapping needs no lock. A
    request may end on another thread than the one it began on; the sums stay
    right because in-flight is begun minus ended over all cells. Threads beyond
    ``CELLS - 1`` share the last cell and take the lock for it. Only requests
    that carry a tag touch the tag table (under the lock): the baseline count
    is derived by the reader as requests minus tagged requests.

    Private cells: in the owner process (the one that serves the status port), the
    cells are a plain list instead of words of the mapping. Only the owner reads
    slots, so a single-process server (uvicorn, hypercorn, waitress, runserver)
    need not publish its counts at all, and ``+= 1`` on a list item costs less
    than half of one on the mapping (~390 against ~900 instructions). The offline
    flag is mirrored into the list at ``OFFLINE_WORD`` by :meth:`Segment.set_offline`.

    The ASGI wrapper inlines :meth:`begin` and :meth:`end` for the common case
    (the thread's own cell, no tag): ``_q[cell] += 1`` and ``_q[cell + 1] += 1``,
    and reads the offline flag as ``_q[OFFLINE_WORD]``. A change to the cell
    layout changes it too.
    """

    __slots__ = (
        "segment",
        "private",
        "index",
        "offset",
        "lock",
        "tags",
        "_q",
        "_local",
        "_free",
        "_shared",
        "_tables_used",
    )

    def __init__(self, segment: Segment, index: int, private: bool = False) -> None:
        self.segment = segment
        self.index = index
        self.offset = slot_offset(index)
        self.lock = threading.Lock()
        self.tags: Dict[str, int] = {}  # tag -> index of its count in ``segment.ints``
        self._local = _Local()
        self.private = private
        self._q: Any  # List[int] (private) or the memoryview of the mapping
        if private:
            q = [0] * (PRIVATE_FIRST_CELL + CELLS * CELL_WORDS)
            q[OFFLINE_WORD] = segment.ints[OFFLINE_WORD]
            segment.private[index] = (os.getpid(), q)
            self._q, first = q, PRIVATE_FIRST_CELL
        else:
            self._q, first = segment.ints, (self.offset + CELLS_AT) // 8
        cells = [first + n * CELL_WORDS for n in range(CELLS)]
        self._shared = cells.pop()  # the overflow cell, written under the lock
        self._free = cells[::-1]  # pop() hands out the first cell first
        self._tables_used = 0

    # -- the hot path: one cell per thread, no lock ----------------------------------
    def begin(self, tag: Optional[str]) -> int:
        """Count a request in; returns this thread's cell (0 when it is not a private one)."""
        c = self._local.cell
        if c > 0:
            q = self._q
            q[c] += 1
            if tag:
                self._count_tag(tag)
            return c
        self._locked(c, 0, tag)
        return 0

    def end(self, cell: int = 0) -> None:
        """Count a request out.

        ``cell``: what :meth:`begin` returned, for a caller that ends on the thread
        that began (an asyncio task never changes threads); it saves the
        thread-local lookup. Otherwise 0: the current thread's cell is used.
        """
        if cell > 0:
            self._q[cell + 1] += 1
            return
        c = self._local.cell
        if c > 0:
            self._q[c + 1] += 1
        else:
            self._locked(c, 1, None)

    def probe(self) -> None:
        c = self._local.cell
        if c > 0:
            self._q[c + 2] += 1
        else:
            self._locked(c, 2, None)

    def ignore(self) -> None:
        c = self._local.cell
        if c > 0:
            self._q[c + 3] += 1
        else:
            self._locked(c, 3, None)

    # -- first use in a thread, and the shared overflow cell ----------------------
    def _locked(self, c: int, field: int, tag: Optional[str]) -> None:
        """Claim this thread's cell, or update the shared cell under the lock."""
        if c == 0:
            c = self._claim_cell()
            if c > 0:
                if field == 0:
                    self.begin(tag)
                else:
                    self._q[c + field] += 1
                return
        with self.lock:
            self._q[-c + field] += 1
        if tag:
            self._count_tag(tag)

    def _claim_cell(self) -> int:
        """This thread's cell: its own (> 0), or the shared one (as a negative index)."""
        with self.lock:
            cell = self._free.pop() if self._free else 0
        if cell:
            self._local.lease = _Lease(self, cell)
            self._local.cell = cell
            return cell
        log.once(
            "shm-cells",
            "info",
            "more than %d threads serve requests; the others share a locked counter" % (CELLS - 1),
        )
        self._local.cell = -self._shared
        return -self._shared

    def _release_cell(self, cell: int) -> None:
        with self.lock:
            self._free.append(cell)

    def _count_tag(self, tag: str) -> None:
        with self.lock:
            at = self.tags.get(tag)
            if at is None:
                at = self._tag_index(tag)
            self.segment.ints[at] += 1

    def _tag_index(self, tag: str) -> int:
        """Give ``tag`` an entry in the table (the last entry collects any overflow)."""
        position = min(self._tables_used, TAGS - 1)
        base = self.offset + COUNTERS.size + position * TAG_ENTRY.size
        if self._tables_used < TAGS:
            name = tag.encode("utf-8")[:TAG_NAME] if position < TAGS - 1 else OTHER_TAG.encode()
            TAG_ENTRY.pack_into(self.segment.buf, base, name, 0)
            self._tables_used += 1
        at = (base + TAG_NAME) // 8
        self.tags[tag] = at
        return at


_segment: Optional[Segment] = None
_slot: Optional[Slot] = None


def create(key: str) -> Segment:
    """Owner: create the segment and advertise it to processes spawned later."""
    global _segment
    _segment = Segment.create(key)
    os.environ[ENV_VAR] = _segment.path
    return _segment


def directory() -> str:
    """Where segments live (``/dev/shm`` when writable): the runtime keeps its owner pointer there."""
    return _shm_dir()


def discard() -> None:
    """Owner whose start-up failed: unmap and remove the segment, and stop advertising it."""
    global _segment, _slot
    segment, _segment, _slot = _segment, None, None
    if segment is not None:
        if os.environ.get(ENV_VAR) == segment.path:
            del os.environ[ENV_VAR]
        segment.close()


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
    pid = os.getpid()
    index = _segment.claim_slot(pid)
    if index is None:
        log.once("shm-full", "warning", "more than %d worker processes; extra ones are not counted" % SLOTS)
        return None
    # The owner reads every slot, so when it serves requests itself its cells can be a
    # plain list: cheaper to count in than the mapping, and read in this process only.
    _slot = Slot(_segment, index, private=_segment.owner and _segment.owner_pid() == pid)
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
    return segment is not None and segment.ints[OFFLINE_WORD] != 0
