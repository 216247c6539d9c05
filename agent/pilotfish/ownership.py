"""Which process of the container owns the status port, decided at wake-up.

The first process to bind the status port is the owner: it serves ``/status`` and
``/readiness`` and creates the shared memory its workers count in. A process that finds
the port taken is a worker of the owner if it can find the owner's shared memory through
the pointer file the owner leaves (prefork servers that fork before they listen), else it
runs standalone and says why. Loaded on the wake thread only, never at interpreter start:
:mod:`pilotfish.runtime` (loaded in every process) keeps just the call.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Tuple

from . import PACKAGE, log
from .settings import Settings

OWNER, WORKER, STANDALONE = "owner", "worker", "standalone"  # the runtime's role names


def become_owner(
    current: Settings, listening_gate: Callable[[], Tuple[bool, str]], describe: Callable[[], Dict[str, Any]]
) -> str:
    """``"owner"`` if this process binds the status port; else ``"worker"`` of the owner that did
    (found through its pointer file), else ``"standalone"`` (the runtime's role names). Whatever
    fails closes what it opened. ``listening_gate`` and ``describe`` are the runtime's readiness
    gate and ``/status`` section, handed in: this module does not import the runtime."""
    from . import shared, stats, status_server

    key = "%d" % current.status_port
    with _StatusPortLock(current.status_port):
        try:
            server = status_server.bind(current.status_host, current.status_port)
        except OSError as problem:
            if _port_taken(problem) and _attach_to_sibling_owner(current.status_port):
                return WORKER
            log.once("status-bind", "warning", _bind_problem(current, problem))
            shared.create(key)  # its own slots: the wrappers count as usual
            return STANDALONE
        try:
            # Holding the status port makes this process the container's one owner: files of
            # this port left by owners that are gone (a crash, SIGKILL) are ours to remove.
            removed = shared.remove_stale(key)
            if removed:
                log.info("removed %d shared-memory files left by exited processes" % removed)
            segment = shared.create(key)
            try:
                status_server.add_gate("app-listening", listening_gate)
                status_server.add_gate("workers", stats.workers_gate)
                status_server.add_status_section("runtime", describe)
                status_server.add_status_section("shared_memory", shared.describe)
                status_server.serve(server)
            except BaseException:
                shared.discard()
                raise
        except BaseException:
            server.server_close()
            raise
        if segment.shared:
            _publish_owner(current.status_port, segment.path)
    log.info(
        "agent %s serving status on %s:%d (pid %d)"
        % (__import__(PACKAGE).__version__, current.status_host, current.status_port, os.getpid())
    )
    return OWNER


def _port_taken(problem: OSError) -> bool:
    import errno

    return getattr(problem, "errno", None) == errno.EADDRINUSE


def _bind_problem(current: Settings, problem: OSError) -> str:
    """Why there is no status server, in the words of the setting that caused it."""
    import errno
    import socket

    where = "%s:%d" % (current.status_host, current.status_port)
    tail = "; this process serves the app without readiness or /status"
    if _port_taken(problem):
        return "status port %s is in use by another process%s (set PILOTFISH_STATUS_PORT to a free port)" % (
            where,
            tail,
        )
    if isinstance(problem, socket.gaierror):
        return "PILOTFISH_STATUS_HOST=%r is not a valid or resolvable address (%s)%s" % (
            current.status_host,
            problem.strerror or problem,
            tail,
        )
    if getattr(problem, "errno", None) == errno.EADDRNOTAVAIL:
        return "PILOTFISH_STATUS_HOST=%r is not an address of this host (%s)%s" % (
            current.status_host,
            problem.strerror or problem,
            tail,
        )
    return "cannot serve status on %s (%s)%s" % (where, problem.strerror or problem, tail)


# -- processes that fork before they listen (SO_REUSEPORT prefork servers) --------------
#
# A parent that forks its workers before anyone listens leaves every worker dormant;
# each then listens on the same port (SO_REUSEPORT) and wakes on its own. The first to
# bind the status port becomes the owner; the others are its workers, but they cannot
# find the owner's shared memory by their parent (it was created after the fork). So the
# owner leaves a pointer to its segment next to it, and the deciding runs under a lock
# file, so that a sibling never looks before the owner has written the pointer.

LOCK_WAIT_SECONDS = 2.0


class _StatusPortLock:
    """``flock`` on ``pilotfish-<port>.lock`` in the shared-memory directory; best effort."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.fd = -1

    def __enter__(self) -> _StatusPortLock:
        import fcntl

        try:
            from . import shared

            path = os.path.join(shared.directory(), "pilotfish-%d.lock" % self.port)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return self  # no lock: the decision is made without it, as before
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    return self
                time.sleep(0.01)

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1


def _pointer_path(port: int) -> str:
    from . import shared

    return os.path.join(shared.directory(), "pilotfish-%d.owner" % port)


def _mount_namespace() -> str:
    """Another container of the pod may share /dev/shm and the port space, never the mounts."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return ""


def _process_identity(pid: int) -> str:
    """``pid`` and its start time (clock ticks since boot): a pid the kernel reuses differs."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            return "%d:%s" % (pid, handle.read().rsplit(b")", 1)[1].split()[19].decode())
    except (OSError, IndexError):
        return ""


def _publish_owner(port: int, segment_path: str) -> None:
    try:
        path = _pointer_path(port)
        record = "%s\n%s\n%s\n%d\n" % (
            _mount_namespace(),
            segment_path,
            _process_identity(os.getpid()),
            os.getppid(),
        )
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w") as handle:
            handle.write(record)
        os.replace(tmp, path)
    except OSError as problem:
        log.once(
            "owner-pointer",
            "info",
            "cannot leave a pointer to the shared memory (%s); workers forked before the app "
            "listens will not be counted" % (problem.strerror or problem),
        )
        return
    import atexit

    owner = os.getpid()

    def remove() -> None:
        try:
            if os.getpid() == owner:
                with open(path) as handle:
                    if handle.read() == record:
                        os.unlink(path)
        except OSError:
            pass

    atexit.register(remove)


def _attach_to_sibling_owner(port: int) -> bool:
    """A worker of the process that owns the status port in this container, if there is one.

    Only a sibling of the owner (forked by the same parent): any other process that
    listens, such as a subprocess the app starts, is none of the owner's workers.
    """
    from . import shared

    try:
        with open(_pointer_path(port)) as handle:
            fields = (handle.read().split("\n") + ["", "", "", ""])[:4]
    except OSError:
        return False
    namespace, segment_path, identity, parent = fields
    if namespace != _mount_namespace() or not segment_path or not identity:
        return False
    if parent != str(os.getppid()):
        return False  # not forked by the owner's parent: an app's subprocess, say
    pid = identity.split(":")[0]
    if not pid.isdigit() or _process_identity(int(pid)) != identity:
        return False  # the owner that wrote it is gone (its pid may belong to another process now)
    return shared.attach(segment_path) is not None
