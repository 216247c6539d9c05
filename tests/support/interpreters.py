"""Find the interpreters of the test matrix the way these machines provide them.

pyenv keeps every CPython at ``$(pyenv root)/versions/X.Y.Z/bin/python``; they are
not on PATH as ``python3.X``. A version that is absent makes its tests skip with
a reason that names it (pytest ``-ra`` prints it), never silently.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_MATRIX = ("3.8", "3.11", "3.13")
ALL_BOOTSTRAP_VERSIONS = ("2.7", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13")


def pyenv_root() -> str:
    root = os.environ.get("PYENV_ROOT")
    if root:
        return root
    try:
        return subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.path.expanduser("~/.pyenv")


def _key(path: str) -> tuple:
    version = os.path.basename(os.path.dirname(os.path.dirname(path)))
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def find_interpreter(minor: str) -> Optional[str]:
    """The newest pyenv CPython ``minor`` (e.g. ``"3.8"``), or None."""
    if minor == "%d.%d" % sys.version_info[:2] and sys.implementation.name == "cpython":
        base = getattr(sys, "_base_executable", sys.executable)
        return base if os.path.exists(base) else sys.executable
    pattern = os.path.join(pyenv_root(), "versions", minor + ".*", "bin", "python")
    candidates = [p for p in glob.glob(pattern) if os.access(p, os.X_OK)]
    candidates = [
        p for p in candidates if os.path.basename(os.path.dirname(os.path.dirname(p))).count(".") == 2
    ]
    return max(candidates, key=_key) if candidates else None


def matrix_versions() -> List[str]:
    raw = os.environ.get("PILOTFISH_MATRIX")
    return raw.split() if raw else list(DEFAULT_MATRIX)


def app_python(minor: str) -> Optional[str]:
    """The python of the venv that has the test apps' packages for ``minor``, or None."""
    if minor == "%d.%d" % sys.version_info[:2]:
        return sys.executable
    candidate = ROOT / ".venvs" / ("py" + minor) / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def require_interpreter(minor: str) -> str:
    """The pyenv CPython ``minor``, or skip the calling test with a notice saying it is absent."""
    import pytest

    python = find_interpreter(minor)
    if python is None:
        pytest.skip("Python %s is not installed on this machine (looked in $(pyenv root)/versions)" % minor)
    return python


def require_app_python(minor: str) -> str:
    """A python for ``minor`` that has the test apps' packages, or skip saying why."""
    import pytest

    require_interpreter(minor)
    python = app_python(minor)
    if python is None:
        pytest.skip("no .venvs/py%s: run `make matrix` (Python %s app tests skipped)" % (minor, minor))
    return python
