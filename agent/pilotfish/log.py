"""The agent's own logging: one line to stderr, prefixed ``pilotfish:``.

Why not the ``logging`` module: importing it costs milliseconds at interpreter
start-up, and configuring it could change how the app's own log records look.
The agent writes its few lines straight to stderr instead, filtered by
``PILOTFISH_LOG_LEVEL`` (``debug`` | ``info`` | ``warning`` | ``error``,
default ``warning``), and every failure path logs through :func:`once` so a
broken patch cannot flood the app's logs.
"""

import _thread  # not threading: it is not loaded yet at start-up
import os
import sys

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "off": 100}
_DEFAULT_LEVEL = "warning"

_seen: "set[str]" = set()
_seen_lock = _thread.allocate_lock()
_threshold: "int | None" = None

ENV_WARNING_KEY = "setting:env:%s:%r"
"""The :func:`once` key of the warning about a bad ``PILOTFISH_*`` env value (field name, raw value)."""


def _level_from_env() -> int:
    raw = os.environ.get("PILOTFISH_LOG_LEVEL", _DEFAULT_LEVEL)
    level = raw.strip().lower()
    if level in LEVELS:
        return LEVELS[level]
    # Worded, and keyed, as pilotfish.settings words a bad value: when the settings are
    # read later (at wake-up) they find the key seen and stay quiet, so it is said once.
    with _seen_lock:
        first = ENV_WARNING_KEY % ("log_level", raw) not in _seen
        _seen.add(ENV_WARNING_KEY % ("log_level", raw))
    if first:
        _write(
            "warning",
            "PILOTFISH_LOG_LEVEL=%r is invalid (expected one of %s); using %r instead"
            % (raw, "|".join(sorted(LEVELS, key=LEVELS.__getitem__)), _DEFAULT_LEVEL),
        )
    return LEVELS[_DEFAULT_LEVEL]


def threshold() -> int:
    """The numeric level below which messages are dropped (read once from env)."""
    global _threshold
    if _threshold is None:
        _threshold = _level_from_env()
    return _threshold


def set_level(name: str) -> None:
    """Change the level at run time (central config may set ``log_level``)."""
    global _threshold
    if name in LEVELS:
        _threshold = LEVELS[name]


def _write(level: str, message: str) -> None:
    try:
        from . import redact  # here, not at import: nothing to pay at start-up when nothing is logged

        message = redact.text(message)  # a config URL's password has no place in the app's logs
    except Exception:
        pass
    try:
        sys.stderr.write("pilotfish: %s: %s\n" % (level, message))
        sys.stderr.flush()
    except Exception:  # stderr closed or broken: nothing sensible left to do
        pass


def log(level: str, message: str) -> None:
    if LEVELS.get(level, 0) >= threshold():
        _write(level, message)


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warning(message: str) -> None:
    log("warning", message)


def error(message: str) -> None:
    log("error", message)


def once(key: str, level: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process, then never again."""
    with _seen_lock:
        if key in _seen:
            return
        _seen.add(key)
    log(level, message)


def exception_once(key: str, message: str) -> None:
    """Log the exception being handled, once per ``key``, with a short reason.

    The traceback is added only at ``debug`` level: users see one line saying
    what was disabled; developers can ask for the rest.
    """
    exc = sys.exc_info()[1]
    detail = "%s: %s" % (type(exc).__name__, exc) if exc is not None else ""
    once(key, "warning", "%s (%s)" % (message, detail) if detail else message)
    if threshold() <= LEVELS["debug"] and exc is not None:
        import traceback

        _write("debug", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def reset_for_fork() -> None:
    """Give a forked child a fresh lock (the parent's may have been held)."""
    global _seen_lock
    _seen_lock = _thread.allocate_lock()
