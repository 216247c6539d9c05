"""JSON on the admission hot path: orjson when it can, the standard library when it cannot.

orjson parses and serialises an AdmissionReview several times faster than ``json``, but
refuses integers beyond 64 bits, which a pod can legally carry in fields we do not know.
Falling back keeps such pods admissible (round-trip of unknown fields).
"""

from __future__ import annotations

import json
from typing import Any, Union

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a pinned dependency of the webhook
    orjson = None  # type: ignore[assignment]


def loads(data: Union[bytes, bytearray, str]) -> Any:
    """Parse JSON; raises ``ValueError`` (with the position) on invalid input."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if "Integer" not in str(exc) and "integer" not in str(exc):
                raise ValueError(str(exc)) from None
    return json.loads(data)


def dumps(value: Any) -> bytes:
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":")).encode()
