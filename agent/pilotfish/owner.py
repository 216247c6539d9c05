"""The owner's start-up in one place: central config, lifecycle, registration, graceful offline.

:mod:`pilotfish.runtime` calls :func:`start` once, on the wake thread of the process that
became the container's owner (an ``on_wake`` step), and hands in what it knows about the app
(where it listens, since when) and how to run a step on the thread that listened. Everything
below is wired here, downwards only: nothing this module starts imports it or the runtime back.

::

    runtime --> owner --> central.config        long-poll /v1/config, on-disk cache
                      --> central.registration  register after the delay, renew, deregister
                      --> lifecycle             the state machine and its readiness gates
                      --> offline               drain on /offline or SIGTERM
                      --> probe, warmup, status_server, shared, stats

Order: central config first (its answer may set the lifecycle's delay and warm-up), then the
lifecycle, which waits a bounded time for that first answer before judging the delay.
Each step is guarded: one that fails is logged once, and the others still start.
Without a config service (``PILOTFISH_CONFIG_URL`` unset) the central modules that would
only talk to it (the config client, the HTTP transport) are never imported.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, Optional

from . import lifecycle, log, offline, probe, settings, shared, stats, status_server, warmup
from .central import registration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .central import config as central_config

_lock = threading.Lock()
_config_client: Optional[central_config.ConfigClient] = None
_config_thread: Optional[threading.Thread] = None
_registration: Optional[registration.LazyRegistration] = None
_lifecycle: Optional[lifecycle.Lifecycle] = None
_loaded_at_wall = time.time()


def start(
    app_port: Callable[[], Optional[int]],
    listening_since: Optional[float],
    on_listener_thread: Callable[[Callable[[], Any]], None],
) -> None:
    """The owner's start-up. Never raises.

    ``app_port()``: the app's TCP port (None while unknown); ``listening_since``: the
    ``time.monotonic()`` of its first ``listen()``; ``on_listener_thread(step)``: runs ``step``
    on the thread whose ``listen()`` woke the agent (signal handlers belong there).
    """
    start_central_config()
    start_lifecycle(app_port, listening_since, on_listener_thread)


# -- central config -------------------------------------------------------------------


def start_central_config() -> bool:
    """Load the cache and start the poll thread (idempotent). False when there is no service to poll."""
    global _config_client, _config_thread
    try:
        with _lock:
            if _config_thread is not None and _config_thread.is_alive():
                return True
            current = settings.current()
            if not current.config_url:
                return False
            from .central import config as central_config
            from .central import transport

            found = transport.from_settings(current)
            if found is None:
                return False
            client = central_config.ConfigClient(
                found,
                current.app,
                current.pod_namespace or "default",
                central_config.cache_path(current),
            )
            client.load_cache()
            _config_client = client
            _config_thread = threading.Thread(target=client.run, name="pilotfish-config", daemon=True)
            _config_thread.start()
        try:
            status_server.add_status_section("config_service", central_config_status)
        except Exception:
            log.exception_once("config-status", "cannot show central config in /status")
        return True
    except Exception:
        log.exception_once("config-start", "central config client did not start")
        return False


def central_config_pending() -> bool:
    """True while this process's config client runs and the service has not answered it yet.

    The lifecycle waits on it (at most ``lifecycle.CONFIG_WAIT_SECONDS``) before judging
    ``delay_register_seconds``.
    """
    active = _config_client
    return active is not None and not active.answered.is_set() and not active.stopping.is_set()


def central_config_status() -> Dict[str, Any]:
    """The ``config_service`` section of ``/status``: where central config comes from, and how it goes.

    The merged config and its version are top-level ``config`` / ``config_version``
    of ``/status`` already (the status server reads :mod:`pilotfish.settings`).
    """
    active = _config_client
    if active is None:
        return {"enabled": False}
    return dict(active.status(), enabled=True)


# -- lifecycle, registration, graceful offline ----------------------------------------


def registry(app_port: Callable[[], Optional[int]] = lambda: None) -> registration.LazyRegistration:
    """This process's registration with the config service (created once, on first use)."""
    global _registration
    with _lock:
        if _registration is None:
            _registration = registration.LazyRegistration(settings.current, app_port)
        return _registration


def process_started_wall() -> float:
    """When this process started (Linux /proc), else when the agent's owner module loaded."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            start_ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
        started = boot + start_ticks / float(os.sysconf("SC_CLK_TCK"))
        return started if started <= time.time() else _loaded_at_wall
    except Exception:
        return _loaded_at_wall


def start_lifecycle(
    app_port: Callable[[], Optional[int]],
    listening_since: Optional[float],
    on_listener_thread: Callable[[Callable[[], Any]], None],
) -> Optional[lifecycle.Lifecycle]:
    """Build the lifecycle and plug it in: gates, /status, /metrics, /offline, SIGTERM. Never raises."""
    global _lifecycle
    if _lifecycle is not None:
        return _lifecycle
    try:
        now = settings.current()
        runner = probe.from_settings(now.app_probe, now.pod_ip or "127.0.0.1")
        machine = lifecycle.Lifecycle(
            settings.current,
            registration.Registrar(settings.current, registry(app_port)),
            runner,
            readiness=lambda: status_server.evaluate_gates()[0],
            port_fn=app_port,
            config_pending=central_config_pending,
        )
        # "starting" began when this process started, not now.
        started_wall = process_started_wall()
        machine.transitions[0]["at"] = started_wall
        machine.transitions[0]["monotonic"] = time.monotonic() - (time.time() - started_wall)
        machine.app_listening(listening_since)
        marker = warmup.marker_path()
        warmup.remove_marker(marker)
        machine.marker_path = marker
        warmup.set_owner_sink(machine.on_marked_request, marker)
        for name, check in machine.gates():
            if now.readiness_enabled or name == "online":
                status_server.add_gate(name, check)
        status_server.add_readiness_observer(machine.observe)
        status_server.add_status_section("lifecycle", machine.describe)
        status_server.add_metrics(machine.metrics)
        drain = offline.Drainer(machine, stats.totals, shared.set_offline, settings.current)
        status_server.set_offline_handler(drain.handle)
        offline.use_drainer(drain)
        if now.offline_enabled:
            # Signal handlers belong to the main thread, and the wake runs on the agent's own.
            on_listener_thread(lambda: offline.install_sigterm(drain))
        _lifecycle = machine
        runner.start()
        machine.start_thread()
        _remove_marker_at_exit(marker)
        return machine
    except Exception:
        log.exception_once(
            "lifecycle-start", "lifecycle did not start; readiness gates are the runtime's only"
        )
        return None


def _remove_marker_at_exit(marker: Optional[str]) -> None:
    import atexit

    pid = os.getpid()

    def cleanup() -> None:
        if os.getpid() == pid:
            warmup.remove_marker(marker)

    atexit.register(cleanup)


def _after_fork_in_child() -> None:
    # Threads do not survive fork; a worker must not believe the owner's poller runs here.
    global _config_client, _config_thread, _registration, _lock
    _config_client, _config_thread, _registration, _lock = None, None, None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
