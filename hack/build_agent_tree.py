#!/usr/bin/env python3
"""Build ``build/agent-tree/``: the exact directory the init container copies into a pod.

Layout:

    build/agent-tree/
      bootstrap/sitecustomize.py     <- PYTHONPATH points here
      lib/pilotfish/...              <- loaded by sitecustomize as `_pilotfish_agent`; never on sys.path

Byte-code is compiled ahead of time for every supported interpreter found on this
machine, with ``unchecked-hash`` invalidation: in a pod the tree is copied (new
mtimes) onto a read-only mount, so timestamp-checked .pyc files would be ignored
and every process would recompile the agent on each start.

Usage: ``python -m hack.build_agent_tree [--out DIR] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agent"
SUPPORTED = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")


def interpreters() -> List[str]:
    """Every supported CPython on this machine: this one plus pyenv's, one per minor version."""
    found = {"%d.%d" % sys.version_info[:2]: sys.executable}
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for path in sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python"))):
        version = os.path.basename(os.path.dirname(os.path.dirname(path)))
        minor = ".".join(version.split(".")[:2])
        if minor in SUPPORTED and minor not in found:
            found[minor] = path
    return [found[minor] for minor in sorted(found, key=lambda v: tuple(map(int, v.split("."))))]


def _make_writable(out: Path) -> None:
    for path in [out, *out.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _make_read_only(out: Path) -> None:
    """Like the pod's read-only mount: no interpreter can drop byte-code or files into it."""
    for path in [*out.rglob("*"), out]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def copy_tree(out: Path) -> None:
    if out.exists():
        _make_writable(out)
        shutil.rmtree(out)
    (out / "bootstrap").mkdir(parents=True)
    shutil.copy2(AGENT / "bootstrap" / "sitecustomize.py", out / "bootstrap" / "sitecustomize.py")
    shutil.copytree(
        AGENT / "pilotfish",
        out / "lib" / "pilotfish",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.so"),
    )


def compile_tree(out: Path) -> None:
    for python in interpreters():
        subprocess.run(
            [
                python,
                "-m",
                "compileall",
                "-q",
                "--invalidation-mode",
                "unchecked-hash",
                str(out / "lib" / "pilotfish"),
                str(out / "bootstrap" / "sitecustomize.py"),
            ],
            check=True,
        )


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.build_agent_tree", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "agent-tree")
    parser.add_argument("--no-compile", action="store_true", help="skip ahead-of-time byte-code")
    args = parser.parse_args(argv)
    copy_tree(args.out)
    if not args.no_compile:
        compile_tree(args.out)
    _make_read_only(args.out)
    print("agent tree: %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
