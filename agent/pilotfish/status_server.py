"""The agent's status port (default ``0.0.0.0:55199``), served by the owner process only.

| path | meaning |
|---|---|
| ``/readiness`` (alias ``/health``) | 200 only when every readiness gate holds |
| ``/offline`` | start graceful offline (needs ``X-Pilotfish-Token``) |
| ``/metrics`` | Prometheus text |
| ``/status`` | JSON: state, gates, in-flight, tag, config and its version, workers |

Other parts of the agent plug in through :func:`add_gate`,
:func:`add_status_section`, :func:`add_metrics` and :func:`set_offline_handler`;
this module knows nothing about lifecycle or config itself.

Hardening: a standard-library threaded server on a daemon thread; unknown paths
404, wrong methods 405, request lines over 4 KiB 414, more than 64 header lines
431, and a client that sends nothing for 5 s is cut off.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import __version__, log, settings, shared, stats

Gate = Callable[[], Tuple[bool, str]]
SectionProvider = Callable[[], Dict[str, Any]]
MetricsProvider = Callable[[], List[str]]
OfflineHandler = Callable[[bool], Tuple[int, Dict[str, Any]]]

TOKEN_HEADER = "X-Pilotfish-Token"
MAX_REQUEST_LINE = 4096
MAX_HEADERS = 64
READ_TIMEOUT = 5.0

_gates: List[Tuple[str, Gate]] = []
_sections: List[Tuple[str, SectionProvider]] = []
_metrics: List[MetricsProvider] = []
_offline_handler: Optional[OfflineHandler] = None
_server: Optional[ThreadingHTTPServer] = None
_started_at = time.time()


def add_gate(name: str, check: Gate) -> None:
    """Add a readiness gate: ``check() -> (ok, reason)``. Replaces a gate of the same name."""
    global _gates
    _gates = [(n, c) for n, c in _gates if n != name] + [(name, check)]


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


def evaluate_gates() -> Tuple[bool, Dict[str, Dict[str, Any]]]:
    """Run every gate; a gate that raises counts as failing, with the error as reason."""
    report: Dict[str, Dict[str, Any]] = {}
    ready = True
    for name, check in list(_gates):
        try:
            ok, reason = check()
        except Exception as error:  # a broken gate must not take the status server down
            ok, reason = False, "gate raised %s: %s" % (type(error).__name__, error)
        report[name] = {"ok": bool(ok), "reason": reason}
        ready = ready and bool(ok)
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
    return document


_SECRET_FIELDS = ("offline_token",)


def _public_config(current: settings.Settings) -> Dict[str, Any]:
    config = {}
    for field in settings.FIELDS:
        value = getattr(current, field.name)
        if field.name in _SECRET_FIELDS:
            value = "(set)" if value else ""
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
    return "\n".join(lines) + "\n"


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


class StatusHandler(BaseHTTPRequestHandler):
    server_version = "pilotfish/" + __version__
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT

    ROUTES = {"/readiness", "/health", "/offline", "/metrics", "/status"}

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
            self.close_connection = True
            self.send_error(414)
            return False
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            if len(self.headers) > MAX_HEADERS:
                self.send_error(431)
                return
            self._dispatch()
            self.wfile.flush()
        except (socket.timeout, ConnectionError):
            self.close_connection = True

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        if path not in self.ROUTES:
            self._send(404, {"error": "unknown path %s" % path, "paths": sorted(self.ROUTES)})
            return
        allowed = ("GET", "POST", "HEAD") if path == "/offline" else ("GET", "HEAD")
        if self.command not in allowed:
            self._send(405, {"error": "%s not allowed on %s" % (self.command, path)}, allow=allowed)
            return
        self._discard_body()
        if path in ("/readiness", "/health"):
            ready, gates = evaluate_gates()
            failing = {name: gate["reason"] for name, gate in gates.items() if not gate["ok"]}
            self._send(200 if ready else 503, {"ready": ready, "failing": failing})
        elif path == "/status":
            self._send(200, status_document())
        elif path == "/metrics":
            self._send_text(200, metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            wait = "wait=false" not in query and "wait=0" not in query
            code, body = _offline(self, wait)
            self._send(code, body)

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and 0 < int(length) <= 65536:
            self.rfile.read(int(length))
        elif length and length != "0":
            self.close_connection = True

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
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status %s %s" % (self.address_string(), format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it does a reverse DNS lookup (getfqdn) that can hang.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception_once("status-request", "status server failed to answer a request")


def bind(host: str, port: int) -> Optional[_Server]:
    """Bind the status port. None if it is taken (another process of this container owns it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("StatusServer", (_Server,), {"address_family": family})
    try:
        return server_class((host, port), StatusHandler)
    except OSError:
        return None


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
