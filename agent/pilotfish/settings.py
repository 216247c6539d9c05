"""Typed agent settings: built-in defaults < central config < the pod's explicit env.

Every user-facing toggle (docs/reference.md) is one :class:`Field` in :data:`FIELDS`. The
env var name is ``PILOTFISH_`` + the field name in upper case; central config
uses the field name itself as its key. A value that does not parse is never
fatal: the agent warns once, naming the variable and the value it kept, and
goes on with the next source down.

Other parts of the agent read :func:`current` (a cheap attribute access on an
immutable snapshot) and call :func:`subscribe` to hear about live changes.

A new setting is two lines: its :class:`Field` in :data:`FIELDS` and its typed attribute in
:class:`Settings`, at the same place in both (tests/agent/test_settings.py checks they agree),
plus its row in docs/reference.md (tests/test_reference_doc.py checks that one).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from . import log

Parser = Callable[[Any], Any]


class InvalidValue(ValueError):
    """A setting's raw value could not be turned into its type."""


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on", "enabled"):
        return True
    if text in ("0", "false", "no", "off", "disabled"):
        return False
    raise InvalidValue("expected true or false")


def _number(low: float, high: float) -> Parser:
    def parse(raw: Any) -> float:
        if isinstance(raw, bool):
            raise InvalidValue("expected a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidValue("expected a number") from None
        if not (low <= value <= high):
            raise InvalidValue("expected a number from %g to %g" % (low, high))
        return value

    return parse


def _port(raw: Any) -> int:
    value = _number(1, 65535)(raw)
    if value != int(value):
        raise InvalidValue("expected a whole port number")
    return int(value)


def _choice(*options: str) -> Parser:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in options:
            raise InvalidValue("expected one of %s" % "|".join(options))
        return text

    return parse


def _text(raw: Any) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise InvalidValue("expected a string")
    return str(raw).strip()


def _items(raw: Any) -> Tuple[str, ...]:
    """A comma-separated env value or a JSON list from central config, as written."""
    if isinstance(raw, (list, tuple)):
        items = [str(item) for item in raw]
    elif isinstance(raw, str):
        items = raw.split(",")
    else:
        raise InvalidValue("expected a comma-separated list")
    return tuple(item.strip() for item in items if item.strip())


def _list(raw: Any) -> Tuple[str, ...]:
    """A list of names that compare case-insensitively (header names): lower-cased."""
    return tuple(item.lower() for item in _items(raw))


def _path_list(raw: Any) -> Tuple[str, ...]:
    """URL paths, which are case-sensitive: kept as written (``/Healthz`` is not ``/healthz``)."""
    items = _items(raw)
    for item in items:
        if not item.startswith("/"):
            raise InvalidValue("paths must start with '/' (got %r)" % item)
    return items


class Field:
    """One setting: its name, parser, default, and whether central config may set it."""

    __slots__ = ("name", "parse", "default", "central", "doc")

    def __init__(self, name: str, parse: Parser, default: Any, doc: str, central: bool = True) -> None:
        self.name = name
        self.parse = parse
        self.default = default
        self.central = central
        self.doc = doc

    @property
    def env(self) -> str:
        return "PILOTFISH_" + self.name.upper()


FIELDS: Tuple[Field, ...] = (
    Field("enabled", _bool, True, "kill switch: false = the agent does nothing", central=False),
    Field("warmup_enabled", _bool, True, "small-traffic warm-up after registration"),
    Field("warmup_seconds", _number(0, 86400), 120.0, "warm-up duration T"),
    Field("warmup_curve", _number(0.1, 10), 2.0, "warm-up weight exponent: (t/T)^curve"),
    Field("warmup_min_weight_percent", _number(0, 100), 10.0, "weight floor during warm-up"),
    Field("warmup_before_ready", _bool, False, "hold readiness until warm-up completes"),
    Field(
        "warmup_start",
        _choice("registration", "first-request"),
        "registration",
        "when the warm-up clock starts: at registration, or at the first request "
        "carrying the pilotfish consumer marker",
    ),
    Field("delay_register_seconds", _number(0, 3600), 0.0, "wait after the app listens before registering"),
    Field("readiness_enabled", _bool, True, "serve readiness gates on the status port"),
    Field("offline_enabled", _bool, True, "graceful offline on preStop / SIGTERM"),
    Field("offline_quiet_seconds", _number(0, 600), 3.0, "drained = no request for this long"),
    Field("offline_max_wait_seconds", _number(0, 3600), 30.0, "give up draining after this long"),
    Field("tag_headers", _list, ("x-pilotfish-tag",), "request headers that carry the lane tag"),
    Field("baggage_key", _text, "pilotfish-tag", "W3C baggage entry that carries the lane tag"),
    Field("routing_enabled", _bool, True, "consumer-side lane and warm-up routing"),
    Field(
        "lane_mode",
        _choice("permissive", "strict"),
        "permissive",
        "no instance in the lane: fall back to baseline, or fail",
    ),
    Field("ignore_paths", _path_list, (), "paths (prefixes) that are not traffic, e.g. /healthz"),
    Field("status_host", _text, "0.0.0.0", "status server address", central=False),
    Field("status_port", _port, 55199, "status server port", central=False),
    Field("log_level", _choice("debug", "info", "warning", "error", "off"), "warning", "agent log level"),
    # Injected by the webhook (or set by hand outside a cluster); never central.
    Field("config_url", _text, "", "central config service base URL", central=False),
    Field("config_ca", _text, "", "CA bundle for the config service", central=False),
    Field("token_file", _text, "", "projected service-account token file", central=False),
    Field("app", _text, "", "app name", central=False),
    Field("tag", _text, "", "this instance's lane tag; empty = baseline", central=False),
    Field("pod_name", _text, "", "downward API", central=False),
    Field("pod_namespace", _text, "", "downward API", central=False),
    Field("pod_ip", _text, "", "downward API", central=False),
    Field("offline_token", _text, "", "token the preStop hook must present to /offline", central=False),
    Field("app_probe", _text, "", "the app's original readiness probe (JSON)", central=False),
    Field("cache_dir", _text, "", "where the last good central config is cached", central=False),
    Field(
        "state_dir",
        _text,
        "",
        "a writable directory for the agent's files (config cache); default the temp dir",
        central=False,
    ),
)

FIELDS_BY_NAME: Dict[str, Field] = {field.name: field for field in FIELDS}


FIELD_NAMES: Tuple[str, ...] = tuple(field.name for field in FIELDS)


class Settings:
    """An immutable snapshot of every setting, plus where each value came from.

    The annotations below are the typed declaration of :data:`FIELDS`: one attribute per
    field, in the same order, typed as its parser returns (tests/agent/test_settings.py fails
    when the two drift apart). Each is a slot, so reading a setting is a plain attribute read.
    """

    enabled: bool
    warmup_enabled: bool
    warmup_seconds: float
    warmup_curve: float
    warmup_min_weight_percent: float
    warmup_before_ready: bool
    warmup_start: str
    delay_register_seconds: float
    readiness_enabled: bool
    offline_enabled: bool
    offline_quiet_seconds: float
    offline_max_wait_seconds: float
    tag_headers: Tuple[str, ...]
    baggage_key: str
    routing_enabled: bool
    lane_mode: str
    ignore_paths: Tuple[str, ...]
    status_host: str
    status_port: int
    log_level: str
    config_url: str
    config_ca: str
    token_file: str
    app: str
    tag: str
    pod_name: str
    pod_namespace: str
    pod_ip: str
    offline_token: str
    app_probe: str
    cache_dir: str
    state_dir: str

    sources: Dict[str, str]
    central_version: str
    central_extra: Dict[str, Any]

    __slots__ = FIELD_NAMES + ("sources", "central_version", "central_extra")

    def __init__(
        self,
        values: Mapping[str, Any],
        sources: Dict[str, str],
        central_version: str = "",
        central_extra: Optional[Dict[str, Any]] = None,
    ) -> None:
        """``values`` holds one value per field (what :func:`build` makes)."""
        assign = object.__setattr__
        for name in FIELD_NAMES:
            assign(self, name, values[name])
        assign(self, "sources", sources)
        assign(self, "central_version", central_version)
        assign(self, "central_extra", central_extra or {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are immutable; use settings.apply_central()")

    def as_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_NAMES}


def _parse(field: Field, raw: Any, origin: str) -> Tuple[bool, Any]:
    try:
        return True, field.parse(raw)
    except InvalidValue as problem:
        log.once(
            log.ENV_WARNING_KEY % (field.name, raw)
            if origin == "env"
            else "setting:%s:%s:%r" % (origin, field.name, raw),
            "warning",
            "%s=%r is invalid (%s); using %r instead"
            % (
                field.env if origin == "env" else "central config %r" % field.name,
                raw,
                problem,
                field.default if origin == "env" else "the previous value",
            ),
        )
        return False, None


def read_env(environ: Mapping[str, str]) -> Dict[str, Any]:
    """The explicitly set, valid env values (bad ones warn once and are left out)."""
    explicit: Dict[str, Any] = {}
    for field in FIELDS:
        raw = environ.get(field.env)
        if raw is None or (raw.strip() == "" and field.parse is not _text):
            continue
        ok, value = _parse(field, raw, "env")
        if ok:
            explicit[field.name] = value
    return explicit


def build(
    env_values: Mapping[str, Any],
    central: Mapping[str, Any],
    central_version: str = "",
    previous: Optional[Settings] = None,
) -> Settings:
    """Merge the three sources field by field: env > central > default.

    An invalid central value keeps what the previous snapshot had for that field
    (the last good value), not the default.
    """
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    extra = {k: v for k, v in central.items() if k not in FIELDS_BY_NAME}
    for field in FIELDS:
        if field.name in env_values:
            values[field.name], sources[field.name] = env_values[field.name], "env"
            continue
        if field.central and field.name in central:
            ok, value = _parse(field, central[field.name], "central")
            if ok:
                values[field.name], sources[field.name] = value, "central"
                continue
            if previous is not None and previous.sources.get(field.name) == "central":
                values[field.name], sources[field.name] = getattr(previous, field.name), "central"
                continue
        values[field.name], sources[field.name] = field.default, "default"
    return Settings(values, sources, central_version, extra)


Listener = Callable[[Settings, Settings], None]

_lock = threading.Lock()
_env_values: Dict[str, Any] = {}
_current: Optional[Settings] = None
_listeners: List[Listener] = []


def load(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """(Re)read the environment and rebuild the snapshot with no central config."""
    with _lock:
        return _reload(environ)


def _reload(environ: Optional[Mapping[str, str]]) -> Settings:
    """:func:`load`, for a caller that holds ``_lock``."""
    global _current, _env_values
    _env_values = read_env(os.environ if environ is None else environ)
    snapshot = _current = build(_env_values, {})
    return snapshot


def current() -> Settings:
    """The settings in force now."""
    snapshot = _current
    if snapshot is None:
        snapshot = load()
    return snapshot


def apply_central(config: Mapping[str, Any], version: str) -> Settings:
    """Merge a new central config and tell subscribers what changed.

    Unknown keys (lanes, routing tables, ...) are kept in ``central_extra`` for
    the parts of the agent that understand them.
    """
    global _current
    with _lock:
        # Not current(): on a first call it would load() and take the lock held here.
        old = _current if _current is not None else _reload(None)
        new = build(_env_values, config, version, previous=old)
        _current = new
    _notify(old, new)
    return new


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener(old, new)`` after every change; returns an unsubscribe function."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def _notify(old: Settings, new: Settings) -> None:
    for listener in list(_listeners):
        try:
            listener(old, new)
        except Exception:
            log.exception_once("settings-listener:%r" % (listener,), "a settings listener failed")


def changed(old: Settings, new: Settings, names: Iterable[str]) -> bool:
    """True when any of ``names`` differs between two snapshots."""
    return any(getattr(old, name) != getattr(new, name) for name in names)
