"""Graceful offline: stop being chosen, keep serving, return when nobody is talking to us.

Why not simply "refuse new requests": in Kubernetes, endpoint removal reaches
kube-proxy, ingress controllers and consumers' caches *after* the pod starts
terminating (the control plane and the pod's shutdown start at the same
time, and kube-proxy syncs its rules at most once a second by default).
Requests keep arriving for a second or more, and keep-alive connections keep delivering them for as long as
they stay open. So offline means:

1. readiness fails at once (the ``online`` gate) and we deregister;
2. the per-container offline flag is set, so every response from every worker
   carries ``Connection: close`` and ``X-Pilotfish-Offline: 1`` — keep-alive
   clients (agent or not) reconnect elsewhere, pilotfish consumers evict us;
3. requests that still arrive are served, never refused;
4. drained = nothing in flight and no request for ``offline_quiet_seconds``
   (the quiet window never starts before offline began), or
   ``offline_max_wait_seconds`` passed. Streaming responses count as in flight
   until their last byte, so they finish.
5. gRPC servers then stop accepting calls: ``server.stop(grace)``.

Two triggers: ``/offline`` (the injected preStop; the status server checks the
token and calls :meth:`Drainer.handle`) and SIGTERM, for pods whose own preStop
was kept (or that have none). The SIGTERM handler is ours only in the owner
process: it starts the same drain without blocking the app's main thread, then
hands SIGTERM on — in the main thread, as the app expects — to whatever handler
the app has (gunicorn's arbiter, uvicorn's ``handle_exit``, the default action
of a plain script). When ``/offline`` already drained, SIGTERM passes straight
through; a second SIGTERM during a SIGTERM-started drain passes through at once
(an impatient operator wins).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from . import log, settings

POLL_SECONDS = 0.05


class Lifecycle(Protocol):
    """What a drain records (:class:`pilotfish.lifecycle.Lifecycle`)."""

    def go_offline(self, reason: str) -> bool: ...

    def deregister(self) -> str: ...

    def drained(self, reason: str, detail: Dict[str, Any]) -> None: ...


class Traffic(Protocol):
    """This container's request counts (:class:`pilotfish.stats.Totals`)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def requests_total(self) -> int: ...


class GrpcServer(Protocol):
    """A started ``grpc.Server``: ``stop(grace)`` returns an event to wait on."""

    def stop(self, grace: Optional[float]) -> Any: ...


class Drainer:
    """Runs one graceful offline: offline flag, deregistration, the drain wait, gRPC stop."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        totals_fn: Callable[[], Traffic],
        set_offline_fn: Callable[[bool], None],
        settings_fn: Callable[[], settings.Settings],
        clock: Callable[[], float] = time.monotonic,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.lifecycle = lifecycle
        self.totals_fn = totals_fn
        self.set_offline_fn = set_offline_fn
        self.settings_fn = settings_fn
        self.clock = clock
        self.poll = poll
        self._lock = threading.Lock()
        self.started_at: Optional[float] = None
        self.trigger = ""
        self.done = threading.Event()
        self.result: Dict[str, Any] = {}
        self.grpc_servers: List[GrpcServer] = []

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def start(self, trigger: str) -> bool:
        """Go offline and start draining (once). True if this call started it. Never blocks."""
        with self._lock:
            if self.started_at is not None:
                return False
            self.started_at = self.clock()
            self.trigger = trigger
        try:
            self.set_offline_fn(True)
        except Exception:
            log.exception_once("offline-flag", "could not set the offline flag; responses keep keep-alive")
        try:
            self.lifecycle.go_offline("graceful offline (%s)" % trigger)
        except Exception:
            log.exception_once("offline-lifecycle", "could not record the offline state")
        threading.Thread(target=self._deregister, name="pilotfish-deregister", daemon=True).start()
        threading.Thread(target=self._drain, name="pilotfish-drain", daemon=True).start()
        log.info("offline: started by %s" % trigger)
        return True

    def _deregister(self) -> None:
        try:
            self.lifecycle.deregister()
        except Exception:
            log.exception_once("offline-deregister", "deregistration failed")

    def _drain(self) -> None:
        started = self.started_at or self.clock()
        reason, totals = "max-wait", None
        try:
            first = self.totals_fn()
            requests_before = seen = int(getattr(first, "requests_total", 0))
            last = started  # requests still arrive after offline starts: endpoints lag
            while True:
                current = self.settings_fn()
                quiet, max_wait = current.offline_quiet_seconds, current.offline_max_wait_seconds
                totals = self.totals_fn()
                now = self.clock()
                # The hot path keeps no time stamps: a request arrived if the count moved
                # since the last poll, at most one poll interval before ``now``.
                count = int(getattr(totals, "requests_total", 0))
                if count != seen:
                    seen, last = count, now
                if int(getattr(totals, "in_flight", 0)) <= 0 and now - last >= quiet:
                    reason = "quiet"
                    break
                if now - started >= max_wait:
                    break
                time.sleep(self.poll)
            if self.trigger != "SIGTERM":
                # After /offline (the preStop), stop(grace) sends gRPC clients a GOAWAY so
                # that they reconnect elsewhere before kubelet's SIGTERM. After a SIGTERM,
                # the signal is handed on next and does what it does without the agent
                # (a stop here would let a plain script return and exit 0 instead).
                self._stop_grpc(max(1.0, max_wait - (self.clock() - started)))
            self.result = {
                "drained": True,
                "reason": reason,
                "trigger": self.trigger,
                "seconds": round(self.clock() - started, 3),
                "in_flight_left": int(getattr(totals, "in_flight", 0)),
                "requests_during_offline": int(getattr(totals, "requests_total", 0)) - requests_before,
            }
        except Exception:
            log.exception_once("offline-drain", "the drain loop failed; reporting drained")
            self.result = {"drained": True, "reason": "error", "trigger": self.trigger}
        try:
            self.lifecycle.drained(
                "in-flight 0 and quiet for %gs" % self.settings_fn().offline_quiet_seconds
                if reason == "quiet"
                else "offline_max_wait_seconds reached",
                self.result,
            )
        except Exception:
            log.exception_once("offline-drained", "could not record the drained state")
        self.done.set()
        log.info("offline: drained (%s)" % self.result)

    def add_grpc_server(self, server: GrpcServer) -> None:
        """A started gRPC server: stopped with ``stop(grace)`` once a /offline drain is quiet."""
        if server not in self.grpc_servers:
            self.grpc_servers.append(server)

    def _stop_grpc(self, grace: float) -> None:
        events = []
        for server in list(self.grpc_servers):
            try:
                events.append(server.stop(grace))
            except Exception:
                log.exception_once("offline-grpc-stop", "could not stop a gRPC server gracefully")
        deadline = self.clock() + grace
        for event in events:
            wait = getattr(event, "wait", None)
            if wait is not None:
                wait(max(0.0, deadline - self.clock()))

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.done.wait(timeout)

    def handle(self, wait: bool) -> Tuple[int, Dict[str, Any]]:
        """What ``/offline`` does once the caller is authorised (the preStop hook)."""
        current = self.settings_fn()
        if not current.offline_enabled:
            return 200, {
                "offline": False,
                "note": "graceful offline is disabled (PILOTFISH_OFFLINE_ENABLED=false)",
            }
        self.start("/offline")
        if not wait:
            return 202, {"offline": True, "drained": self.done.is_set(), "trigger": self.trigger}
        # Bounded even if the drain thread died: max wait plus a margin for deregistration.
        self.done.wait(current.offline_max_wait_seconds + 5.0)
        body: Dict[str, Any] = {"offline": True, "drained": self.done.is_set(), "trigger": self.trigger}
        body.update(self.result)
        return 200, body


# -- SIGTERM --------------------------------------------------------------------------------


class SigtermRelay:
    """Owns SIGTERM in the owner process and keeps the app's own handler to hand the signal on to.

    ``signal.signal``/``signal.getsignal`` are wrapped so that an app (or server)
    that installs its SIGTERM handler *after* the agent woke — the
    ``uvicorn --workers`` supervisor does — replaces the handler we hand on to,
    not ours. In any other process (forked workers inherit the wrapper) they
    behave exactly as the originals.
    """

    def __init__(self, drainer: Drainer) -> None:
        self.drainer = drainer
        self.owner_pid = os.getpid()
        self.app_handler: Any = signal.SIG_DFL
        self.intercepting = False
        self.handed_on = False
        self._hand_on_requested = False
        self._original_signal = signal.signal
        self._original_getsignal = signal.getsignal

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            log.once(
                "sigterm-thread",
                "warning",
                "the app listens from a non-main thread; SIGTERM is left to the app "
                "(graceful offline still works through /offline)",
            )
            return False
        current = self._original_getsignal(signal.SIGTERM)
        if current is signal.SIG_IGN:
            log.once("sigterm-ignored", "info", "the app ignores SIGTERM; the agent leaves it so")
            return False
        if _is_asyncio_handler(current):
            _warn_asyncio()
            return False
        self.app_handler = signal.SIG_DFL if current is None else current
        self._original_signal(signal.SIGTERM, self.on_sigterm)
        self.intercepting = True
        signal.signal = self._signal  # type: ignore[assignment]
        signal.getsignal = self._getsignal  # type: ignore[assignment]
        return True

    # The wrappers the app sees.
    def _signal(self, signum: Any, handler: Any) -> Any:
        if signum == signal.SIGTERM and self.intercepting and os.getpid() == self.owner_pid:
            if threading.current_thread() is not threading.main_thread():
                raise ValueError("signal only works in main thread of the main interpreter")
            if _is_asyncio_handler(handler):
                self.intercepting = False  # see _is_asyncio_handler: step aside entirely
                _warn_asyncio()
                return self._original_signal(signum, handler)
            previous, self.app_handler = self.app_handler, handler
            return previous
        return self._original_signal(signum, handler)

    def _getsignal(self, signum: Any) -> Any:
        if signum == signal.SIGTERM and self.intercepting and os.getpid() == self.owner_pid:
            return self.app_handler
        return self._original_getsignal(signum)

    # The handler.
    def on_sigterm(self, signum: int, frame: Any) -> None:
        """The SIGTERM handler (ours, in the owner): start the drain, hand the signal on after it."""
        try:
            if self._hand_on_requested or self.drainer.done.is_set():
                self._hand_on(signum, frame)
                return
            if self.drainer.started and self.drainer.trigger == "SIGTERM":
                log.info("offline: second SIGTERM during the drain; handing it on now")
                self._hand_on(signum, frame)
                return
            self.drainer.start("SIGTERM")
            threading.Thread(target=self._after_drain, name="pilotfish-sigterm", daemon=True).start()
        except Exception:
            log.exception_once("sigterm", "SIGTERM handling failed; handing the signal on")
            self._hand_on(signum, frame)

    def _after_drain(self) -> None:
        current = self.drainer.settings_fn()
        self.drainer.wait(current.offline_max_wait_seconds + 5.0)
        self._hand_on_requested = True
        try:
            # Deliver to the main thread: its blocking call is interrupted and the
            # handler (ours, now handing on) runs there, as the app's handler expects.
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        except Exception:
            os.kill(os.getpid(), signal.SIGTERM)

    def _hand_on(self, signum: int, frame: Any) -> None:
        if self.handed_on:
            return
        self.handed_on = True
        self.intercepting = False
        # The app is going down now, and may do so by the signal's default action
        # (uvicorn re-raises SIGTERM after restoring SIG_DFL), which runs no atexit.
        _remove_shared_files()
        handler = self.app_handler
        log.info("offline: handing SIGTERM on to the app (%r)" % (handler,))
        self._original_signal(signal.SIGTERM, handler)
        if handler is signal.SIG_IGN:
            return
        if handler is signal.SIG_DFL or handler is None or not callable(handler):
            self._original_signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        handler(signum, frame)


def _remove_shared_files() -> None:
    try:
        from . import shared

        shared.remove_files()
    except Exception:
        log.exception_once("shm-remove", "could not remove the shared-memory files")


def _is_asyncio_handler(handler: Any) -> bool:
    """asyncio's ``loop.add_signal_handler`` (hypercorn uses it) hears signals through the loop's
    wakeup fd whatever Python-level handler is set, so SIGTERM cannot be held back there."""
    return getattr(handler, "__name__", "") == "_sighandler_noop"


def _warn_asyncio() -> None:
    log.once(
        "sigterm-asyncio",
        "warning",
        "the app handles SIGTERM through asyncio's add_signal_handler; SIGTERM is left to the app "
        "(graceful offline works through the /offline preStop)",
    )


_relay: Optional[SigtermRelay] = None


def install_sigterm(drainer: Drainer) -> Optional[SigtermRelay]:
    """Take over SIGTERM in this (owner) process. Never raises; None when it cannot."""
    global _relay
    if _relay is not None:
        return _relay
    try:
        relay = SigtermRelay(drainer)
        if relay.install():
            _relay = relay
            return relay
    except Exception:
        log.exception_once("sigterm-install", "could not take over SIGTERM; graceful offline needs /offline")
    return None


# -- gRPC servers, which may start before the owner's drainer exists -------------------------

_drainer: Optional[Drainer] = None
_grpc_servers_before_drainer: List[GrpcServer] = []
_grpc_lock = threading.Lock()


def use_drainer(drain: Drainer) -> None:
    """The owner's start-up: ``drain`` is this process's graceful offline; gRPC servers that
    started before it are handed to it."""
    global _drainer
    with _grpc_lock:
        _drainer = drain
        for server in _grpc_servers_before_drainer:
            drain.add_grpc_server(server)
        del _grpc_servers_before_drainer[:]


def add_grpc_server(server: GrpcServer) -> None:
    """For the gRPC integration: call with every started ``grpc.Server`` (owner process). Never raises."""
    try:
        with _grpc_lock:
            if _drainer is not None:
                _drainer.add_grpc_server(server)
            else:
                _grpc_servers_before_drainer.append(server)
    except Exception:
        log.exception_once("offline-grpc-add", "could not register a gRPC server for graceful offline")
