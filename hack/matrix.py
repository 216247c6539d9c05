#!/usr/bin/env python3
"""Create one venv per interpreter of the test matrix, with what the test apps need.

The tests that run an app under the agent do it on every interpreter listed in
``PILOTFISH_MATRIX`` (default ``3.8 3.11 3.13``). 3.11 (or whichever Python runs
this script) uses the main ``.venv``; the others get ``.venvs/pyX.Y`` installed
from ``requirements/apps-pyX.Y.txt``. An interpreter that is not on this machine
is skipped with a printed notice, never silently; the tests then skip it too,
saying so.

Interpreters are found the way these machines provide them: pyenv's
``$(pyenv root)/versions/X.Y.Z/bin/python``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tests' helpers, imported as the tests import them (tests/ is on pytest's pythonpath and mypy's
# mypy_path): `support.<module>`, never a second copy as `tests.support.<module>`.
sys.path.insert(0, str(ROOT / "tests"))

from support.interpreters import DEFAULT_MATRIX, find_interpreter, matrix_versions  # noqa: E402


def ensure_venv(minor: str) -> None:
    python = find_interpreter(minor)
    if python is None:
        print(
            "matrix: Python %s not found on this machine (pyenv root/versions); its tests will skip" % minor
        )
        return
    lock = ROOT / "requirements" / ("apps-py%s.txt" % minor)
    if not lock.exists():
        print("matrix: no %s; Python %s app tests will skip" % (lock.relative_to(ROOT), minor))
        return
    venv = ROOT / ".venvs" / ("py" + minor)
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    stamp = venv / (".installed-" + digest)
    if stamp.exists():
        return
    print("matrix: preparing %s with %s" % (venv.relative_to(ROOT), python))
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(lock),
        ],
        check=True,
    )
    stamp.touch()


def ensure_side_packages(name: str) -> None:
    """``.venvs/<name>``: packages from ``requirements/<name>.txt`` for this interpreter, put ahead
    of the venv's own on PYTHONPATH by the tests that run an app on another version of a library
    (urllib3 1.26 beside the venv's 2.x)."""
    lock = ROOT / "requirements" / (name + ".txt")
    target = ROOT / ".venvs" / name
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    stamp = target / (".installed-" + digest)
    if stamp.exists():
        return
    print("matrix: preparing %s" % target.relative_to(ROOT))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--upgrade",
            "--target",
            str(target),
            "-r",
            str(lock),
        ],
        check=True,
    )
    stamp.touch()


def main() -> int:
    this = "%d.%d" % sys.version_info[:2]
    for minor in matrix_versions():
        if minor != this:
            ensure_venv(minor)
    ensure_side_packages("urllib3-1.26")
    if os.environ.get("PILOTFISH_MATRIX") is None:
        print("matrix: %s (set PILOTFISH_MATRIX to change)" % " ".join(DEFAULT_MATRIX))
    return 0


if __name__ == "__main__":
    sys.exit(main())
