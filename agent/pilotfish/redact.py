"""Masks for what the status port shows: it answers anyone who can reach the pod.

``/status`` and ``/metrics`` exist to be read by people and scrapers across the
cluster network, so nothing they show may work as a credential:

- the app probe (``PILOTFISH_APP_PROBE``): every ``httpHeaders`` value is shown
  as ``***`` (an ``Authorization: Bearer ...`` header is the usual reason to
  have them; header *names* stay, they say what the probe sends);
- any URL's userinfo: ``https://user:pass@host/`` is shown as ``https://***@host/``,
  wherever it appears (the config URL, an error message that quotes it);
- query parameters with a credential-looking name (``?token=``, ``&api_key=``,
  ``&sig=``...) keep their name and lose their value;
- the offline token is never shown at all, only whether it is set (see
  :mod:`.status_server`).

The masks run over the whole document just before it is served, so a section
added later by another part of the agent is covered too.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s\"'<>]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&;][^=&#\s\"'<>]*(?:token|secret|passw|pwd|key|auth|sig|credential|session|cookie)"
    r"[^=&#\s\"'<>]*=)[^&#\s\"'<>]+"
)


def text(value: str) -> str:
    """``value`` with URL userinfo and credential-looking query values masked."""
    if "@" in value:
        value = _USERINFO.sub(r"\1" + MASK + "@", value)
    if "=" in value:
        value = _SECRET_QUERY.sub(r"\1" + MASK, value)
    return value


def document(value: Any) -> Any:
    """A copy of a JSON-able value with :func:`text` applied to every string (keys included)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {document(key) if isinstance(key, str) else key: document(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [document(item) for item in value]
    return value


def probe(raw: str) -> str:
    """``PILOTFISH_APP_PROBE`` as shown: the same JSON with every header value masked.

    A value that is not a JSON object is not shown at all: it cannot be masked
    field by field, and it may be a probe with a typo that still holds a token.
    """
    if not raw.strip():
        return raw
    try:
        spec = json.loads(raw)
    except ValueError:
        return "(set, not valid JSON: not shown)"
    if not isinstance(spec, dict):
        return "(set, not a JSON object: not shown)"
    for action in spec.values():
        if isinstance(action, dict) and isinstance(action.get("httpHeaders"), list):
            action["httpHeaders"] = [
                dict(item, value=MASK) if isinstance(item, dict) and "value" in item else item
                for item in action["httpHeaders"]
            ]
    return json.dumps(spec, sort_keys=True)
