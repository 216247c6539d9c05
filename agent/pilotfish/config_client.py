"""The agent's side of the central config service: live config, registration, instances.

Runs in the owner process only (started from ``runtime.on_wake``), in daemon
threads, and never raises into the app:

- **Config**: long-polls ``GET /v1/config`` (version in, new version or 304 out)
  against ``PILOTFISH_CONFIG_URL`` and applies each new version through
  :func:`pilotfish.settings.apply_central` (explicit env still wins there).
  Failures back off exponentially with jitter, so a fleet restarting together
  does not hammer a recovering service. Answers that are not what the API
  promises are ignored with one warning: the last good config stays.
- **Cache**: the last good config is written to disk (``PILOTFISH_CACHE_DIR``, else
  ``PILOTFISH_STATE_DIR``, else the temp dir; none of them writable: no cache, one
  warning, config still applied) and loaded at start, so a pod that restarts while the
  service is down comes up with the policies it had, not the defaults.
- **Auth/TLS**: ``https`` URLs are verified against ``PILOTFISH_CONFIG_CA``; the
  bearer token is re-read from ``PILOTFISH_TOKEN_FILE`` on every call because
  kubelet rotates projected tokens.
- **Registration**: :func:`register` / :func:`set_state` / :func:`deregister`
  for the lifecycle code, with a renewal thread that keeps the lease alive.
- **Instances**: :func:`watch_instances` long-polls a Service's instance list
  for the routing code.

Standard library only; imported after wake-up, never at interpreter start.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import ssl
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from . import PACKAGE, log, settings

POLL_SECONDS = 30.0  # how long the server may hold a long-poll
NETWORK_SLACK = 10.0  # extra socket timeout on top of the hold time
CALL_TIMEOUT = 5.0  # register / deregister
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
MIN_POLL_SPACING = 1.0  # never poll faster than this when nothing changed (a misbehaving server)
MAX_BODY = 4 * 1024 * 1024


# OpenSSL keeps process-wide locks that loading a CA file or a TLS handshake may
# hold while the GIL is released. If the app forks at that moment (gunicorn
# spawning a worker while the owner's poller connects), the child inherits the
# lock held by a thread that does not exist there, and its first SSLContext
# (``import requests`` does one) hangs forever: seen on every start under
# Python 3.8, once in a few runs on 3.13. So our TLS set-up runs under this lock and
# a fork waits for it, briefly: a handshake stuck on a silent server must not
# hold up the app's fork, so after FORK_WAIT seconds the fork goes ahead.
FORK_WAIT = 2.0
_tls_lock = threading.Lock()
_tls_held_for_fork = False


def _tls_before_fork() -> None:
    global _tls_held_for_fork
    _tls_held_for_fork = _tls_lock.acquire(timeout=FORK_WAIT)


def _tls_after_fork_in_parent() -> None:
    global _tls_held_for_fork
    if _tls_held_for_fork:
        _tls_held_for_fork = False
        _tls_lock.release()


def _tls_after_fork_in_child() -> None:
    global _tls_lock, _tls_held_for_fork
    _tls_lock, _tls_held_for_fork = threading.Lock(), False


class CallFailed(Exception):
    """A call to the config service did not give a usable answer; the message says why."""


class Transport:
    """One HTTP(S) request at a time to the config service.

    ``http.client`` directly, not ``urllib``: no proxy environment variables (the
    service is in-cluster), no redirects, and nothing the app may have
    configured globally (openers, default SSL contexts) changes our calls.
    """

    def __init__(self, base_url: str, ca_file: str = "", token_file: str = "") -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("PILOTFISH_CONFIG_URL=%r is not an http(s) URL" % base_url)
        self.base_url = base_url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.ca_file = ca_file
        self.token_file = token_file
        self._context: Optional[ssl.SSLContext] = None
        self._context_key: Optional[Tuple[str, float]] = None

    def _ssl_context(self) -> ssl.SSLContext:
        # Rebuilt when the CA file changes (cert rotation), cheap otherwise.
        mtime = os.stat(self.ca_file).st_mtime if self.ca_file else 0.0
        key = (self.ca_file, mtime)
        if self._context is None or self._context_key != key:
            self._context = ssl.create_default_context(cafile=self.ca_file or None)
            self._context_key = key
        return self._context

    def _token(self) -> str:
        if not self.token_file:
            return ""
        try:
            with open(self.token_file) as handle:
                return handle.read().strip()
        except OSError as problem:
            log.once(
                "config-token:%s" % self.token_file,
                "warning",
                "cannot read the service-account token %s (%s); calling the config service without it"
                % (self.token_file, problem.strerror or problem),
            )
            return ""

    def request(
        self,
        method: str,
        path: str,
        query: Optional[Dict[str, str]] = None,
        body: Optional[Dict[str, Any]] = None,
        timeout: float = CALL_TIMEOUT,
    ) -> Tuple[int, bytes]:
        target = self.prefix + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "User-Agent": "pilotfish-agent"}
        token = self._token()
        if token:
            headers["Authorization"] = "Bearer " + token
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            if self.https:
                with _tls_lock:  # see FORK_WAIT: CA load and handshake, not the long-poll wait
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        self.host, self.port, timeout=min(timeout, CALL_TIMEOUT), context=self._ssl_context()
                    )
                    try:
                        conn.connect()  # a silent server holds the lock CALL_TIMEOUT at most
                        conn.sock.settimeout(timeout)  # then the long-poll may take its time
                    except BaseException:
                        conn.close()
                        raise
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                conn.request(method, target, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_BODY + 1)
            finally:
                conn.close()
        except ssl.SSLError as problem:
            raise CallFailed("TLS failed (%s); is PILOTFISH_CONFIG_CA the service's CA?" % problem)
        except (OSError, http.client.HTTPException) as problem:
            raise CallFailed("%s: %s" % (type(problem).__name__, problem))
        if len(data) > MAX_BODY:
            raise CallFailed("answer larger than %d bytes" % MAX_BODY)
        return response.status, data


def _backoff(failures: int) -> float:
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(failures, 16)))
    return random.uniform(ceiling / 2, ceiling)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def _writable_directory(path: str) -> bool:
    return bool(path) and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def cache_directory(current: settings.Settings) -> Optional[str]:
    """Where the config cache lives; None when there is no writable place (no cache, not no config).

    ``PILOTFISH_CACHE_DIR`` as given; else ``PILOTFISH_STATE_DIR`` (the webhook points it
    at the agent's own writable volume) when writable; else the temp dir, which
    ``tempfile`` cannot find on a read-only root file system without a writable /tmp.
    """
    if current.cache_dir:
        return str(current.cache_dir)
    if _writable_directory(current.state_dir):
        return str(current.state_dir)
    try:
        return tempfile.gettempdir()
    except Exception as problem:  # FileNotFoundError: no usable temp dir at all
        log.once(
            "config-cache-none",
            "warning",
            "no writable directory for the config cache (%s%s): central config is applied "
            "without a cache, so worker processes do not follow it and a restart while the "
            "config service is down starts from defaults; set PILOTFISH_STATE_DIR to a writable "
            "directory"
            % (
                "PILOTFISH_STATE_DIR=%r is not writable, " % current.state_dir if current.state_dir else "",
                problem,
            ),
        )
        return None


def default_cache_path(current: settings.Settings) -> Optional[str]:
    directory = cache_directory(current)
    if directory is None:
        return None
    name = "pilotfish-config-%s-%s.json" % (
        _safe_name(current.pod_namespace or "default"),
        _safe_name(current.app or "_"),
    )
    return os.path.join(directory, name)


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CallFailed("not JSON: %r" % data[:80])


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
        apply: Callable[[Dict[str, Any], str], Any] = settings.apply_central,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.transport = transport
        self.app = app
        self.namespace = namespace
        self.cache_path = cache_path
        self._apply = apply
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
            self._apply(config, version)
        except Exception:
            log.exception_once("config-apply", "applying central config failed; keeping the previous one")

    def poll_once(self, hold: Optional[float] = None) -> str:
        """One long-poll: 'changed', 'unchanged', or raises :class:`CallFailed`."""
        hold = self.poll_seconds if hold is None else hold
        query = {"namespace": self.namespace, "app": self.app, "version": self.version}
        query["timeout"] = "%g" % hold
        status, data = self.transport.request("GET", "/v1/config", query, timeout=hold + NETWORK_SLACK)
        if status == 304:
            return "unchanged"
        if status != 200:
            detail = data[:200].decode("utf-8", "replace").strip()
            raise CallFailed("HTTP %d %s" % (status, detail))
        answer = _decode(data)
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
            if outcome == "unchanged" and time.monotonic() - started < MIN_POLL_SPACING:
                self.stopping.wait(MIN_POLL_SPACING)

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
        self.stopping.wait(_backoff(self.failures - 1))

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


# ---------------------------------------------------------------- registration


class Registration:
    """This instance's entry in the registry, renewed until deregistered."""

    def __init__(self, transport: Transport, identity: Dict[str, Any]) -> None:
        self.transport = transport
        self.identity = identity
        self.state = ""
        self.registered_at: Optional[float] = None
        self.lease_seconds: Optional[float] = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def _call(self, path: str, body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            status, data = self.transport.request("POST", path, body=body, timeout=CALL_TIMEOUT)
            if status != 200:
                raise CallFailed("HTTP %d %s" % (status, data[:200].decode("utf-8", "replace").strip()))
            answer = _decode(data)
            if not isinstance(answer, dict):
                raise CallFailed("unexpected answer %r" % data[:80])
        except CallFailed as problem:
            self.last_error = str(problem)
            log.once(
                "config-%s:%s" % (path, str(problem)[:40]),
                "warning",
                "%s at %s failed: %s" % (path, self.transport.base_url, problem),
            )
            return None
        self.last_error = ""
        return answer

    def register(self, state: str = "registered", port: Optional[int] = None) -> bool:
        with self._lock:
            self.state = state
            if port is not None:
                self.identity["port"] = port
            answer = self._call("/v1/register", dict(self.identity, state=state, warmup=_warmup_report()))
            if answer is None:
                self._ensure_renewer()  # keep trying in the background
                return False
            self.registered_at = answer.get("registered_at")
            lease = answer.get("lease_seconds")
            self.lease_seconds = float(lease) if isinstance(lease, (int, float)) else None
            self._ensure_renewer()
            return True

    def renew(self) -> bool:
        if not self.state:
            return False
        return self.register(self.state)

    def deregister(self) -> bool:
        with self._lock:
            self._stop.set()
            self.state = ""
            return self._call("/v1/deregister", dict(self.identity)) is not None

    def _ensure_renewer(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew_loop, name="pilotfish-register", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        while True:
            interval = self.lease_seconds / 3.0 if self.lease_seconds else 60.0
            if self.last_error:
                interval = min(interval, 2.0)
            if self._stop.wait(interval):
                return
            try:
                self.renew()
            except Exception:
                log.exception_once("config-renew", "renewing the registration failed")


# ---------------------------------------------------------------- instances


class InstanceWatch:
    """Long-poll one Service's instances; ``instances`` is the latest list."""

    def __init__(
        self,
        transport: Transport,
        service: str,
        namespace: str,
        callback: Optional[Callable[[List[Dict[str, Any]], str], None]] = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.transport = transport
        self.service = service
        self.namespace = namespace
        self.callback = callback
        self.poll_seconds = poll_seconds
        self.version = ""
        self.instances: List[Dict[str, Any]] = []
        self.failures = 0
        self.stopping = threading.Event()

    def poll_once(self) -> bool:
        query = {
            "namespace": self.namespace,
            "service": self.service,
            "version": self.version,
            "timeout": "%g" % self.poll_seconds,
        }
        status, data = self.transport.request(
            "GET", "/v1/instances", query, timeout=self.poll_seconds + NETWORK_SLACK
        )
        if status == 304:
            return False
        if status != 200:
            raise CallFailed("HTTP %d" % status)
        answer = _decode(data)
        if not (
            isinstance(answer, dict)
            and isinstance(answer.get("version"), str)
            and isinstance(answer.get("instances"), list)
        ):
            raise CallFailed("unexpected answer %r" % data[:80])
        if answer["version"] == self.version:
            return False
        self.version, self.instances = answer["version"], answer["instances"]
        if self.callback is not None:
            try:
                self.callback(self.instances, self.version)
            except Exception:
                log.exception_once("instances-callback", "an instances listener failed")
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                changed = self.poll_once()
                self.failures = 0
                if not changed and time.monotonic() - started < MIN_POLL_SPACING:
                    self.stopping.wait(MIN_POLL_SPACING)
            except Exception as problem:
                self.failures += 1
                log.once(
                    "instances-failed:%s" % self.service,
                    "warning",
                    "instances of %s unavailable (%s); retrying with backoff" % (self.service, problem),
                )
                self.stopping.wait(_backoff(self.failures - 1))

    def start(self) -> InstanceWatch:
        threading.Thread(target=self.run, name="pilotfish-instances-" + self.service, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()


# ---------------------------------------------------------------- module API

_lock = threading.Lock()
_client: Optional[ConfigClient] = None
_registration: Optional[Registration] = None
_thread: Optional[threading.Thread] = None


def _transport(current: settings.Settings) -> Optional[Transport]:
    if not current.config_url:
        return None
    try:
        return Transport(current.config_url, current.config_ca, current.token_file)
    except ValueError as problem:
        log.once("config-url", "warning", "%s; central config disabled" % problem)
        return None


def start() -> bool:
    """Load the cache and start the poll thread (idempotent). False when there is no service to poll."""
    global _client, _thread
    try:
        with _lock:
            if _thread is not None and _thread.is_alive():
                return True
            current = settings.current()
            transport = _transport(current)
            if transport is None:
                return False
            client = ConfigClient(
                transport,
                current.app,
                current.pod_namespace or "default",
                default_cache_path(current),
            )
            client.load_cache()
            _client = client
            _thread = threading.Thread(target=client.run, name="pilotfish-config", daemon=True)
            _thread.start()
        _add_status_section()
        return True
    except Exception:
        log.exception_once("config-start", "central config client did not start")
        return False


def first_answer_pending() -> bool:
    """True while this process's config client runs and the service has not answered it yet.

    The lifecycle waits on it (bounded) before judging ``delay_register_seconds``.
    """
    active = _client
    return active is not None and not active.answered.is_set() and not active.stopping.is_set()


def stop() -> None:
    client = _client
    if client is not None:
        client.stopping.set()


def client() -> Optional[ConfigClient]:
    return _client


def status() -> Dict[str, Any]:
    """The ``config_service`` section of ``/status``: where central config comes from, and how it goes.

    The merged config and its version are top-level ``config`` / ``config_version``
    of ``/status`` already (the status server reads :mod:`pilotfish.settings`).
    """
    active = _client
    if active is None:
        return {"enabled": False}
    return dict(active.status(), enabled=True)


def _add_status_section() -> None:
    try:
        import importlib

        status_server: Any = importlib.import_module(PACKAGE + ".status_server")
    except ImportError:
        return  # no status server in this build yet
    try:
        status_server.add_status_section("config_service", status)
    except Exception:
        log.exception_once("config-status", "cannot show central config in /status")


def _app_port() -> int:
    """The first TCP port the app listens on (0 when unknown): what consumers connect to."""
    try:
        from . import runtime

        for family, address in runtime.app_addresses():
            if family in ("AF_INET", "AF_INET6") and isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
    except Exception:
        log.exception_once("config-app-port", "cannot tell which port the app listens on")
    return 0


def _identity(current: settings.Settings) -> Dict[str, Any]:
    return {
        "namespace": current.pod_namespace or "default",
        "pod": current.pod_name or "%s-%d" % (current.app or "app", os.getpid()),
        "app": current.app,
        "service": current.app,
        "ip": current.pod_ip or "127.0.0.1",
        "tag": current.tag,
        "port": _app_port(),
    }


def _warmup_report() -> Dict[str, Any]:
    """This instance's warm-up settings as in force here (env may override policies).

    Callers weight us with these, so the ramp they apply is the one our own
    ``/status`` and ``pilotfish_warmup_weight`` show.
    """
    current = settings.current()
    return {
        "enabled": bool(current.warmup_enabled),
        "seconds": float(current.warmup_seconds),
        "curve": float(current.warmup_curve),
        "min_weight_percent": float(current.warmup_min_weight_percent),
    }


def _ensure_registration() -> Optional[Registration]:
    global _registration
    with _lock:
        if _registration is None:
            current = settings.current()
            transport = _transport(current)
            if transport is None:
                return None
            _registration = Registration(transport, _identity(current))
        return _registration


def register(port: Optional[int] = None, state: str = "registered") -> bool:
    """Register this instance (or change its state). False on failure; never raises.

    Fail-open by design: the lifecycle treats an unreachable service as "registered"
    for readiness, and the renewal thread keeps trying in the background.
    """
    try:
        registration = _ensure_registration()
        return registration.register(state, port) if registration is not None else False
    except Exception:
        log.exception_once("config-register", "registration failed")
        return False


def set_state(state: str) -> bool:
    """E.g. ``set_state("offline")`` at the start of graceful offline."""
    return register(None, state)


def renew() -> bool:
    try:
        registration = _registration
        return registration.renew() if registration is not None else False
    except Exception:
        log.exception_once("config-renew", "renewing the registration failed")
        return False


def deregister() -> bool:
    try:
        registration = _registration
        return registration.deregister() if registration is not None else False
    except Exception:
        log.exception_once("config-deregister", "deregistration failed")
        return False


def registration() -> Optional[Registration]:
    return _registration


def watch_instances(
    service: str,
    callback: Optional[Callable[[List[Dict[str, Any]], str], None]] = None,
    namespace: Optional[str] = None,
) -> Optional[InstanceWatch]:
    """Start long-polling ``service``'s instances; None when there is no config service."""
    try:
        current = settings.current()
        transport = _transport(current)
        if transport is None:
            return None
        namespace = namespace or current.pod_namespace or "default"
        return InstanceWatch(transport, service, namespace, callback).start()
    except Exception:
        log.exception_once("config-instances", "cannot watch instances of %s" % service)
        return None


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
        apply: Callable[[Dict[str, Any], str], Any] = settings.apply_central,
        interval: float = 0.5,
    ) -> None:
        self.path = path
        self.app = app
        self.namespace = namespace
        self._apply = apply
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
            self._apply(config, self.version)
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
            path = default_cache_path(current)
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
    # Threads do not survive fork; a worker must not believe the owner's poller runs here.
    global _client, _registration, _thread, _lock
    _client, _registration, _thread, _lock = None, None, None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
    os.register_at_fork(
        before=_tls_before_fork,
        after_in_parent=_tls_after_fork_in_parent,
        after_in_child=_tls_after_fork_in_child,
    )
