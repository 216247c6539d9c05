"""The app's original readiness probe, checked by the agent as one readiness gate.

The webhook rewrites the pod's readiness probe to ``:55199/readiness`` and passes
the original in ``PILOTFISH_APP_PROBE`` (JSON, named ports already resolved), the
way Istio keeps an app's probe working behind its sidecar. The kubelet now asks
us; we ask the app, with the kubelet's own semantics:

- ``httpGet``: scheme HTTP or HTTPS (certificate not verified, as the kubelet
  does), ``host`` (default: the pod IP, here ``PILOTFISH_POD_IP`` or loopback),
  ``path``, ``httpHeaders`` (a ``Host`` header sets the request's host); any
  status from 200 to 399 is success (a redirect is not followed; the kubelet
  would count a redirect as success as well unless it leads to a failing page).
- ``tcpSocket``: the connection opens.
- ``grpc``: checked as a TCP connect to its port (the agent has no gRPC client
  of its own); exec probes never come here (the webhook leaves them alone).
- ``periodSeconds`` (10), ``timeoutSeconds`` (1), ``successThreshold`` (1) and
  ``failureThreshold`` (3) as in Kubernetes: the gate starts failing and opens
  after ``successThreshold`` successes in a row, then closes after
  ``failureThreshold`` failures in a row. ``initialDelaySeconds`` stays on the
  rewritten probe, where the kubelet applies it, so it is not repeated here.

Every probe request says ``User-Agent: kube-probe/pilotfish``, so the inbound
wrappers count it as a probe, not as traffic: it can never start warm-up.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Union

from . import log

USER_AGENT = "kube-probe/pilotfish"
HTTP, TCP = "httpGet", "tcpSocket"


class AppProbe(Protocol):
    """What the lifecycle needs of an app probe: :class:`ProbeRunner`, or :class:`NoProbe`."""

    def gate(self) -> Tuple[bool, str]: ...

    def check_now(self) -> None: ...

    def describe(self) -> Dict[str, Any]: ...


class ProbeError(ValueError):
    """``PILOTFISH_APP_PROBE`` is not a probe we understand; the message names the field."""


class ProbeSpec:
    """A parsed probe: what to check and how often."""

    __slots__ = (
        "kind",
        "scheme",
        "host",
        "port",
        "path",
        "headers",
        "period",
        "timeout",
        "success_threshold",
        "failure_threshold",
    )

    def __init__(
        self,
        kind: str,
        port: int,
        host: str = "",
        path: str = "/",
        scheme: str = "HTTP",
        headers: Optional[List[Tuple[str, str]]] = None,
        period: float = 10.0,
        timeout: float = 1.0,
        success_threshold: int = 1,
        failure_threshold: int = 3,
    ) -> None:
        self.kind = kind
        self.port = port
        self.host = host
        self.path = path
        self.scheme = scheme
        self.headers = headers or []
        self.period = period
        self.timeout = timeout
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold

    def describe(self) -> str:
        if self.kind == HTTP:
            return "%s %s://%s:%d%s" % (
                "GET",
                self.scheme.lower(),
                self.host or "<pod>",
                self.port,
                self.path,
            )
        return "tcp %s:%d" % (self.host or "<pod>", self.port)


def _number(probe: Dict[str, Any], name: str, default: float, low: float, whole: bool = False) -> float:
    raw = probe.get(name, default)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ProbeError("PILOTFISH_APP_PROBE.%s: expected a number, got %r" % (name, raw))
    if raw < low or (whole and raw != int(raw)):
        raise ProbeError(
            "PILOTFISH_APP_PROBE.%s: expected a %s >= %g, got %r"
            % (name, "whole number" if whole else "number", low, raw)
        )
    return float(raw)


def _port(action: Dict[str, Any], where: str) -> int:
    raw = action.get("port")
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not (1 <= raw <= 65535):
        raise ProbeError(
            "PILOTFISH_APP_PROBE.%s.port: expected a port number 1-65535 (named ports are resolved by the "
            "webhook), got %r" % (where, raw)
        )
    return raw


def _text(action: Dict[str, Any], name: str, where: str, default: str) -> str:
    raw = action.get(name)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise ProbeError("PILOTFISH_APP_PROBE.%s.%s: expected a string, got %r" % (where, name, raw))
    return raw


def parse(raw: str) -> ProbeSpec:
    """Parse the probe JSON. Raises :class:`ProbeError` naming the offending field."""
    try:
        probe = json.loads(raw)
    except ValueError as problem:
        raise ProbeError("PILOTFISH_APP_PROBE: not valid JSON (%s)" % problem) from None
    if not isinstance(probe, dict):
        raise ProbeError(
            "PILOTFISH_APP_PROBE: expected a JSON object (a Kubernetes probe), got %r" % (probe,)
        )
    timing = {
        "period": _number(probe, "periodSeconds", 10, 1),
        "timeout": _number(probe, "timeoutSeconds", 1, 1),
        "success_threshold": int(_number(probe, "successThreshold", 1, 1, whole=True)),
        "failure_threshold": int(_number(probe, "failureThreshold", 3, 1, whole=True)),
    }
    if isinstance(probe.get(HTTP), dict):
        action = probe[HTTP]
        scheme = _text(action, "scheme", HTTP, "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise ProbeError("PILOTFISH_APP_PROBE.httpGet.scheme: expected HTTP or HTTPS, got %r" % scheme)
        path = _text(action, "path", HTTP, "/")
        if not path.startswith("/"):
            path = "/" + path
        headers: List[Tuple[str, str]] = []
        raw_headers = action.get("httpHeaders") or []
        if not isinstance(raw_headers, list):
            raise ProbeError("PILOTFISH_APP_PROBE.httpGet.httpHeaders: expected a list of {name, value}")
        for index, item in enumerate(raw_headers):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise ProbeError(
                    "PILOTFISH_APP_PROBE.httpGet.httpHeaders[%d].name: expected a header name" % index
                )
            value = item.get("value", "")
            if not isinstance(value, str):
                raise ProbeError(
                    "PILOTFISH_APP_PROBE.httpGet.httpHeaders[%d].value: expected a string" % index
                )
            headers.append((item["name"], value))
        return ProbeSpec(
            HTTP,
            _port(action, HTTP),
            host=_text(action, "host", HTTP, ""),
            path=path,
            scheme=scheme,
            headers=headers,
            **timing,  # type: ignore[arg-type]
        )
    for kind in (TCP, "grpc"):
        if isinstance(probe.get(kind), dict):
            action = probe[kind]
            return ProbeSpec(TCP, _port(action, kind), host=_text(action, "host", kind, ""), **timing)  # type: ignore[arg-type]
    if "exec" in probe:
        raise ProbeError("PILOTFISH_APP_PROBE.exec: exec probes are run by the kubelet, not the agent")
    raise ProbeError("PILOTFISH_APP_PROBE: expected one of httpGet, tcpSocket or grpc")


def check_once(spec: ProbeSpec, default_host: str = "127.0.0.1") -> Tuple[bool, str]:
    """Run the probe once: (ok, what happened). Never raises."""
    host = spec.host or default_host
    try:
        if spec.kind == TCP:
            with socket.create_connection((host, spec.port), timeout=spec.timeout):
                return True, "tcp %s:%d open" % (host, spec.port)
        return _http(spec, host)
    except socket.timeout:
        return False, "%s: timed out after %gs" % (spec.describe(), spec.timeout)
    except Exception as problem:
        return False, "%s: %s" % (spec.describe(), problem or type(problem).__name__)


def _http(spec: ProbeSpec, host: str) -> Tuple[bool, str]:
    import http.client

    connection: http.client.HTTPConnection
    if spec.scheme == "HTTPS":
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates either
        connection = http.client.HTTPSConnection(host, spec.port, timeout=spec.timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, spec.port, timeout=spec.timeout)
    try:
        connection.putrequest("GET", spec.path, skip_host=True, skip_accept_encoding=True)
        names = {name.lower() for name, _ in spec.headers}
        if "host" not in names:
            connection.putheader("Host", "%s:%d" % (host, spec.port))
        if "accept" not in names:
            connection.putheader("Accept", "*/*")
        for name, value in spec.headers:
            if name.lower() != "user-agent":  # ours stays: a probe must never look like traffic
                connection.putheader(name, value)
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        response.read(10 * 1024)  # the kubelet reads (and ignores) up to 10 KiB of body
        status = response.status
    finally:
        connection.close()
    ok = 200 <= status < 400
    return ok, "%s: HTTP %d" % (spec.describe(), status)


class ProbeRunner:
    """Checks the probe on its own thread at its period; :meth:`gate` is the readiness gate."""

    def __init__(
        self,
        spec: ProbeSpec,
        default_host: str = "127.0.0.1",
        check: Callable[[ProbeSpec, str], Tuple[bool, str]] = check_once,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.default_host = default_host
        self._check = check
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.ok = False
        self.reason = "not checked yet"
        self.successes = 0
        self.failures = 0
        self.checks = 0
        self.last_checked_at: Optional[float] = None
        self.changed_at: Optional[float] = None

    def record(self, ok: bool, reason: str) -> None:
        """Apply one result with the kubelet's threshold rules."""
        with self._lock:
            self.checks += 1
            self.last_checked_at = self._clock()
            if ok:
                self.successes += 1
                self.failures = 0
                if not self.ok and self.successes >= self.spec.success_threshold:
                    self.ok, self.changed_at = True, self.last_checked_at
            else:
                self.failures += 1
                self.successes = 0
                if self.ok and self.failures >= self.spec.failure_threshold:
                    self.ok, self.changed_at = False, self.last_checked_at
            self.reason = reason

    def check_now(self) -> None:
        try:
            ok, reason = self._check(self.spec, self.default_host)
        except Exception as problem:  # a custom check must not kill the thread
            ok, reason = False, "probe raised %s" % problem
        self.record(ok, reason)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.check_now()
            except Exception:
                log.exception_once("probe-loop", "the app probe check failed unexpectedly")
            self._stop.wait(max(0.0, self.spec.period - (self._clock() - started)))

    def start(self) -> ProbeRunner:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pilotfish-app-probe", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def gate(self) -> Tuple[bool, str]:
        with self._lock:
            ok, reason, successes, failures, checks = (
                self.ok,
                self.reason,
                self.successes,
                self.failures,
                self.checks,
            )
        if ok and failures:
            return True, "app probe still passing: %d of %d failures in a row allowed (%s)" % (
                failures,
                self.spec.failure_threshold,
                reason,
            )
        if ok:
            return True, "app probe passes (%s)" % reason
        if checks == 0:
            return False, "app probe %s not checked yet" % self.spec.describe()
        if successes:
            return False, "app probe passed %d of %d times in a row needed (%s)" % (
                successes,
                self.spec.success_threshold,
                reason,
            )
        return False, "app probe fails: %s" % reason

    def describe(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "probe": self.spec.describe(),
                "period_seconds": self.spec.period,
                "timeout_seconds": self.spec.timeout,
                "success_threshold": self.spec.success_threshold,
                "failure_threshold": self.spec.failure_threshold,
                "ok": self.ok,
                "last_result": self.reason,
                "checks": self.checks,
                "consecutive_successes": self.successes,
                "consecutive_failures": self.failures,
            }


class NoProbe:
    """No original probe (or one we cannot check): the gate passes and says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def start(self) -> NoProbe:
        return self

    def stop(self) -> None:
        pass

    def check_now(self) -> None:
        pass

    def gate(self) -> Tuple[bool, str]:
        return True, self.reason

    def describe(self) -> Dict[str, Any]:
        return {"probe": None, "note": self.reason}


def from_settings(raw: str, default_host: str) -> Union[ProbeRunner, NoProbe]:
    """A running probe for ``PILOTFISH_APP_PROBE``, or a :class:`NoProbe` that says why not.

    A probe we cannot parse fails open (the ``app-listening`` gate still holds
    readiness until the app serves) and the reason, naming the field, is logged
    and shown in ``/status``: a typo must not keep a Deployment from ever rolling out.
    """
    if not raw.strip():
        return NoProbe("no original readiness probe; the app-listening gate stands in for it")
    try:
        spec = parse(raw)
    except ProbeError as problem:
        log.once("app-probe-invalid", "error", "%s; the app probe gate is skipped" % problem)
        return NoProbe("app probe not checked: %s" % problem)
    return ProbeRunner(spec, default_host)
