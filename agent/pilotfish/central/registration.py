"""This instance's entry in the registry: registered after the delay, renewed, deregistered at offline.

- :class:`Registration`: ``POST /v1/register`` / ``/v1/deregister`` with this pod's identity,
  and a renewal thread that keeps the lease alive until deregistration.
- :class:`LazyRegistration`: the owner's one registration, built from the settings at the first
  call; every call returns, never raises (False: the service is unreachable, keep going).
- :class:`Registrar`: what the lifecycle sees: each call bounded to :data:`REGISTER_WAIT_SECONDS`
  on a helper thread, fail-open (a service that does not answer in time is reported as
  ``"fail-open"`` and left to finish, and retry, in the background).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from .. import log, settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .transport import Transport

REGISTER_WAIT_SECONDS = 10.0
"""How long readiness waits for the config service before failing open."""


def identity(current: settings.Settings, port: Optional[int]) -> Dict[str, Any]:
    """What the registry knows this instance by. ``port`` None (not known yet) is 0 on the wire."""
    return {
        "namespace": current.pod_namespace or "default",
        "pod": current.pod_name or "%s-%d" % (current.app or "app", os.getpid()),
        "app": current.app,
        "service": current.app,
        "ip": current.pod_ip or "127.0.0.1",
        "tag": current.tag,
        "port": port or 0,
    }


def warmup_report(current: settings.Settings) -> Dict[str, Any]:
    """This instance's warm-up settings as in force here (env may override policies).

    Callers weight us with these, so the ramp they apply is the one our own
    ``/status`` and ``pilotfish_warmup_weight`` show.
    """
    return {
        "enabled": bool(current.warmup_enabled),
        "seconds": float(current.warmup_seconds),
        "curve": float(current.warmup_curve),
        "min_weight_percent": float(current.warmup_min_weight_percent),
    }


class Registration:
    """This instance's entry in the registry, renewed until deregistered."""

    def __init__(
        self,
        transport: Transport,
        identity: Dict[str, Any],
        warmup: Callable[[], Dict[str, Any]] = lambda: warmup_report(settings.current()),
    ) -> None:
        self.transport = transport
        self.identity = identity
        self.warmup = warmup
        self.state = ""
        self.registered_at: Optional[float] = None
        self.lease_seconds: Optional[float] = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def _call(self, path: str, body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        from . import transport
        from .transport import CallFailed

        try:
            status, data = self.transport.request("POST", path, body=body, timeout=transport.CALL_TIMEOUT)
            if status != 200:
                raise CallFailed("HTTP %d %s" % (status, data[:200].decode("utf-8", "replace").strip()))
            answer = transport.decode(data)
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
            answer = self._call("/v1/register", dict(self.identity, state=state, warmup=self.warmup()))
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


class RegistrationCalls(Protocol):
    """What :class:`Registrar` calls: both return False on failure and never raise."""

    def register(self, port: Optional[int] = None) -> bool: ...

    def deregister(self) -> bool: ...


class LazyRegistration:
    """The owner's registration, created from the settings at the first :meth:`register`.

    Fail-open by design: the lifecycle treats an unreachable service as "registered"
    for readiness, and the renewal thread keeps trying in the background.
    """

    def __init__(
        self, settings_fn: Callable[[], settings.Settings], app_port: Callable[[], Optional[int]]
    ) -> None:
        self.settings_fn = settings_fn
        self.app_port = app_port
        self.registration: Optional[Registration] = None
        self._lock = threading.Lock()

    def _ensure(self) -> Optional[Registration]:
        with self._lock:
            if self.registration is None:
                # Here, not at the top: an agent without a config service never loads the HTTP client.
                from . import transport

                current = self.settings_fn()
                found = transport.from_settings(current)
                if found is None:
                    return None
                self.registration = Registration(found, identity(current, self.app_port()))
            return self.registration

    def register(self, port: Optional[int] = None, state: str = "registered") -> bool:
        """Register this instance (or change its state). False on failure; never raises."""
        try:
            registration = self._ensure()
            return registration.register(state, port) if registration is not None else False
        except Exception:
            log.exception_once("config-register", "registration failed")
            return False

    def deregister(self) -> bool:
        try:
            registration = self.registration
            return registration.deregister() if registration is not None else False
        except Exception:
            log.exception_once("config-deregister", "deregistration failed")
            return False


class Registrar:
    """Registration as the lifecycle sees it: bounded in time, and a no-op without a config service.

    ``"local"`` when ``PILOTFISH_CONFIG_URL`` is unset (or there is nothing to call). A call
    that does not answer within ``wait`` seconds is reported as ``"fail-open"`` and left to
    finish (and retry) in the background.
    """

    def __init__(
        self,
        settings_fn: Callable[[], settings.Settings],
        calls: Optional[RegistrationCalls],
        wait: float = REGISTER_WAIT_SECONDS,
    ) -> None:
        self.settings_fn = settings_fn
        self.calls = calls
        self.wait = wait
        self.detail = ""

    def _client(self) -> Optional[RegistrationCalls]:
        if not self.settings_fn().config_url:
            self.detail = "no config service configured (PILOTFISH_CONFIG_URL unset)"
            return None
        if self.calls is None:
            self.detail = "this agent has no config client"
        return self.calls

    def _bounded(self, call: Callable[[], Any], what: str) -> Tuple[bool, bool]:
        """(finished, result) of ``call()`` run on a helper thread for at most ``self.wait`` s."""
        outcome: List[bool] = []

        def run() -> None:
            try:
                outcome.append(bool(call()))
            except Exception:
                log.exception_once("lifecycle-" + what, "%s with the config service failed" % what)
                outcome.append(False)

        thread = threading.Thread(target=run, name="pilotfish-" + what, daemon=True)
        thread.start()
        thread.join(self.wait)
        return (True, outcome[0]) if outcome else (False, False)

    def register(self, port: Optional[int]) -> str:
        client = self._client()
        if client is None:
            return "local"
        finished, ok = self._bounded(lambda: client.register(port), "registration")
        if ok:
            self.detail = "registered with %s" % self.settings_fn().config_url
            return "registered"
        self.detail = (
            "config service did not answer within %gs" % self.wait
            if not finished
            else "config service refused or failed the registration"
        ) + "; failing open (the config client keeps retrying)"
        return "fail-open"

    def deregister(self) -> str:
        client = self._client()
        if client is None:
            return "local"
        finished, ok = self._bounded(client.deregister, "deregistration")
        return "deregistered" if ok else ("failed" if finished else "timed-out")
