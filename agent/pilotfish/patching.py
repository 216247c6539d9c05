"""Install and remove monkey patches symmetrically, and only once.

``replace(owner, name, make)`` swaps ``owner.name`` for ``make(original)`` and
remembers the original under a key, so ``restore(key)`` puts everything back
(tests, the kill switch). The replacement is a plain function carrying
``__wrapped__`` and a marker: patching twice is a no-op, and no proxy object
sits on the call path.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Tuple

MARK = "__pilotfish_patch__"

_lock = threading.Lock()
_originals: Dict[str, List[Tuple[Any, str, Any]]] = {}


def is_patched(function: Any) -> bool:
    return getattr(function, MARK, False) is True


def replace(key: str, owner: Any, name: str, make: Callable[[Any], Callable[..., Any]]) -> bool:
    """Replace ``owner.name`` with ``make(original)``; False if already ours or absent."""
    with _lock:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            original = getattr(owner, name, None)
        if original is None or is_patched(original):
            return False
        replacement = make(original)
        try:
            replacement.__wrapped__ = original  # type: ignore[attr-defined]
            setattr(replacement, MARK, True)
            for attribute in ("__name__", "__qualname__", "__doc__"):
                if hasattr(original, attribute):
                    setattr(replacement, attribute, getattr(original, attribute))
        except (AttributeError, TypeError):
            pass
        setattr(owner, name, replacement)
        _originals.setdefault(key, []).append((owner, name, original))
        return True


def restore(key: str) -> None:
    """Undo every ``replace`` made under ``key``, newest first."""
    with _lock:
        entries = _originals.pop(key, [])
    for owner, name, original in reversed(entries):
        setattr(owner, name, original)


def patched_keys() -> List[str]:
    with _lock:
        return sorted(_originals)
