"""`make demo` starts everything and prints URLs that answer (the README's first command)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_prints_urls_that_answer() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "hack" / "demo.py"), "--seconds", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        banner = "".join(lines)
        app_url = re.search(r"sample app\s+(http://\S+)", banner)
        status_url = re.search(r"agent status\s+(http://\S+/status)", banner)
        assert app_url and status_url, banner
        with urllib.request.urlopen(app_url.group(1), timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(status_url.group(1), timeout=5) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # Stopping the demo stops what it started: nothing is left listening.
    for url in (app_url.group(1), status_url.group(1)):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
