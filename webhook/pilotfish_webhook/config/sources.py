"""Where policies come from: a watched YAML file, or GovernancePolicy objects in the cluster.

The file source follows the file with inotify where the kernel offers it (Linux, through
ctypes): a new content is applied as soon as it is known whole (the writer closed it, a file
was renamed over it, a ConfigMap volume swapped its ``..data`` symlink), within milliseconds;
a file still being written in place is never applied. Elsewhere it polls (stdlib only):
``stat`` every ``interval`` seconds and re-read when mtime, size or inode changed, plus a
full re-read and hash comparison every second so an edit that keeps size and mtime (coarse
filesystem clocks) is still seen; a new content is then applied once it has stayed
unchanged for ``settle`` seconds (0.1 by default), so a file rewritten in place is never
applied half-written. A change therefore lands well within 1 s either way.

The cluster source lists, then watches, with the kubernetes client in a daemon
thread, and re-lists when the watch expires (HTTP 410) or the connection drops.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

import yaml

from pilotfish_webhook import kube
from pilotfish_webhook.config import schema
from pilotfish_webhook.config.store import PolicyStore

if TYPE_CHECKING:
    from pilotfish_webhook.kube import ApiClient

log = logging.getLogger("pilotfish_webhook.config")

# How long a new file content must stay unchanged before it is applied (see FileSource).
DEFAULT_SETTLE_SECONDS = 0.1


# A policy file is a handful of small objects. YAML aliases let a few hundred bytes stand for
# billions of nodes (a "billion laughs" document); counted before anything is constructed.
MAX_EXPANDED_NODES = 100_000


class PolicyFileError(ValueError):
    """The policy file cannot be used as a whole; the message says why, in bounded size."""


def load_documents(text: str, origin: str) -> List[Tuple[Any, str]]:
    """Every non-empty YAML document with a label naming its file and position.

    Raises :class:`PolicyFileError` for a document that would expand, through aliases,
    beyond ``MAX_EXPANDED_NODES`` nodes or into itself, and ``yaml.YAMLError`` for bad syntax.
    """
    docs: List[Tuple[Any, str]] = []
    loader = yaml.SafeLoader(text)
    try:
        index = 0
        while loader.check_node():
            index += 1
            node = loader.get_node()
            if node is None:
                continue
            _check_expansion(node, "%s document %d" % (origin, index))
            doc = loader.construct_document(node)
            if doc is None:
                continue
            if isinstance(doc, dict) and doc.get("kind") == schema.KIND + "List":
                for j, item in enumerate(doc.get("items") or [], start=1):
                    docs.append((item, "%s document %d item %d" % (origin, index, j)))
                continue
            docs.append((doc, "%s document %d" % (origin, index)))
    finally:
        loader.dispose()
    return docs


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a node graph whose tree (aliases expanded) exceeds the limit or has a cycle.

    Sizes are memoised per node, so the work is linear in the text however far the
    aliases would expand.
    """
    sizes: Dict[int, int] = {}
    open_nodes = set()
    stack: List[Tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: List[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_EXPANDED_NODES:
                raise PolicyFileError(
                    "%s: expands to more than %d nodes through YAML aliases (anchors reused too often); "
                    "refused" % (where, MAX_EXPANDED_NODES)
                )
            continue
        if key in open_nodes:
            raise PolicyFileError("%s: a YAML alias refers to a node that contains it; refused" % where)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


class FileSource:
    """Watch ``path`` and feed its documents to ``store``.

    With inotify (Linux), a new content is applied as soon as it is known to be whole: the
    writer closed the file (``IN_CLOSE_WRITE``), another file was renamed over it
    (``IN_MOVED_TO``: ``mv``, ``os.replace``), or, in a Kubernetes ConfigMap volume, the
    ``..data`` symlink was swapped to a new directory. A file modified in place and not yet
    closed is never applied: half a policy file is often valid YAML that would drop the
    other half's policies for every agent. The file's directory (and that of the file a
    symlink points at) is watched, so replacements and ConfigMap updates are seen; a
    directory deleted and recreated is watched again once it is back.

    Without inotify, and as a safety net beside it (every ``rehash_every`` seconds, for a
    change that brings no event), the file is polled: ``stat`` every ``interval`` and a
    re-read and hash comparison every ``rehash_every``, and a new content is applied only
    once it has stayed the same (size, mtime, inode and hash) for ``settle`` seconds,
    re-checked every ``settle / 4``. :meth:`poll` is the whole decision.
    """

    def __init__(
        self,
        path: Path,
        store: PolicyStore,
        interval: float = 0.1,
        rehash_every: float = 1.0,
        on_services: Optional[Callable[[List[Any]], None]] = None,
        settle: float = DEFAULT_SETTLE_SECONDS,
        use_inotify: bool = True,
    ):
        self.path = path
        self.store = store
        self.on_services = on_services
        self.interval = interval
        self.rehash_every = rehash_every
        self.settle = settle
        self.use_inotify = use_inotify
        self.watch = "none"  # how run() follows the file: "inotify" or "poll"
        self._signature: Optional[Tuple[int, int, int]] = None
        self._digest: Optional[str] = None
        self._pending: Optional[Tuple[str, Tuple[int, int, int], float]] = None  # digest, signature, since
        self._last_read = 0.0
        self.reloads = 0
        # inotify state, changed on the event loop only
        self._writing = False  # modified in place, not closed yet
        self._complete = False  # an event said the content on disk is whole
        self._dirty = True  # something happened that no event explains: poll
        self._watches: Dict[str, int] = {}  # directory -> watch descriptor
        self._names: Dict[int, Set[str]] = {}  # watch descriptor -> names that matter in it

    @property
    def settling(self) -> bool:
        """A new content was seen and is waiting to prove stable."""
        return self._pending is not None

    def poll(self, complete: bool = False) -> bool:
        """Check once; True when the store was fed a new state.

        ``complete``: the content on disk is known to be whole (an inotify event said so),
        so it is applied at once instead of settling.
        """
        try:
            st = os.stat(self.path)
        except OSError as problem:
            self.store.set_source_error("cannot read %s (%s)" % (self.path, problem.strerror or problem))
            self._signature = self._pending = None
            return False
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        now = time.monotonic()
        if (
            not complete
            and self._pending is None
            and signature == self._signature
            and now - self._last_read < self.rehash_every
        ):
            return False
        self._signature, self._last_read = signature, now
        try:
            data = self.path.read_bytes()
        except OSError as problem:
            self.store.set_source_error("cannot read %s (%s)" % (self.path, problem.strerror or problem))
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            self._pending = None
            return False
        if self._writing:  # being written in place: its close will say when it is whole
            self._pending = None
            return False
        if not complete:
            pending = self._pending
            if pending is None or pending[0] != digest or pending[1] != signature:
                self._pending = (digest, signature, now)  # first sight of this content: let it settle
                if self.settle > 0:
                    return False
            elif now - pending[2] < self.settle:
                return False
        self._pending = None
        self._digest = digest
        try:
            docs = load_documents(data.decode("utf-8"), self.path.name)
        except (yaml.YAMLError, UnicodeDecodeError) as problem:
            self.store.set_source_error("%s is not valid YAML: %s" % (self.path, _one_line(problem)))
            return False
        except PolicyFileError as problem:
            self.store.set_source_error("%s is refused: %s" % (self.path, _one_line(problem)))
            return False
        if self.on_services is not None:  # embedded mode: v1 Services declared next to the policies
            services = [doc for doc, _ in docs if _is_service(doc)]
            docs = [(doc, origin) for doc, origin in docs if not _is_service(doc)]
            self.on_services(services)
        self.store.replace_all(docs)
        self.reloads += 1
        log.info("policies loaded from %s: %d object(s)", self.path, len(docs))
        return True

    def load_initial(self, limit: float = 10.0) -> None:
        """Poll until the file's current content is applied (or proved unusable); for start-up."""
        deadline = time.monotonic() + limit
        self.poll()
        while self.settling and time.monotonic() < deadline:
            time.sleep(max(0.005, self.settle / 4))
            self.poll()

    async def run(self) -> None:
        """Follow the file until cancelled: inotify where available, else polling."""
        notify = Inotify.create() if self.use_inotify else None
        if notify is None:
            self.watch = "poll"
            await self._poll_forever()
            return
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def readable() -> None:
            self._on_events(notify, notify.read())
            wake.set()

        try:
            loop.add_reader(notify.fd, readable)
        except NotImplementedError:  # an event loop without add_reader
            notify.close()
            self.watch = "poll"
            await self._poll_forever()
            return
        self.watch = "inotify"
        try:
            while True:
                watched = self._update_watches(notify)
                complete, self._complete = self._complete, False
                self._dirty = False
                try:
                    # Reading, parsing and validating run in a worker thread: a large or hostile
                    # file never stalls the event loop (long-polls, admission, /healthz).
                    await asyncio.to_thread(self.poll, complete)
                except Exception:  # never let the watcher die: the next event or tick tries again
                    log.exception("policy file watcher failed; retrying")
                wake.clear()
                if self._complete or self._dirty:
                    continue
                if self.settling:
                    timeout = max(0.005, self.settle / 4)
                else:
                    timeout = self.rehash_every if watched else self.interval
                timer = loop.call_later(timeout, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
        finally:
            loop.remove_reader(notify.fd)
            notify.close()

    async def _poll_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # never let the watcher die: the next tick tries again
                log.exception("policy file watcher failed; retrying")
            await asyncio.sleep(min(self.interval, self.settle / 4) if self.settling else self.interval)

    def _wanted(self) -> Dict[str, Set[str]]:
        """Directories to watch and the names in each that matter."""
        path = os.path.abspath(self.path)
        directory, name = os.path.split(path)
        wanted = {directory: {name, CONFIGMAP_DATA}}
        real_directory, real_name = os.path.split(os.path.realpath(path))
        wanted.setdefault(real_directory, set()).add(real_name)  # a symlink's target, edited where it is
        return wanted

    def _update_watches(self, notify: Inotify) -> bool:
        """Watch what :meth:`_wanted` says, drop the rest; False while a directory is missing."""
        wanted = self._wanted()
        for directory in [d for d in self._watches if d not in wanted]:
            wd = self._watches.pop(directory)
            self._names.pop(wd, None)
            notify.remove_watch(wd)
        complete = True
        for directory, names in wanted.items():
            wd = self._watches.get(directory, -1)
            if wd < 0:
                try:
                    wd = notify.add_watch(directory, WATCH_MASK)
                except OSError:
                    complete = False  # not there (yet): polled until it is
                    continue
                self._watches[directory] = wd
                self._dirty = True  # what it holds now came without an event
            self._names[wd] = names
        return complete

    def _on_events(self, notify: Inotify, events: List[Tuple[int, int, str]]) -> None:
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:
                self._dirty = True
            elif mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                for directory, known in list(self._watches.items()):
                    if known == wd:
                        del self._watches[directory]
                if self._names.pop(wd, None) is not None and mask & IN_MOVE_SELF:
                    notify.remove_watch(wd)  # it follows the moved directory, not the path
                self._dirty = True
            elif name not in self._names.get(wd, ()):
                continue
            elif mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                self._writing, self._complete = False, True
            elif mask & IN_CREATE:
                directory = next((d for d, known in self._watches.items() if known == wd), "")
                if os.path.islink(os.path.join(directory, name)):  # a symlink appears whole
                    self._writing, self._complete = False, True
                else:  # a new file: being written until it is closed
                    self._writing = True
            elif mask & IN_MODIFY:
                self._writing = True
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                self._writing, self._dirty = False, True


class Inotify:
    """Linux inotify through ctypes (the webhook needs no extra library for it).

    :meth:`create` returns None where inotify is unavailable (another OS, a libc without
    it, the per-user instance limit reached): callers then poll.
    """

    def __init__(self, fd: int, libc: Any) -> None:
        self.fd = fd
        self._libc = libc

    @classmethod
    def create(cls) -> Optional[Inotify]:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init = libc.inotify_init1
            init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
            add = libc.inotify_add_watch
            add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
            remove = libc.inotify_rm_watch
            remove.argtypes, remove.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        except (OSError, AttributeError):
            return None
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.warning(
                "inotify unavailable (%s): the policy file is polled", os.strerror(ctypes.get_errno())
            )
            return None
        return cls(fd, libc)

    def add_watch(self, directory: str, mask: int) -> int:
        """The watch descriptor for ``directory``; raises OSError (e.g. ENOENT once it is gone)."""
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(directory), mask))
        if wd < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), directory)
        return wd

    def remove_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # EINVAL when the kernel dropped it already: fine

    def read(self) -> List[Tuple[int, int, str]]:
        """Pending events as (watch descriptor, mask, name); empty when none is pending."""
        events: List[Tuple[int, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return events
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = os.fsdecode(data[offset : offset + length].rstrip(b"\0"))
                offset += length
                events.append((wd, mask, name))

    def close(self) -> None:
        os.close(self.fd)


_EVENT = struct.Struct("iIII")
IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
WATCH_MASK = (
    IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
# A ConfigMap volume publishes a new content by pointing this symlink at a new directory.
CONFIGMAP_DATA = "..data"


MAX_MESSAGE_CHARS = 500


def _is_service(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "Service" and doc.get("apiVersion") == "v1"


def _one_line(problem: BaseException) -> str:
    text = " ".join(str(problem).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


class KubeSource:
    """List + watch GovernancePolicy objects cluster-wide (needs get/list/watch RBAC)."""

    def __init__(
        self,
        store: PolicyStore,
        api_client: Optional[ApiClient],
        watch_timeout: int = 300,
        retry_delay: float = 1.0,
    ) -> None:
        self.store = store
        self.api_client = api_client
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self._stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.synced = threading.Event()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="pilotfish-policy-watch", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def relist(self) -> str:
        listing = kube.list_custom_objects(self.api_client, schema.GROUP, schema.VERSION, schema.PLURAL)
        items = listing.get("items") or []
        self.store.replace_from_list([(item, "cluster") for item in items])
        self.synced.set()
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def watch_once(self, resource_version: str, on_event: Optional[Callable[[str], None]] = None) -> str:
        """Follow one watch until it ends; return the last resourceVersion seen ('' = relist)."""
        stream = kube.Watch()
        try:
            for event in stream.stream(
                kube.custom_objects_lister(self.api_client),
                schema.GROUP,
                schema.VERSION,
                schema.PLURAL,
                resource_version=resource_version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
            ):
                kind, obj = event.get("type"), event.get("raw_object") or event.get("object")
                if kind == "ERROR":
                    return ""  # e.g. 410 Gone: resourceVersion too old
                meta = obj.get("metadata", {}) if isinstance(obj, dict) else {}
                resource_version = str(meta.get("resourceVersion") or resource_version)
                if kind in ("ADDED", "MODIFIED"):
                    self.store.upsert(obj, "cluster")
                elif kind == "DELETED":
                    self.store.delete(obj)
                if on_event is not None:
                    on_event(str(kind))
                if self._stop.is_set():
                    break
        except Exception as problem:
            if kube.status_of(problem) == kube.HTTP_GONE:
                return ""
            raise
        finally:
            stream.stop()
        return resource_version

    def _run(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self.relist()
                resource_version = self.watch_once(resource_version)
            except Exception as problem:
                self.store.set_source_error("watching GovernancePolicy objects failed: %s" % problem)
                resource_version = ""
                self._stop.wait(self.retry_delay)
