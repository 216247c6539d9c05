"""The agent's status port (default ``0.0.0.0:55199``), served by the owner process only.

| path | meaning |
|---|---|
| ``/readiness`` (alias ``/health``) | 200 only when every readiness gate holds |
| ``/offline`` | start graceful offline (needs ``X-Pilotfish-Token``) |
| ``/metrics`` | Prometheus text |
| ``/status`` | JSON: state, gates, in-flight, tag, config and its version, workers |

Everything served passes through :mod:`.redact` last (probe header values, URL
userinfo, credential-looking query values): the port answers anyone who can
reach the pod.

Other parts of the agent plug in through :func:`add_gate`,
:func:`add_readiness_observer`, :func:`add_status_section`, :func:`add_metrics` and
:func:`set_offline_handler`; this module knows nothing about lifecycle or config itself.

Hardening: a standard-library threaded server on a daemon thread; unknown paths
404, wrong methods 405, request lines over 4 KiB 414, more than 64 header lines
431, bodies over 64 KiB 413, and anything that could frame a request two ways
(two ``Content-Length`` headers, one that is not a plain number, any
``Transfer-Encoding``) 400 with the connection closed.

Under abuse (the port is reachable from the whole cluster network) the app must
not pay: at most :data:`MAX_CONNECTIONS` connections are open at once (so at
most that many threads and sockets), and each request must arrive whole, head
and body, within :data:`REQUEST_DEADLINE` seconds however slowly it trickles.
When every slot is taken, a new connection takes the slot of the connection
that has waited longest for its request to arrive (it is closed): a kubelet
probe sends its request at once, so a flood of slow connections can delay
``/readiness`` by milliseconds, never starve it. Only when every slot is busy
*answering* (e.g. ``/offline`` waiting for the drain) is a newcomer refused, with
a fixed 503 written from the accept loop, no thread started.
"""

from __future__ import annotations

import errno
import hmac
import io
import ipaddress
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import __version__, log, redact, settings, shared, stats

Gate = Callable[[], Tuple[bool, str]]
SectionProvider = Callable[[], Dict[str, Any]]
MetricsProvider = Callable[[], List[str]]
OfflineHandler = Callable[[bool], Tuple[int, Dict[str, Any]]]
GateReport = Dict[str, Dict[str, Any]]
ReadinessObserver = Callable[[bool, GateReport], None]

TOKEN_HEADER = "X-Pilotfish-Token"
MAX_REQUEST_LINE = 4096
MAX_HEADERS = 64
MAX_BODY = 65536
MAX_CONNECTIONS = 16
REQUEST_DEADLINE = 5.0  # for the whole request (line, headers, body), not per read
WRITE_TIMEOUT = 5.0
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
)
_DIGITS = re.compile(r"[0-9]{1,19}\Z")

_gates: List[Tuple[str, Gate]] = []
_observers: List[ReadinessObserver] = []
_sections: List[Tuple[str, SectionProvider]] = []
_metrics: List[MetricsProvider] = []
_offline_handler: Optional[OfflineHandler] = None
_server: Optional[ThreadingHTTPServer] = None
_started_at = time.time()


def add_gate(name: str, check: Gate) -> None:
    """Add a readiness gate: ``check() -> (ok, reason)``. Replaces a gate of the same name."""
    global _gates
    _gates = [(n, c) for n, c in _gates if n != name] + [(name, check)]


def add_readiness_observer(observer: ReadinessObserver) -> None:
    """Call ``observer(ready, report)`` after every evaluation of the gates.

    Whoever asks (kubelet's ``/readiness``, ``/status``, ``/metrics``, the lifecycle's own
    tick), the lifecycle records a ``ready`` <-> ``registered`` change the moment it is seen,
    so it need not wake up on its own to notice one."""
    if observer not in _observers:
        _observers.append(observer)


def add_status_section(name: str, provider: SectionProvider) -> None:
    """Merge ``provider()`` into ``/status`` under ``name`` (top-level keys if ``name`` is "")."""
    global _sections
    _sections = [(n, p) for n, p in _sections if n != name or p is provider] + [(name, provider)]


def add_metrics(provider: MetricsProvider) -> None:
    """Append ``provider()`` (Prometheus text lines, with HELP/TYPE) to ``/metrics``."""
    _metrics.append(provider)


def set_offline_handler(handler: OfflineHandler) -> None:
    """What ``/offline`` does once the caller is authorised: ``handler(wait) -> (status, body)``."""
    global _offline_handler
    _offline_handler = handler


def evaluate_gates() -> Tuple[bool, GateReport]:
    """Run every gate, then tell the observers; a gate or observer that raises never escapes.

    A gate that raises counts as failing, with the error as reason."""
    report: GateReport = {}
    ready = True
    for name, check in list(_gates):
        try:
            ok, reason = check()
        except Exception as error:  # a broken gate must not take the status server down
            ok, reason = False, "gate raised %s: %s" % (type(error).__name__, error)
        report[name] = {"ok": bool(ok), "reason": reason}
        ready = ready and bool(ok)
    for observer in list(_observers):
        try:
            observer(ready, report)
        except Exception:
            log.exception_once("status-observer", "a readiness observer raised; the answer is unchanged")
    return ready, report


def status_document() -> Dict[str, Any]:
    current = settings.current()
    ready, gates = evaluate_gates()
    totals = stats.totals()
    document: Dict[str, Any] = {
        "agent_version": __version__,
        "pid": os.getpid(),
        "state": "ready" if ready else "not-ready",
        "ready": ready,
        "gates": gates,
        "in_flight": totals.in_flight,
        "requests_total": totals.requests_total,
        "probes_total": totals.probes_total,
        "ignored_total": totals.ignored_total,
        "requests_by_tag": {tag or "baseline": count for tag, count in totals.by_tag.items()},
        "offline": shared.is_offline(),
        "tag": current.tag or None,
        "app": current.app or None,
        "config": _public_config(current),
        "config_version": current.central_version or None,
        "config_sources": dict(current.sources),
        "workers": [worker.as_dict() for worker in totals.workers],
        "worker_deaths": totals.worker_deaths,
        "uptime_seconds": round(time.time() - _started_at, 3),
    }
    for name, provider in list(_sections):
        try:
            section = provider()
        except Exception as error:
            section = {"error": "%s: %s" % (type(error).__name__, error)}
        if name:
            document[name] = section
        else:
            document.update(section)
    redacted: Dict[str, Any] = redact.document(document)
    return redacted


_SECRET_FIELDS = ("offline_token",)


def _public_config(current: settings.Settings) -> Dict[str, Any]:
    config = {}
    for field in settings.FIELDS:
        value = getattr(current, field.name)
        if field.name in _SECRET_FIELDS:
            value = "(set)" if value else ""
        elif field.name == "app_probe":
            value = redact.probe(value)
        config[field.name] = list(value) if isinstance(value, tuple) else value
    config.update(current.central_extra)
    return config


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text() -> str:
    totals = stats.totals()
    ready, gates = evaluate_gates()
    current = settings.current()
    lines = [
        "# HELP pilotfish_in_flight_requests Requests being served now, over all workers.",
        "# TYPE pilotfish_in_flight_requests gauge",
        "pilotfish_in_flight_requests %d" % totals.in_flight,
        "# HELP pilotfish_requests_total Requests served, by lane tag of the request (probes excluded).",
        "# TYPE pilotfish_requests_total counter",
    ]
    own_tag = _escape(current.tag)
    for tag, count in sorted(totals.by_tag.items()) or [("", 0)]:
        lines.append(
            'pilotfish_requests_total{request_tag="%s",instance_tag="%s"} %d' % (_escape(tag), own_tag, count)
        )
    lines += [
        "# HELP pilotfish_probe_requests_total Kubelet probe requests seen by the app (not traffic).",
        "# TYPE pilotfish_probe_requests_total counter",
        "pilotfish_probe_requests_total %d" % totals.probes_total,
        "# HELP pilotfish_ignored_requests_total Requests to ignored paths (not traffic).",
        "# TYPE pilotfish_ignored_requests_total counter",
        "pilotfish_ignored_requests_total %d" % totals.ignored_total,
        "# HELP pilotfish_workers Worker processes reporting to this status server.",
        "# TYPE pilotfish_workers gauge",
        "pilotfish_workers %d" % len(totals.workers),
        "# HELP pilotfish_worker_deaths_total Worker processes that exited or died.",
        "# TYPE pilotfish_worker_deaths_total counter",
        "pilotfish_worker_deaths_total %d" % totals.worker_deaths,
        "# HELP pilotfish_ready 1 when every readiness gate holds.",
        "# TYPE pilotfish_ready gauge",
        "pilotfish_ready %d" % (1 if ready else 0),
        "# HELP pilotfish_gate_ok 1 when the named readiness gate holds.",
        "# TYPE pilotfish_gate_ok gauge",
    ]
    for name, gate in gates.items():
        lines.append('pilotfish_gate_ok{gate="%s"} %d' % (_escape(name), 1 if gate["ok"] else 0))
    lines += [
        "# HELP pilotfish_offline 1 once graceful offline has started.",
        "# TYPE pilotfish_offline gauge",
        "pilotfish_offline %d" % (1 if shared.is_offline() else 0),
        "# HELP pilotfish_config_info The central config version in force.",
        "# TYPE pilotfish_config_info gauge",
        'pilotfish_config_info{version="%s"} 1' % _escape(current.central_version),
    ]
    for provider in list(_metrics):
        try:
            lines.extend(provider())
        except Exception:
            log.exception_once("metrics:%r" % (provider,), "a metrics provider failed")
    return redact.text("\n".join(lines) + "\n")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _offline(handler: StatusHandler, wait: bool) -> Tuple[int, Dict[str, Any]]:
    expected = settings.current().offline_token
    presented = handler.headers.get(TOKEN_HEADER, "")
    if expected:
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            return 403, {"error": "missing or wrong %s header" % TOKEN_HEADER}
    elif not _is_loopback(handler.client_address[0]):
        return 403, {"error": "no PILOTFISH_OFFLINE_TOKEN is set, so /offline only accepts loopback callers"}
    if _offline_handler is None:
        shared.set_offline(True)
        return 200, {
            "offline": True,
            "drained": None,
            "note": "graceful offline is not available in this build",
        }
    return _offline_handler(wait)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline, so a request trickled a byte at a time still ends.

    A timeout per ``recv`` (the standard library's) lets a client keep a
    connection, and its thread, for ever by sending one byte just before each
    timeout; here every read of one request draws on the same budget.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = time.monotonic() + REQUEST_DEADLINE

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("request not received within %gs" % REQUEST_DEADLINE)
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class StatusHandler(BaseHTTPRequestHandler):
    server_version = "pilotfish/" + __version__
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_DEADLINE
    server: _Server

    ROUTES = {"/readiness", "/health", "/offline", "/metrics", "/status"}

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
            self.close_connection = True
            self.send_error(414)
            return False
        return super().parse_request()

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + REQUEST_DEADLINE
        self.server.reading(self.connection, True)
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                self.close_connection = True
                return
            if len(self.headers) > MAX_HEADERS:
                self.close_connection = True
                self.send_error(431)
                return
            if not self._read_body():
                return
            self.server.reading(self.connection, False)
            self.connection.settimeout(WRITE_TIMEOUT)
            self._dispatch()
            self.wfile.flush()
        except OSError:  # deadline passed, client gone, or closed to make room for a newer one
            self.close_connection = True

    def _read_body(self) -> bool:
        """Read (and drop) the body, or answer 400/413 when its framing is not one plain length."""
        if self.headers.get_all("Transfer-Encoding"):
            return self._reject(400, "Transfer-Encoding is not accepted; send a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            return self._reject(400, "more than one Content-Length header")
        if not lengths:
            return True
        value = lengths[0].strip()
        if not _DIGITS.match(value):
            return self._reject(400, "Content-Length is not a number")
        length = int(value)
        if length > MAX_BODY:
            return self._reject(413, "body over %d bytes" % MAX_BODY)
        if length and len(self.rfile.read(length)) < length:
            self.close_connection = True
            return False
        return True

    def _reject(self, code: int, error: str) -> bool:
        self.close_connection = True
        self._send(code, {"error": error})
        self.wfile.flush()
        return False

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        if path not in self.ROUTES:
            self._send(404, {"error": "unknown path %s" % path, "paths": sorted(self.ROUTES)})
            return
        allowed = ("GET", "POST", "HEAD") if path == "/offline" else ("GET", "HEAD")
        if self.command not in allowed:
            self._send(405, {"error": "%s not allowed on %s" % (self.command, path)}, allow=allowed)
            return
        if path in ("/readiness", "/health"):
            ready, gates = evaluate_gates()
            failing = {
                name: redact.document(gate["reason"]) for name, gate in gates.items() if not gate["ok"]
            }
            self._send(200 if ready else 503, {"ready": ready, "failing": failing})
        elif path == "/status":
            self._send(200, status_document())
        elif path == "/metrics":
            self._send_text(200, metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            wait = "wait=false" not in query and "wait=0" not in query
            code, body = _offline(self, wait)
            self._send(code, body)

    def _send(self, code: int, body: Dict[str, Any], allow: Tuple[str, ...] = ()) -> None:
        self._send_text(code, json.dumps(body, indent=1, sort_keys=True) + "\n", "application/json", allow)

    def _send_text(self, code: int, text: str, content_type: str, allow: Tuple[str, ...] = ()) -> None:
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", ", ".join(allow))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status %s %s" % (self.address_string(), format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    max_connections = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        # open connection -> [when its current request started, still reading it?]
        self._open: Dict[socket.socket, List[Any]] = {}
        self._closing: Set[socket.socket] = set()  # evicted, their threads finishing
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it does a reverse DNS lookup (getfqdn) that can hang.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self) -> Tuple[socket.socket, Any]:
        try:
            return self.socket.accept()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors (the app's or ours): the pending connection stays
                # in the backlog and the listening socket stays readable; without a
                # pause the accept loop would spin a core until descriptors free up.
                time.sleep(0.2)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = len(self._open) < self.max_connections or self._evict_locked()
            if admitted:
                self._open[request] = [time.monotonic(), True]
        if not admitted:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread could be started: refuse, never take the accept loop down
            log.exception_once("status-thread", "status server could not start a thread for a request")
            self._refuse(request)

    def _evict_locked(self) -> bool:
        """Close the connection that has waited longest for its request; False if none is waiting."""
        waiting = [(since, conn) for conn, (since, reading) in self._open.items() if reading]
        if not waiting:
            return False
        _, victim = min(waiting, key=lambda entry: entry[0])
        del self._open[victim]
        self._closing.add(victim)
        try:
            victim.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once
        except OSError:
            pass
        return True

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)
            request.send(REFUSED)
        except OSError:
            pass
        self.shutdown_request(request)

    def reading(self, request: socket.socket, reading: bool) -> None:
        """A connection starts (True) or finishes (False) reading a request: only readers can be evicted."""
        with self._lock:
            entry = self._open.get(request)
            if entry is not None:
                entry[1] = reading
                if reading:
                    entry[0] = time.monotonic()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
            self._closing.discard(request)
        super().shutdown_request(request)

    def connections(self) -> Dict[str, int]:
        """Open connections: reading a request, answering one, or evicted and closing."""
        with self._lock:
            reading = sum(1 for _, is_reading in self._open.values() if is_reading)
            return {"reading": reading, "answering": len(self._open) - reading, "closing": len(self._closing)}

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception_once("status-request", "status server failed to answer a request")


def bind(host: str, port: int) -> _Server:
    """Bind the status port. Raises ``OSError``: EADDRINUSE when another process (of this
    container, usually) has it, ``socket.gaierror`` when ``host`` does not resolve."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("StatusServer", (_Server,), {"address_family": family})
    server: _Server = server_class((host, port), StatusHandler)
    return server


def serve(server: _Server) -> None:
    """Serve on a daemon thread; the app's exit never waits for it."""
    global _server
    _server = server
    # Nothing stops this server but the process's exit (a daemon thread). The poll
    # interval only bounds how long a shutdown() would wait, so it is long: an idle
    # pod's agent should not wake up twice a second for nothing.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 60.0}, name="pilotfish-status", daemon=True
    )
    thread.start()


def address() -> Optional[Tuple[str, int]]:
    return (_server.server_name, _server.server_port) if _server is not None else None


def reset_after_fork() -> None:
    """A forked child does not own the status server (its thread did not survive the fork)."""
    global _server
    if _server is not None:
        try:
            _server.socket.close()
        except Exception:
            pass
    _server = None
