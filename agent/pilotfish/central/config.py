"""The owner's live config: long-poll ``GET /v1/config`` and keep the last good answer on disk.

- **Config**: long-polls ``GET /v1/config`` (version in, new version or 304 out)
  against ``PILOTFISH_CONFIG_URL`` and applies each new version through
  :func:`pilotfish.settings.apply_central` (explicit env still wins there).
  Failures back off exponentially with jitter. Answers that are not what the API
  promises are ignored with one warning: the last good config stays.
- **Cache**: the last good config is written to disk (see :mod:`.cache`) and loaded at
  start, so a pod that restarts while the service is down comes up with the policies it
  had, not the defaults. Worker processes follow the same file (:mod:`.follower`).

Runs in the owner process only (:func:`pilotfish.owner.start_central_config`), in a daemon
thread, and never raises into the app.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .. import log, settings
from . import cache, transport
from .transport import CallFailed, Transport

POLL_SECONDS = 30.0  # how long the server may hold a long-poll

Apply = Callable[[Dict[str, Any], str], Any]
"""What a new config goes through: ``apply(config, version)`` (:func:`pilotfish.settings.apply_central`)."""


def cache_path(current: settings.Settings) -> Optional[str]:
    """The config cache file of this app (None: no writable directory, no cache)."""
    return cache.path(current, "config")


def read_cache(path: str, app: str, namespace: str) -> Optional[Tuple[Dict[str, Any], str]]:
    """(config, version) from a cache file written for this app, or None (with one warning if unusable)."""
    try:
        with open(path, "rb") as handle:
            cached = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as problem:
        log.once("config-cache-read", "warning", "ignoring config cache %s (%s)" % (path, problem))
        return None
    if not (
        isinstance(cached, dict)
        and cached.get("app") == app
        and cached.get("namespace") == namespace
        and isinstance(cached.get("version"), str)
        and isinstance(cached.get("config"), dict)
    ):
        log.once("config-cache-shape", "warning", "ignoring config cache %s (unexpected content)" % path)
        return None
    return cached["config"], cached["version"]


class ConfigClient:
    """Long-poll loop + cache for one app. :meth:`run` is the thread body."""

    def __init__(
        self,
        transport: Transport,
        app: str,
        namespace: str,
        cache_path: Optional[str],
        apply: Apply = settings.apply_central,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.transport = transport
        self.app = app
        self.namespace = namespace
        self.cache_path = cache_path
        self.apply = apply
        self.poll_seconds = poll_seconds
        self.version = ""
        self.config: Dict[str, Any] = {}
        self.source = "none"  # none | cache | service
        self.failures = 0
        self.last_ok: Optional[float] = None
        self.last_error = ""
        self.stopping = threading.Event()
        self.answered = threading.Event()  # the service answered once (new or unchanged config)

    # -- cache

    def load_cache(self) -> bool:
        if self.cache_path is None:
            return False
        cached = read_cache(self.cache_path, self.app, self.namespace)
        if cached is None:
            return False
        self._use(cached[0], cached[1], "cache")
        log.info("config version %s loaded from cache %s" % (self.version, self.cache_path))
        return True

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        record = {
            "app": self.app,
            "namespace": self.namespace,
            "url": self.transport.base_url,
            "version": self.version,
            "config": self.config,
            "saved_at": time.time(),
        }
        tmp = "%s.%d.tmp" % (self.cache_path, os.getpid())
        try:
            os.makedirs(os.path.dirname(self.cache_path) or ".", exist_ok=True)
            with open(tmp, "w") as handle:
                json.dump(record, handle)
            os.replace(tmp, self.cache_path)
        except OSError as problem:
            # Warning, not info: forked/spawned workers learn central config only through
            # this file, so without it they keep built-in defaults.
            log.once(
                "config-cache-write",
                "warning",
                "cannot write the config cache %s (%s): worker processes will not follow central "
                "config and a restart while the config service is down starts from defaults; set "
                "PILOTFISH_STATE_DIR (or PILOTFISH_CACHE_DIR) to a writable directory"
                % (self.cache_path, problem.strerror or problem),
            )
            try:
                os.unlink(tmp)
            except OSError:
                pass

    # -- polling

    def _use(self, config: Dict[str, Any], version: str, source: str) -> None:
        self.config, self.version, self.source = config, version, source
        try:
            self.apply(config, version)
        except Exception:
            log.exception_once("config-apply", "applying central config failed; keeping the previous one")

    def poll_once(self, hold: Optional[float] = None) -> str:
        """One long-poll: 'changed', 'unchanged', or raises :class:`CallFailed`."""
        hold = self.poll_seconds if hold is None else hold
        query = {"namespace": self.namespace, "app": self.app, "version": self.version}
        query["timeout"] = "%g" % hold
        status, data = self.transport.request(
            "GET", "/v1/config", query, timeout=hold + transport.NETWORK_SLACK
        )
        if status == 304:
            return "unchanged"
        if status != 200:
            detail = data[:200].decode("utf-8", "replace").strip()
            raise CallFailed("HTTP %d %s" % (status, detail))
        answer = transport.decode(data)
        if not (
            isinstance(answer, dict)
            and isinstance(answer.get("version"), str)
            and answer["version"]
            and isinstance(answer.get("config"), dict)
        ):
            raise CallFailed("unexpected answer %r" % data[:80])
        if answer["version"] == self.version:
            return "unchanged"
        self._use(answer["config"], answer["version"], "service")
        self._save_cache()
        log.info("config version %s applied (policies: %s)" % (self.version, answer.get("sources")))
        return "changed"

    def run(self) -> None:
        """Poll until :attr:`stopping` is set. Never raises."""
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                outcome = self.poll_once()
            except CallFailed as problem:
                self._failed(str(problem))
                continue
            except Exception as problem:  # our own bug: still never take the app down
                log.exception_once("config-poll", "config poll failed")
                self._failed("%s: %s" % (type(problem).__name__, problem))
                continue
            self.answered.set()
            if self.failures:
                log.info("config service reachable again at %s" % self.transport.base_url)
            self.failures, self.last_ok, self.last_error = 0, time.time(), ""
            if outcome == "unchanged" and time.monotonic() - started < transport.MIN_POLL_SPACING:
                self.stopping.wait(transport.MIN_POLL_SPACING)

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        log.once(
            "config-failed:%s" % reason.split(":")[0][:60],
            "warning",
            "config service %s: %s; keeping %s and retrying with backoff"
            % (
                self.transport.base_url,
                reason,
                "config version %s (%s)" % (self.version, self.source) if self.version else "the defaults",
            ),
        )
        self.stopping.wait(transport.backoff(self.failures - 1))

    def status(self) -> Dict[str, Any]:
        return {
            "url": self.transport.base_url,
            "app": self.app,
            "namespace": self.namespace,
            "version": self.version,
            "source": self.source,
            "failures": self.failures,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "cache": self.cache_path,
        }
