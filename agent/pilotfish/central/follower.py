"""In a worker process: apply the config the owner writes to its cache file.

Only the owner polls the config service (one connection per pod, not per worker), but
workers serve the requests that need tag headers, lanes and routing. Started by
:mod:`pilotfish.runtime` when a process becomes a worker (attached, forked or a sibling).
"""

from __future__ import annotations

import os
import threading
from typing import Optional, Tuple

from .. import log, settings
from .config import Apply, cache_path, read_cache

_lock = threading.Lock()


class CacheFollower:
    """In a worker process: apply the config the owner writes to the cache file.

    Only the owner polls the config service (one connection per pod, not per
    worker), but workers serve the requests that need tag headers, lanes and
    routing. The owner rewrites the cache atomically on every new version; a
    worker checks the file's mtime and size every ``interval`` seconds — one
    ``stat`` — and applies a new version the way the owner did.
    """

    def __init__(
        self,
        path: str,
        app: str,
        namespace: str,
        apply: Apply = settings.apply_central,
        interval: float = 0.5,
    ) -> None:
        self.path = path
        self.app = app
        self.namespace = namespace
        self.apply = apply
        self.interval = interval
        self.version = ""
        self._signature: Optional[Tuple[float, int]] = None
        self.stopping = threading.Event()

    def check(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        signature = (st.st_mtime, st.st_size)
        if signature == self._signature:
            return False
        self._signature = signature
        cached = read_cache(self.path, self.app, self.namespace)
        if cached is None or cached[1] == self.version:
            return False
        config, self.version = cached
        try:
            self.apply(config, self.version)
        except Exception:
            log.exception_once("config-follow-apply", "applying central config in a worker failed")
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.check()
            except Exception:
                log.exception_once("config-follow", "following the config cache failed")
            self.stopping.wait(self.interval)


_follower: Optional[CacheFollower] = None
_follower_pid = 0


def follow() -> bool:
    """Start following the owner's config in this worker process (idempotent, never raises)."""
    global _follower, _follower_pid
    try:
        with _lock:
            if _follower is not None and _follower_pid == os.getpid():
                return True
            current = settings.current()
            if not current.config_url:
                return False
            path = cache_path(current)
            if path is None:
                log.once(
                    "config-follow-none",
                    "info",
                    "no config cache to follow in worker %d: central config reaches the owner only"
                    % os.getpid(),
                )
                return False
            follower = CacheFollower(path, current.app, current.pod_namespace or "default")
            follower.version = current.central_version  # a forked worker already has the owner's
            _follower, _follower_pid = follower, os.getpid()
        follower.check()
        threading.Thread(target=follower.run, name="pilotfish-config-follow", daemon=True).start()
        return True
    except Exception:
        log.exception_once("config-follow-start", "cannot follow central config in this worker")
        return False


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
