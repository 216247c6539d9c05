"""The lifecycle of one container: starting → delaying → registered → ready → offline → drained.

Why a state machine with recorded transition times: "no request lost" is a
claim about *ordering* (registered before warm-up, ready only after the app
answers, offline before SIGTERM), and an operator must be able to see that
ordering on ``/status`` after the fact. Every transition is kept with its wall
and monotonic time.

- ``starting``: the process runs, the app does not listen yet.
- ``delaying``: the app listens — learned from the runtime, which wakes the
  agent on the app's own ``listen()`` (never from a timer) — and
  ``delay_register_seconds`` runs.
- ``registered``: registered with the config service (or no service is
  configured, or it did not answer within :data:`pilotfish.central.registration.REGISTER_WAIT_SECONDS`: fail
  open, the config client keeps retrying). The warm-up clock starts here
  (or, with ``warmup_start=first-request``, at the first consumer-marked
  request, but never before this point).
- ``ready``: every readiness gate holds (this module adds ``app-probe``,
  ``registered``, ``warmed-up`` and ``online``; the runtime adds
  ``app-listening``). Falls back to ``registered`` if a gate fails again.
- ``offline``/``drained``: driven by :mod:`pilotfish.offline`.

This module is the state machine alone: it imports neither the runtime nor the config
client nor the offline code. :mod:`pilotfish.owner` builds it with its collaborators (the
registrar, the app probe, the readiness check) and plugs it into the status server.

Everything runs in the owner process, on one daemon thread; nothing here is on
a request path. The thread ticks every :data:`TICK_SECONDS` while a clock moves
the state (``delaying``, ``registered``). Otherwise it sleeps: a pod that is
ready and idle should not wake up for us (each wake-up of a sleeping thread
costs ~0.2 ms of CPU on a VM, as much as uvicorn's own main-loop tick, and the
gates it would evaluate run with cold caches). In ``starting``, ``offline`` and
``drained`` no clock moves anything, so it waits to be woken (the app's
``listen()`` wakes it at once). In ``ready`` a fall-back to ``registered`` is
recorded whenever anyone evaluates the gates (:meth:`Lifecycle.observe`, plugged
into the status server: kubelet's ``/readiness``, ``/status``, ``/metrics``), so
the thread only ticks every :data:`READY_TICK_SECONDS` as a backstop, or every
:data:`MARKER_TICK_SECONDS` while it waits for a worker's warm-up marker.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from . import log, settings, warmup
from .probe import AppProbe

STARTING, DELAYING, REGISTERED, READY, OFFLINE, DRAINED = (
    "starting",
    "delaying",
    "registered",
    "ready",
    "offline",
    "drained",
)
STATES = (STARTING, DELAYING, REGISTERED, READY, OFFLINE, DRAINED)
TICK_SECONDS = 0.1
"""Tick period in ``delaying`` and ``registered``, where a clock moves the state."""
READY_TICK_SECONDS = 10.0
"""Tick period in ``ready``: a backstop only. Every evaluation of the gates records a
``ready`` → ``registered`` fall-back as it sees it (:meth:`Lifecycle.observe`), and kubelet
evaluates them every ``periodSeconds`` (10 s by default); this bounds how late the fall-back is
recorded in a pod nobody probes."""
MARKER_TICK_SECONDS = 1.0
"""Tick period in ``ready`` while ``warmup_start=first-request`` waits for the first
consumer-marked request of a worker process (a file the owner must look for)."""
CONFIG_WAIT_SECONDS = 5.0
"""How long, from the app's listen(), the registration delay waits for the first answer of the
config service. The policy's ``delay_register_seconds`` is judged only after it (or after this
bound: then cache, env and defaults decide), so a config service that answers late during a
rollout does not make a cold start register at once with the local default of 0 s."""

Gate = Tuple[bool, str]


class Registrar(Protocol):
    """Registration with the config service (:class:`pilotfish.central.registration.Registrar`).

    Outcomes: ``register`` -> ``"registered" | "local" | "fail-open"``; ``deregister`` ->
    ``"deregistered" | "local" | "failed" | "timed-out"``. Its optional ``detail`` attribute
    says why, for ``/status``.
    """

    def register(self, port: Optional[int]) -> str: ...

    def deregister(self) -> str: ...


class Lifecycle:
    """The state machine. Dependencies come in as callables so it runs without the runtime in tests;
    :func:`pilotfish.owner.start_lifecycle` wires the real ones."""

    def __init__(
        self,
        settings_fn: Callable[[], settings.Settings],
        registrar: Registrar,
        probe: AppProbe,
        readiness: Optional[Callable[[], bool]] = None,
        port_fn: Callable[[], Optional[int]] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        config_pending: Callable[[], bool] = lambda: False,
        config_wait: float = CONFIG_WAIT_SECONDS,
    ) -> None:
        self.settings_fn = settings_fn
        self._config_pending = config_pending
        self.config_wait = config_wait
        self.config_settled: Optional[str] = None  # "answered" or "timed out": the delay may be judged
        self.config_settled_after = 0.0
        self.registrar = registrar
        self.probe = probe
        self._readiness = readiness or self.own_gates_pass
        self._port = port_fn
        self._clock = clock
        self._wall = wall
        self._lock = threading.RLock()
        self.state = STARTING
        self.transitions: List[Dict[str, Any]] = []
        self.listening_at: Optional[float] = None
        self.registration = ""  # "", "registering", "registered", "local", "fail-open"
        self.deregistration = ""
        self.offline_reason = ""
        self.drain: Dict[str, Any] = {}
        self.warmup = warmup.WarmupClock(clock, wall)
        self.marker_path: Optional[str] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.register_thread: Optional[threading.Thread] = None
        self._record(STARTING, "agent loaded")

    # -- transitions ----------------------------------------------------------------------

    def _record(self, state: str, why: str, since: Optional[float] = None) -> None:
        """Enter ``state`` now, or at ``since`` (a clock time in the past: when it really began)."""
        self.state = state
        now = self._clock()
        began = now if since is None else min(since, now)
        self.transitions.append(
            {"state": state, "at": self._wall() - (now - began), "monotonic": began, "why": why}
        )
        log.info("lifecycle: %s (%s)" % (state, why))

    def entered(self, state: str) -> Optional[float]:
        """Wall time the state was last entered, or None."""
        for transition in reversed(self.transitions):
            if transition["state"] == state:
                return float(transition["at"])
        return None

    def app_listening(self, at: Optional[float] = None) -> None:
        """The app opened its listening socket (the runtime woke us): the delay starts now, or at
        ``at`` (the clock time of the app's ``listen()``, which the wake learns a moment later);
        ``delaying`` is recorded as entered then, so /status shows the delay the machine applies."""
        with self._lock:
            if self.state != STARTING:
                return
            self.listening_at = self._clock() if at is None else at
            if self._settle_config():
                delay = self.settings_fn().delay_register_seconds
                self._record(DELAYING, "app listening; registering in %gs" % delay, self.listening_at)
            else:
                self._record(
                    DELAYING,
                    "app listening; the registration delay waits for the central config (at most %gs)"
                    % self.config_wait,
                    self.listening_at,
                )
        self._wake.set()  # the thread may be in an idle tick: the delay starts now

    def tick(self) -> None:
        """Advance whatever can advance now. Called by the lifecycle thread (see :meth:`tick_period`)."""
        with self._lock:
            state = self.state
            if (
                state == DELAYING
                and not self.registration
                and self._settle_config()
                and self._delay_elapsed()
            ):
                self.registration = "registering"
                self.register_thread = threading.Thread(
                    target=self._register, name="pilotfish-register", daemon=True
                )
                self.register_thread.start()
            if state in (REGISTERED, READY):
                self._check_marker()
                self.observe(self._ready_now())

    def observe(self, ready: bool, report: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
        """Record ``registered`` → ``ready`` or back when an evaluation of the gates says so.

        Called by the tick and, through the status server, by every other evaluation
        (``report`` is then the status server's, which names the failing gates of every part
        of the agent). Idempotent: a second observer of the same answer records nothing."""
        with self._lock:
            if self.state == REGISTERED and ready:
                self._record(READY, "every readiness gate holds")
            elif self.state == READY and not ready:
                self._record(REGISTERED, "a readiness gate failed: %s" % self._failing(report))

    def _settle_config(self) -> bool:
        """True once the central config is what it will be at registration (see CONFIG_WAIT_SECONDS)."""
        if self.config_settled is not None:
            return True
        try:
            pending = bool(self._config_pending())
        except Exception:
            log.exception_once("lifecycle-config-wait", "cannot tell whether central config has arrived")
            pending = False
        if not pending:
            self.config_settled = "answered"
        elif self.listening_at is not None and self._clock() - self.listening_at >= self.config_wait:
            self.config_settled = "timed out"
            log.info(
                "lifecycle: no central config %gs after the app listened; the registration delay "
                "is judged on the cached, env and default settings" % self.config_wait
            )
        else:
            return False
        self.config_settled_after = (
            self._clock() - self.listening_at if self.listening_at is not None else 0.0
        )
        return True

    def _delay_elapsed(self) -> bool:
        return self.listening_at is not None and (
            self._clock() - self.listening_at >= self.settings_fn().delay_register_seconds
        )

    def _register(self) -> None:
        try:
            outcome = self.registrar.register(self._port())
        except Exception:
            log.exception_once("lifecycle-register", "registration failed; failing open")
            outcome = "fail-open"
        try:
            if not self.probe_ok():
                self.probe.check_now()  # do not wait a whole probe period to become ready
        except Exception:
            log.exception_once("lifecycle-probe-now", "could not check the app probe at registration")
        deregister = False
        with self._lock:
            self.registration = outcome
            if self.state == DELAYING:
                self._record(REGISTERED, "registration: %s" % outcome)
                self.warmup.registered(self.settings_fn().warmup_start)
            elif self.state in (OFFLINE, DRAINED) and outcome == "registered":
                deregister = True  # went offline while we were registering
        if deregister:
            self.deregister()

    def _check_marker(self) -> None:
        if self._awaiting_marker():
            at = warmup.read_marker(self.marker_path)
            if at is not None:
                self.warmup.marked_request(self.settings_fn().warmup_start, at)

    def on_marked_request(self, at: float) -> None:
        """A consumer-marked request in the owner process itself (single-process servers)."""
        self.warmup.marked_request(self.settings_fn().warmup_start, at)

    def go_offline(self, reason: str) -> bool:
        """Enter ``offline`` (once). True if this call did it."""
        with self._lock:
            if self.state in (OFFLINE, DRAINED):
                return False
            self.offline_reason = reason
            self._record(OFFLINE, reason)
            return True

    def deregister(self) -> str:
        try:
            outcome = self.registrar.deregister()
        except Exception:
            log.exception_once("lifecycle-deregister", "deregistration failed")
            outcome = "failed"
        self.deregistration = outcome
        return outcome

    def drained(self, reason: str, detail: Dict[str, Any]) -> None:
        with self._lock:
            if self.state == DRAINED:
                return
            self.drain = dict(detail)
            self._record(DRAINED, reason)

    # -- gates ----------------------------------------------------------------------------

    def probe_ok(self) -> bool:
        return bool(self.probe.gate()[0])

    def gate_registered(self) -> Gate:
        with self._lock:
            state, registration = self.state, self.registration
        if state == STARTING:
            return False, "the app does not listen yet"
        if state == DELAYING:
            if registration == "registering":
                return False, "registering with the config service"
            if self.config_settled is None:
                return False, "waiting for the central config before the registration delay (at most %gs)" % (
                    self.config_wait
                )
            remaining = self.settings_fn().delay_register_seconds - (
                self._clock() - (self.listening_at or 0.0)
            )
            return False, "registration delay: %.1fs left" % max(0.0, remaining)
        detail = getattr(self.registrar, "detail", "")
        return True, "registration: %s%s" % (registration, " (%s)" % detail if detail else "")

    def gate_warmup(self) -> Gate:
        current = self.settings_fn()
        if not current.warmup_before_ready:
            return True, "warm-up is not required before ready"
        if self.warmup.complete(current):
            return True, "warm-up complete"
        elapsed = self.warmup.elapsed()
        if elapsed is None:
            return False, "warm-up has not started (it starts at %s)" % current.warmup_start
        return False, "warming up: %.1f of %gs, weight %.2f" % (
            elapsed,
            current.warmup_seconds,
            self.warmup.weight(current),
        )

    def gate_online(self) -> Gate:
        with self._lock:
            state, reason = self.state, self.offline_reason
        if state in (OFFLINE, DRAINED):
            return False, "offline since %s (%s)" % (warmup.iso_time(self.entered(OFFLINE)), reason)
        return True, "online"

    def gates(self) -> List[Tuple[str, Callable[[], Gate]]]:
        return [
            ("app-probe", self.probe.gate),
            ("registered", self.gate_registered),
            ("warmed-up", self.gate_warmup),
            ("online", self.gate_online),
        ]

    def own_gates_pass(self) -> bool:
        return all(check()[0] for _, check in self.gates())

    def _ready_now(self) -> bool:
        try:
            return bool(self._readiness())
        except Exception:
            log.exception_once("lifecycle-readiness", "could not evaluate readiness")
            return False

    def _failing(self, report: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
        if report is not None:
            failing = [name + ": " + str(gate["reason"]) for name, gate in report.items() if not gate["ok"]]
        else:
            failing = [name + ": " + reason for name, (ok, reason) in self._own_gate_results() if not ok]
        return "; ".join(failing) or "a gate of another part of the agent"

    def _own_gate_results(self) -> List[Tuple[str, Gate]]:
        return [(name, check()) for name, check in self.gates()]

    # -- reporting ------------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        current = self.settings_fn()
        with self._lock:
            transitions = [
                {
                    "state": t["state"],
                    "at": warmup.iso_time(t["at"]),
                    "at_epoch": round(t["at"], 3),
                    "why": t["why"],
                }
                for t in self.transitions
            ]
            section: Dict[str, Any] = {
                "state": self.state,
                "since": warmup.iso_time(self.transitions[-1]["at"]),
                "transitions": transitions,
                "delay_register_seconds": current.delay_register_seconds,
                "central_config_before_delay": self._describe_config_wait(),
                "registration": self.registration or None,
                "registration_detail": getattr(self.registrar, "detail", "") or None,
                "deregistration": self.deregistration or None,
                "warmup": self.warmup.describe(current),
                "app_probe": self.probe.describe(),
            }
            if self.drain:
                section["drain"] = dict(self.drain)
        return section

    def _describe_config_wait(self) -> Optional[str]:
        if self.config_settled is None:
            return "waiting" if self.listening_at is not None else None
        return "%s after %.1fs" % (self.config_settled, self.config_settled_after)

    def metrics(self) -> List[str]:
        current = self.settings_fn()
        with self._lock:
            state = self.state
            entered = {t["state"]: t["at"] for t in self.transitions}
        lines = [
            "# HELP pilotfish_lifecycle_state 1 for the lifecycle state this container is in.",
            "# TYPE pilotfish_lifecycle_state gauge",
        ]
        lines += ['pilotfish_lifecycle_state{state="%s"} %d' % (s, 1 if s == state else 0) for s in STATES]
        lines += [
            "# HELP pilotfish_lifecycle_transition_timestamp_seconds Unix time the state was last entered.",
            "# TYPE pilotfish_lifecycle_transition_timestamp_seconds gauge",
        ]
        lines += [
            'pilotfish_lifecycle_transition_timestamp_seconds{state="%s"} %.3f' % (s, entered[s])
            for s in STATES
            if s in entered
        ]
        lines += [
            "# HELP pilotfish_warmup_weight Share of a warm peer's traffic consumers should send (0..1).",
            "# TYPE pilotfish_warmup_weight gauge",
            "pilotfish_warmup_weight %.4f" % self.warmup.weight(current),
        ]
        return lines

    # -- the thread -----------------------------------------------------------------------

    def tick_period(self) -> Optional[float]:
        """Seconds to the next tick: short while a clock moves the state, long in ``ready`` (see
        :data:`READY_TICK_SECONDS`), None (until woken) where nothing but an event moves it."""
        state = self.state
        if state in (DELAYING, REGISTERED):
            return TICK_SECONDS
        if state == READY:
            return MARKER_TICK_SECONDS if self._awaiting_marker() else READY_TICK_SECONDS
        return None

    def _awaiting_marker(self) -> bool:
        return self.warmup.started_at is None and bool(self.marker_path)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.tick_period())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:
                log.exception_once("lifecycle-tick", "the lifecycle thread hit an error; it keeps going")

    def start_thread(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="pilotfish-lifecycle", daemon=True)
            self.thread.start()

    def stop_thread(self) -> None:
        self._stop.set()
        self._wake.set()
