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
path takes no lock (see :class:`Slot`).

Claiming and freeing slots (never the hot path) take the slot-table lock: a
thread lock, then a POSIX record lock (``lockf``) on the file. Record locks
belong to a process and are not inherited by ``fork``: gunicorn forks a
worker whenever one exits, at any instant, possibly while the owner's status
thread is freeing a dead worker's slot, and the new worker must still be able
to claim its own. (An ``flock`` belongs to the open file description, which
the child shares: a child forked mid-release held the lock forever, and every
later worker blocked behind it.) The thread lock is replaced in a forked child
(:func:`forget_slot_after_fork`) for the same reason.

Room: a page of a tmpfs file is memory the moment anyone touches it, a read
included, and a page a full tmpfs cannot back kills whoever touches it with
SIGBUS. So no process touches a page that has not been given real pages first
(``posix_fallocate``): the header and the first ``PREALLOCATED_SLOTS`` slots when
the file is created, each later slot by the worker that claims it, and readers
look only below the high-water mark of slots ever claimed (a header word). A pod
with a few workers so holds ~36 KiB, not the whole table. When the file cannot be
created the owner counts its own requests in private memory
(:meth:`Segment.process_private`) and says so in ``/status``; a later worker
without room for its slot serves uncounted, and ``/status`` says how many.

Lifetime: the owner holds a shared ``flock`` on the file for its whole
life: it tells a later owner that the file is still in use, whatever pid
namespace its holder lives in. The owner removes the file at exit, when SIGTERM
is handed on to the app, and removes its predecessors' files at start
(:func:`remove_stale`). Workers spawned by the owner (``uvicorn --workers``,
``--reload``, hypercorn) find the file by name: their multiprocessing parent's
pid and the status port. Nothing is put in the environment, so the app's own
subprocesses never attach.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import log

MAGIC = b"PILOTFS5"
SLOTS = 256
# magic, offline flag, slot count, owner pid, created at, slots ever claimed (the
# high-water mark readers stop at), claims refused. The offline flag is a whole int64
# word so that a wrapper reads it from the same ``ints`` view it counts in.
HEADER = struct.Struct("=8sqI4xqdqq8x")
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
PREALLOCATED_SLOTS = 16  # given real pages with the header; later slots get theirs when claimed
OTHER_TAG = "__other__"
PREFIX, SUFFIX = "pilotfish-", ".shm"  # pilotfish-<status port>-<owner pid>.shm
MARKER_SUFFIX = ".first-consumer"  # the warm-up marker (see warmup.py), named after the segment
COMPANION_SUFFIXES = (MARKER_SUFFIX,)  # files named after a segment, removed with it
_COMPANION_TAILS = tuple(SUFFIX + suffix for suffix in COMPANION_SUFFIXES)
# Per-worker files named after a segment (``<segment>.routing.<pid>.json``, the workers'
# routing counts): removed with it too, whatever the pid.
COMPANION_PREFIXES = (".routing.",)
CLAIM_WAIT = 10.0  # a worker gives up counting (and serves) if the table stays locked this long
RELEASE_WAIT = 0.5  # the owner frees a dead worker's slot on a later read if it cannot now

OFFLINE_WORD = 1  # ``Segment.ints[OFFLINE_WORD]``: nonzero while the pod is offline
HIGH_WORD = 5  # slots ever claimed: no process reads a slot at or above it (its pages may not exist)
REFUSED_WORD = 6  # claims refused (no room in the tmpfs, or every slot taken)
# Private cells (a Slot of the owner process, see Slot): a list with the offline flag
# mirrored at OFFLINE_WORD and the cells from PRIVATE_FIRST_CELL on.
PRIVATE_FIRST_CELL = CELL_WORDS


def _shm_dir() -> str:
    return (
        "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    )


def segment_path(key: str, pid: int, directory: Optional[str] = None) -> str:
    return os.path.join(directory or _shm_dir(), "%s%s-%d%s" % (PREFIX, key, pid, SUFFIX))


class Segment:
    """The mapped file. ``create`` in the owner, ``attach`` in a worker, ``private`` as fall-back."""

    def __init__(self, path: str, buf: Union[mmap.mmap, bytearray], owner: bool, fd: int = -1) -> None:
        self.path = path  # "" for a private segment
        self.buf = buf
        self.owner = owner
        self.fd = fd  # the file, kept open: the slot-table lock and the in-use flock live on it
        self.shared = fd >= 0
        self.creator = os.getpid()
        self.unavailable = ""  # why a private segment is private
        view = memoryview(buf)
        self.ints = view.cast("q")  # 8-byte aligned fields, by index
        self.floats = view.cast("d")
        # slot index -> (pid, cells) of a slot whose cells live in that process's
        # memory (see Slot); only that process reads them.
        self.private: Dict[int, Tuple[int, List[int]]] = {}

    @classmethod
    def create(cls, key: str, directory: Optional[str] = None) -> Segment:
        """Create the file with real pages for the header and the first slots.

        OSError (ENOSPC, EBUSY, ...) when it cannot."""
        path = segment_path(key, os.getpid(), directory)
        if os.path.exists(path) and not _remove_if_unused(path):
            # pid reuse, and the file's owner still runs (in another pid namespace)
            raise OSError(errno.EBUSY, "in use by another process", path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # "in use" for as long as this file description lives
            os.ftruncate(fd, SIZE)
            _allocate(fd, 0, slot_offset(PREALLOCATED_SLOTS))
            buf = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        HEADER.pack_into(buf, 0, MAGIC, 0, SLOTS, os.getpid(), time.time(), 0, 0)
        return cls(path, buf, owner=True, fd=fd)

    @classmethod
    def process_private(cls, reason: str) -> Segment:
        """Process-private memory with the same layout: the owner counts its own requests only.

        Plain memory, no mapping: whatever made the segment fail cannot fail this too.
        """
        buf = bytearray(SIZE)
        HEADER.pack_into(buf, 0, MAGIC, 0, SLOTS, os.getpid(), time.time(), 0, 0)
        segment = cls("", buf, owner=True)
        segment.unavailable = reason
        return segment

    @classmethod
    def attach(cls, path: str) -> Optional[Segment]:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != SIZE:
                os.close(fd)
                return None
            buf = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            return None
        if buf[:8] != MAGIC:
            buf.close()
            os.close(fd)
            return None
        return cls(path, buf, owner=False, fd=fd)

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
    def _lock_table(self, wait: float) -> bool:
        """Take the slot-table lock (thread lock, then the file's record lock) within ``wait`` s."""
        if not _table_lock.acquire(timeout=wait):
            return False
        if not self.shared:
            return True
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                return True
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() >= deadline:
                    _table_lock.release()
                    return False
            time.sleep(0.001)

    def _unlock_table(self) -> None:
        try:
            if self.shared:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)
        finally:
            _table_lock.release()

    def claim_slot(self, pid: int, wait: float = CLAIM_WAIT) -> Optional[int]:
        """Take the first free slot (or one whose process is gone) for ``pid``; None if none."""
        if not self._lock_table(wait):
            log.once("shm-claim-lock", "warning", "the worker table stayed locked; a worker is not counted")
            return None
        try:
            index = self._claim_locked(pid)
        finally:
            self._unlock_table()
        return index

    def high_water(self) -> int:
        """Slots ever claimed: every slot below has real pages, none at or above is read."""
        return min(max(int(self.ints[HIGH_WORD]), 0), SLOTS)

    def refused(self) -> int:
        """Claims refused so far: worker processes that serve uncounted."""
        return int(self.ints[REFUSED_WORD])

    def _claim_locked(self, pid: int) -> Optional[int]:
        # Free slots first, a never-used one next: the slot of a dead worker is left for
        # the owner to reap, so that it notices the death and keeps its request counts.
        high = self.high_water()
        index = self._find_locked(range(high), lambda holder: holder in (0, pid))
        if index is None and high < SLOTS and self._give_pages(high, pid):
            index = high
            self.ints[HIGH_WORD] = high + 1
        if index is None:
            index = self._find_locked(range(high), lambda holder: not process_alive(holder))
        if index is None:
            self.ints[REFUSED_WORD] += 1
            if high >= SLOTS:
                log.once(
                    "shm-full", "warning", "more than %d worker processes; others are not counted" % SLOTS
                )
            return None
        offset = slot_offset(index)
        self.buf[offset : offset + SLOT_SIZE] = bytes(SLOT_SIZE)
        COUNTERS.pack_into(self.buf, offset, pid, 0, 0, 0, 0, 0.0, time.monotonic(), 0)
        return index

    def _find_locked(self, indexes: range, takes: Callable[[int], bool]) -> Optional[int]:
        for index in indexes:
            if takes(int(self.ints[_FIRST_PID + index * _SLOT_WORDS])):
                return index
        return None

    def _give_pages(self, index: int, pid: int) -> bool:
        """Real pages for a never-used slot before anyone touches it (else SIGBUS on a full tmpfs)."""
        if not self.shared or index < PREALLOCATED_SLOTS:
            return True
        try:
            _allocate(self.fd, slot_offset(index), SLOT_SIZE)
            return True
        except OSError as error:
            log.once(
                "shm-slot-room",
                "warning",
                "no room in %s for worker %d's counters (%s): it serves, uncounted; "
                "/status shared_memory.workers_not_counted says how many"
                % (os.path.dirname(self.path), pid, error.strerror or error),
            )
            return False

    def release_slot(self, index: int, pid: int, wait: float = RELEASE_WAIT) -> bool:
        """Free the slot if ``pid`` still holds it; False if the table stayed locked (try later)."""
        if not self._lock_table(wait):
            return False
        try:
            offset = slot_offset(index)
            if struct.unpack_from("=q", self.buf, offset)[0] == pid:
                struct.pack_into("=q", self.buf, offset, 0)
            return True
        finally:
            self._unlock_table()

    def read_slots(self) -> List[Tuple[int, Tuple[int, int, int, int, int, float], Dict[str, int]]]:
        """Every occupied slot: (index, counters tuple, {tag: requests}).

        The counters tuple is (pid, in_flight, requests, probes, ignored,
        started_at), the slot's cells summed. Ended counts are read before begun
        counts: both only grow, so the in-flight difference is never below the
        truth at the time of the read.
        """
        slots = []
        ints, floats = self.ints, self.floats
        me = os.getpid()
        # Every readiness probe reads the slots: the pid words below the high-water mark in
        # one strided slice, then only the occupied ones, instead of a Python step per slot.
        # Never above the mark: those pages may not exist (and a read would create them).
        pids = ints[_FIRST_PID : _FIRST_PID + self.high_water() * _SLOT_WORDS : _SLOT_WORDS].tolist()
        for index, pid in enumerate(pids):
            if pid == 0:
                continue
            offset = slot_offset(index)
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

    def remove_files(self) -> None:
        """The owner (only the process that created it): unlink the file and its companions.

        The mapping stays valid in every process that has it; only new workers can no
        longer attach, so this runs when the owner exits or hands SIGTERM on.
        """
        if self.owner and self.path and os.getpid() == self.creator:
            for name in (self.path, *(self.path + suffix for suffix in COMPANION_SUFFIXES)):
                _unlink(name)
            _remove_prefixed(self.path)

    def close(self) -> None:
        self.remove_files()
        try:
            self.ints.release()
            self.floats.release()
            if isinstance(self.buf, mmap.mmap):
                self.buf.close()
        except Exception:
            pass
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def _allocate(fd: int, offset: int, length: int) -> None:
    """Give ``length`` bytes of the file from ``offset`` real pages: touching a page a full tmpfs
    cannot back is SIGBUS. Only for bytes nobody uses yet (the fall-back writes zeros)."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, offset, length)
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    while length > 0:
        written = os.pwrite(fd, bytes(min(length, 65536)), offset)
        offset, length = offset + written, length - written
    os.fsync(fd)  # a disk's delayed allocation would otherwise find ENOSPC at the first write fault


def _remove_prefixed(segment_path: str) -> None:
    """Remove the per-worker companions of ``segment_path`` (see COMPANION_PREFIXES)."""
    directory, base = os.path.split(segment_path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for name in names:
        if any(name.startswith(base + prefix) for prefix in COMPANION_PREFIXES):
            _unlink(os.path.join(directory, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_if_unused(path: str) -> bool:
    """Remove a segment no process holds open (its ``flock``); False if one does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        _unlink(path)
        return True
    finally:
        os.close(fd)


def remove_stale(key: str, directory: Optional[str] = None) -> int:
    """Owner, at start: remove this status port's segments (and companions) whose owner is gone.

    Only our own names (``pilotfish-<key>-<pid>.shm...``), only for a pid that does
    not run in this pid namespace, and only a segment no process holds open: a pod's
    containers share ``/dev/shm`` but not their pid namespaces. Returns how many
    files were removed.
    """
    directory = directory or _shm_dir()
    head = PREFIX + key + "-"
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    me = os.getpid()
    for name in sorted(names):  # a segment before its companions
        if not name.startswith(head):
            continue
        pid_text, _, rest = name[len(head) :].partition(".")
        tail = "." + rest
        if not pid_text.isdigit() or int(pid_text) == me or process_alive(int(pid_text)):
            continue
        path = os.path.join(directory, name)
        if tail == SUFFIX:
            if _remove_if_unused(path):
                removed += 1
        elif (
            tail in _COMPANION_TAILS or any(tail.startswith(SUFFIX + prefix) for prefix in COMPANION_PREFIXES)
        ) and not os.path.exists(path[: -len(tail)] + SUFFIX):
            _unlink(path)
            removed += 1
    return removed


_FIRST_PID = HEADER.size // 8  # index in Segment.ints of slot 0's pid word
assert HEADER.size % 8 == 0 and SLOT_SIZE % 8 == 0
_SLOT_WORDS = SLOT_SIZE // 8


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
        # os.open/os.read, not open(): the owner asks about every worker each second, and a
        # buffered file object costs more than the two system calls it wraps.
        fd = os.open("/proc/%d/stat" % pid, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        return stat.rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class _Local(threading.local):
    """Per thread: the index (in ``Slot.words``) of the thread's cell; 0 until claimed."""

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
    (the thread's own cell, no tag): ``words[cell] += 1`` and ``words[cell + 1] += 1``,
    and reads the offline flag as ``words[OFFLINE_WORD]``. A change to the cell
    layout changes it too.
    """

    __slots__ = (
        "segment",
        "private",
        "index",
        "offset",
        "lock",
        "tags",
        "words",
        "per_thread",
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
        self.per_thread = _Local()
        self.private = private
        self.words: Any  # List[int] (private) or the memoryview of the mapping
        if private:
            q = [0] * (PRIVATE_FIRST_CELL + CELLS * CELL_WORDS)
            q[OFFLINE_WORD] = segment.ints[OFFLINE_WORD]
            segment.private[index] = (os.getpid(), q)
            self.words, first = q, PRIVATE_FIRST_CELL
        else:
            self.words, first = segment.ints, (self.offset + CELLS_AT) // 8
        cells = [first + n * CELL_WORDS for n in range(CELLS)]
        self._shared = cells.pop()  # the overflow cell, written under the lock
        self._free = cells[::-1]  # pop() hands out the first cell first
        self._tables_used = 0

    # -- the hot path: one cell per thread, no lock ----------------------------------
    def begin(self, tag: Optional[str]) -> int:
        """Count a request in; returns this thread's cell (0 when it is not a private one)."""
        c = self.per_thread.cell
        if c > 0:
            q = self.words
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
            self.words[cell + 1] += 1
            return
        c = self.per_thread.cell
        if c > 0:
            self.words[c + 1] += 1
        else:
            self._locked(c, 1, None)

    def probe(self) -> None:
        c = self.per_thread.cell
        if c > 0:
            self.words[c + 2] += 1
        else:
            self._locked(c, 2, None)

    def ignore(self) -> None:
        c = self.per_thread.cell
        if c > 0:
            self.words[c + 3] += 1
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
                    self.words[c + field] += 1
                return
        with self.lock:
            self.words[-c + field] += 1
        if tag:
            self._count_tag(tag)

    def _claim_cell(self) -> int:
        """This thread's cell: its own (> 0), or the shared one (as a negative index)."""
        with self.lock:
            cell = self._free.pop() if self._free else 0
        if cell:
            self.per_thread.lease = _Lease(self, cell)
            self.per_thread.cell = cell
            return cell
        log.once(
            "shm-cells",
            "info",
            "more than %d threads serve requests; the others share a locked counter" % (CELLS - 1),
        )
        self.per_thread.cell = -self._shared
        return -self._shared

    def _release_cell(self, cell: int) -> None:
        with self.lock:
            self._free.append(cell)
        changed()

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


process_segment: Optional[Segment] = None
"""This process's segment (None: not attached). Read directly by the inbound hot paths."""
process_slot: Optional[Slot] = None
"""This process's slot once claimed (None: not yet). Read directly by the inbound hot paths;
set only by :func:`slot`."""

_listeners: List[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever this process's slot or a thread's cell may have changed.

    For a hot path that caches "this thread's cell in this slot" instead of asking
    :attr:`Slot.per_thread` on every request: the cache must go when the slot is
    claimed, discarded or forgotten after fork, and when a dead thread's cell is
    handed back (a new thread may reuse its identifier).
    """
    _listeners.append(listener)


def changed() -> None:
    for listener in list(_listeners):
        try:
            listener()
        except Exception:
            log.exception_once("shm-listener", "a shared-memory change listener failed")


_table_lock = threading.Lock()  # threads of one process; replaced in a forked child
_claim_lock = threading.Lock()  # claim() in two threads at once; replaced in a forked child


def create(key: str) -> Segment:
    """Owner: create the segment, or fall back to counting this process only (one warning)."""
    global process_segment
    try:
        process_segment = Segment.create(key)
    except OSError as error:
        reason = "no shared memory in %s (%s)" % (_shm_dir(), error.strerror or error)
        log.once(
            "shm-unavailable",
            "warning",
            "%s: this process counts only its own requests; other worker processes are not "
            "counted and do not see graceful offline" % reason,
        )
        process_segment = Segment.process_private(reason)
    import atexit

    atexit.register(process_segment.remove_files)
    return process_segment


def directory() -> str:
    """Where segments live (``/dev/shm`` when writable): the runtime keeps its owner pointer there."""
    return _shm_dir()


def discard() -> None:
    """Owner whose start-up failed: unmap and remove the segment."""
    global process_segment, process_slot
    segment, process_segment, process_slot = process_segment, None, None
    changed()
    if segment is not None:
        segment.close()


def attach(path: str) -> Optional[Segment]:
    """Worker: attach to the segment at ``path`` if its owner runs (the runtime's owner pointer)."""
    global process_segment
    segment = Segment.attach(path)
    if segment is None:
        return None
    if not process_alive(segment.owner_pid()):
        segment.close()
        return None
    process_segment = segment
    return segment


def attach_to_parent(key: str) -> Optional[Segment]:
    """A worker spawned by the owner (multiprocessing spawn): attach to its parent's segment.

    ``uvicorn --workers``/``--reload`` and hypercorn start workers with
    multiprocessing's spawn; its parent pid and the status port name the file. Any
    other process (the app's own subprocesses) never attaches.
    """
    global process_segment
    parent = _multiprocessing_parent()
    if parent <= 0 or parent != os.getppid():
        return None
    segment = Segment.attach(segment_path(key, parent))
    if segment is None:
        return None
    if segment.owner_pid() != parent or not process_alive(parent):
        segment.close()
        return None
    process_segment = segment
    return segment


def _multiprocessing_parent() -> int:
    """The pid of this process's multiprocessing parent (0 if it was not started by multiprocessing)."""
    process = sys.modules.get("multiprocessing.process")
    parent = getattr(process, "parent_process", None)
    try:
        found = parent() if parent is not None else None
        return int(found.pid) if found is not None and found.pid else 0
    except Exception:
        return 0


def remove_files() -> None:
    """The owner is going down (SIGTERM handed on): its segment's files go now."""
    if process_segment is not None:
        process_segment.remove_files()


def describe() -> Dict[str, Any]:
    """For ``/status``: where worker counts live, and whether other workers are counted."""
    current = process_segment
    if current is None:
        return {"path": None, "workers_counted": False}
    if not current.shared:
        return {"path": None, "workers_counted": False, "reason": current.unavailable}
    return {"path": current.path, "workers_counted": True, "workers_not_counted": current.refused()}


def segment() -> Optional[Segment]:
    return process_segment


def claim() -> Optional[Slot]:
    """Give this process a slot in the current segment (once per process)."""
    global process_slot, process_segment
    segment = process_segment
    if segment is None:
        return None
    with _claim_lock:  # two threads' first requests at once: one slot
        pid = os.getpid()
        if process_slot is not None and struct.unpack_from("=q", segment.buf, process_slot.offset)[0] == pid:
            return process_slot
        try:
            index = segment.claim_slot(pid)
        except OSError:
            log.exception_once("shm-claim", "could not claim a shared-memory slot")
            index = None
        if index is None:
            if segment.creator != pid:
                # A worker: count nothing rather than try again on every request.
                process_segment = None
            return None
        # The owner reads every slot, so when it serves requests itself its cells can be a
        # plain list: cheaper to count in than the mapping, and read in this process only.
        process_slot = Slot(segment, index, private=segment.owner and segment.owner_pid() == pid)
        changed()
        return process_slot


def my_slot() -> Optional[Slot]:
    return process_slot


def forget_slot_after_fork() -> None:
    """A forked child must not write into its parent's slot, nor wait on its parent's locks.

    A process-private segment is forgotten too: the child cannot report through it.
    """
    global process_slot, _table_lock, _claim_lock, process_segment
    process_slot = None
    _table_lock, _claim_lock = threading.Lock(), threading.Lock()
    if process_segment is not None and not process_segment.shared:
        process_segment = None
    changed()


def set_offline(offline: bool) -> None:
    if process_segment is not None:
        process_segment.set_offline(offline)


def is_offline() -> bool:
    segment = process_segment
    return segment is not None and segment.ints[OFFLINE_WORD] != 0
