"""Where the agent keeps what it learnt from the config service on disk (config, routing table).

``PILOTFISH_CACHE_DIR`` as given; else ``PILOTFISH_STATE_DIR`` (the webhook points it at the
agent's own writable volume) when writable; else the temp dir, which ``tempfile`` cannot find
on a read-only root file system without a writable /tmp: then there is no cache (one warning),
not no config.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Optional

from .. import log, settings


def safe_name(text: str) -> str:
    """``text`` as a file-name part: anything but ``[A-Za-z0-9_.-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def _writable_directory(path: str) -> bool:
    return bool(path) and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def directory(current: settings.Settings) -> Optional[str]:
    """Where the caches live; None when there is no writable place (see the module docstring)."""
    if current.cache_dir:
        return str(current.cache_dir)
    if _writable_directory(current.state_dir):
        return str(current.state_dir)
    try:
        return tempfile.gettempdir()
    except Exception as problem:  # FileNotFoundError: no usable temp dir at all
        log.once(
            "config-cache-none",
            "warning",
            "no writable directory for the config cache (%s%s): central config is applied "
            "without a cache, so worker processes do not follow it and a restart while the "
            "config service is down starts from defaults; set PILOTFISH_STATE_DIR to a writable "
            "directory"
            % (
                "PILOTFISH_STATE_DIR=%r is not writable, " % current.state_dir if current.state_dir else "",
                problem,
            ),
        )
        return None


def path(current: settings.Settings, kind: str) -> Optional[str]:
    """``<directory>/pilotfish-<kind>-<namespace>-<app>.json``, or None without a directory."""
    found = directory(current)
    if found is None:
        return None
    name = "pilotfish-%s-%s-%s.json" % (
        kind,
        safe_name(current.pod_namespace or "default"),
        safe_name(current.app or "_"),
    )
    return os.path.join(found, name)
