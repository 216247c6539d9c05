"""``python -m hack.cluster`` (``make cluster``): up fast, prints the export line, stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.cluster import KUBECTL

ROOT = Path(__file__).resolve().parents[2]


def test_make_cluster_prints_the_kubeconfig_line_quickly_and_stops_cleanly_on_ctrl_c() -> None:
    from hack.cluster.network import missing_requirements

    args = [] if not missing_requirements() else ["--no-node"]
    state = ROOT / "build" / "cluster-tests" / "main"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hack.cluster", "--state-dir", str(state), *args],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        assert proc.stdout is not None
        while not line.startswith("export KUBECONFIG="):
            line = proc.stdout.readline()
            assert line, "exited before printing the export line"
        up = time.monotonic() - started
        assert up < 15, "up in %.1f s" % up
        kubeconfig = line.strip().split("=", 1)[1]
        assert Path(kubeconfig) == state / "kubeconfig"
        if KUBECTL is not None:
            done = subprocess.run(
                [KUBECTL, "--kubeconfig", kubeconfig, "get", "namespaces", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            names = {i["metadata"]["name"] for i in json.loads(done.stdout)["items"]}
            assert {"default", "kube-system"} <= names
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
