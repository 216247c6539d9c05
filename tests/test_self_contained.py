"""The repository refers to nothing outside itself.

Comments, docstrings and docs give the reason or link to the project's own docs/ pages,
never a design note, issue or scenario number kept elsewhere, nor a path outside the
checkout. External test inputs (the Istio injector corpus) come from an environment
variable (docs/internals.md). The patterns are assembled at run time so that this file
does not match itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = re.compile(
    "|".join(
        [
            re.escape("shared" + "/"),
            re.escape("DESIGN" + ".md"),
            "issue" + r" [0-9]",
            "seed" + r" 0",
        ]
    )
)


def test_no_file_refers_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.md"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    hits = []
    for name in listed:
        path = ROOT / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append("%s:%d: %s" % (name, number, line.strip()))
    assert not hits, "references outside the repository:\n" + "\n".join(hits)
