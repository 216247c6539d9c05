"""What every inbound wrapper needs per request, kept to a few attribute reads.

- :func:`classify`: kubelet probes (``User-Agent: kube-probe/...``) and the
  configured ``ignore_paths`` are not traffic: they are counted apart and never
  start or feed the warm-up clock (probes arrive before the instance is
  registered and would run the ramp out before real traffic comes).
- :func:`slot`: this process's shared-memory slot (claimed lazily, so a worker
  forked or spawned after wake-up finds its own).
- :data:`tags`: the tag extraction functions of :mod:`pilotfish.tags`, bound at
  import; ``None`` when tags are unavailable, so the wrapper skips them.
"""

from __future__ import annotations

from typing import Any, Callable, FrozenSet, Optional, Tuple

from .. import PACKAGE, log, settings, shared

TRAFFIC = 0
PROBE = 1
IGNORED = 2

PROBE_AGENT = "kube-probe/"
PROBE_AGENT_BYTES = b"kube-probe/"
OFFLINE_HEADER = "X-Pilotfish-Offline"
CONSUMER_HEADER = "X-Pilotfish-Consumer"

_ignore_exact: FrozenSet[str] = frozenset()
_ignore_prefixes: Tuple[str, ...] = ()
ignore_paths_set = False
"""Whether any ``ignore_paths`` are configured: wrappers skip the path check when not."""


def _load_ignore_paths(current: settings.Settings) -> None:
    global _ignore_exact, _ignore_prefixes, ignore_paths_set
    paths = tuple(current.ignore_paths)
    _ignore_exact = frozenset(paths)
    _ignore_prefixes = tuple(p.rstrip("/") + "/" for p in paths)
    ignore_paths_set = bool(paths)


def _on_settings(old: settings.Settings, new: settings.Settings) -> None:
    if old.ignore_paths != new.ignore_paths:
        _load_ignore_paths(new)


_load_ignore_paths(settings.current())
settings.subscribe(_on_settings)


def classify(path: str, user_agent: Optional[str]) -> int:
    """TRAFFIC, PROBE or IGNORED for a request path and User-Agent."""
    if user_agent is not None and user_agent.startswith(PROBE_AGENT):
        return PROBE
    return classify_path(path) if _ignore_exact else TRAFFIC


def classify_path(path: str) -> int:
    """TRAFFIC or IGNORED for a request path (the User-Agent already checked)."""
    if _ignore_exact and (path in _ignore_exact or path.startswith(_ignore_prefixes)):
        return IGNORED
    return TRAFFIC


def slot() -> Optional[shared.Slot]:
    current = shared.process_slot
    if current is None and shared.process_segment is not None:
        try:
            current = shared.claim()
        except Exception:
            log.exception_once("claim-slot", "could not claim a shared-memory slot; requests not counted")
    return current


def _optional(module: str, name: str) -> Optional[Callable[..., Any]]:
    try:
        imported = __import__(module, fromlist=[name])
        found: Callable[..., Any] = getattr(imported, name)
        return found
    except Exception:
        return None


# Opt-in warm-up start (``warmup_start=first-request``): the first request a
# pilotfish consumer marks with X-Pilotfish-Consumer starts the clock.
on_marked_request = _optional(PACKAGE + ".warmup", "on_marked_request")
CONSUMER_ENVIRON_KEY = "HTTP_X_PILOTFISH_CONSUMER"
CONSUMER_HEADER_BYTES = b"x-pilotfish-consumer"

tag_from_environ = _optional(PACKAGE + ".tags.inbound", "tag_from_environ")
tags_inbound: Any = _optional(PACKAGE + ".tags", "inbound")  # its ``_state``: the compiled tag settings
tag_from_asgi_headers = _optional(PACKAGE + ".tags.inbound", "tag_from_asgi_headers")
tag_from_grpc_metadata = _optional(PACKAGE + ".tags.inbound", "tag_from_grpc_metadata")
_tag_var: Any = _optional(PACKAGE + ".tags.context", "CURRENT_TAG")
set_tag: Optional[Callable[[Optional[str]], Any]] = _tag_var.set if _tag_var is not None else None
get_tag: Optional[Callable[[], Optional[str]]] = _tag_var.get if _tag_var is not None else None
