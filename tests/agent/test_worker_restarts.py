"""Workers come and go while the status port is scraped; the app keeps serving.

Spec: gunicorn replaces a worker after ``--max-requests`` (or a crash, or a
timeout) by forking the master, which is the agent's owner. The owner reads
and frees worker slots on every ``/status`` and ``/metrics``; a fork at any
instant of that must leave the new worker able to claim its slot and serve.
And when no worker is left to serve, ``/readiness`` says so instead of 200.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
from pathlib import Path
from typing import List

from support.interpreters import require_app_python
from support.servers import RunningServer, http_get

RUN_SECONDS = 30.0
SCRAPED = ("/metrics", "/metrics", "/status", "/status")
CLIENTS = 3


def test_workers_recycled_by_max_requests_keep_serving_while_status_and_metrics_are_scraped() -> None:
    """Before the fix a fork during a scrape left the new worker blocked on the claim lock forever."""
    python = require_app_python("3.11")
    with RunningServer(
        "gunicorn-sync", python, extra_args=["--max-requests", "3", "--max-requests-jitter", "0", "--preload"]
    ) as server:
        server.wait_status(lambda s: s["ready"] and len(s["workers"]) == 2, timeout=30)
        stop = threading.Event()
        counts = {"served": 0, "scrapes": 0}
        failures: List[str] = []

        def scrape(path: str) -> None:
            while not stop.is_set():
                try:
                    assert http_get(server.status_port, path, timeout=10).status == 200
                    counts["scrapes"] += 1
                except (OSError, http.client.HTTPException, AssertionError) as error:
                    failures.append("%s: %r" % (path, error))
                    stop.set()

        def send() -> None:
            while not stop.is_set():
                try:
                    response = server.get("/", timeout=10)
                    assert response.status == 200, response.status
                    counts["served"] += 1
                except (OSError, http.client.HTTPException, AssertionError) as error:
                    failures.append("/: %r" % (error,))
                    stop.set()

        threads = [threading.Thread(target=scrape, args=(path,)) for path in SCRAPED] + [
            threading.Thread(target=send) for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        stop.wait(RUN_SECONDS)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert failures == [], "%s after %s\n%s" % (failures, counts, server.output()[-3000:])
        assert counts["served"] > 60 and counts["scrapes"] > 60, counts  # many forks raced many scrapes
        final = server.wait_status(lambda s: s["ready"] and len(s["workers"]) == 2, timeout=30)
        assert final["worker_deaths"] >= counts["served"] // 3 - 2  # each worker served 3, was replaced


def test_readiness_fails_when_every_worker_is_gone_and_none_comes_back(tmp_path: Path) -> None:
    """A prefork server whose workers are gone serves nothing: readiness must not stay 200.

    A ``pre_fork`` hook holds the master back from forking while a file exists (as a
    master that cannot fork, or a fork that never gets to serve, would).
    """
    python = require_app_python("3.11")
    hold = tmp_path / "hold-forks"
    config = tmp_path / "gunicorn_conf.py"
    config.write_text(
        "import os, time\n\n\ndef pre_fork(server, worker):\n"
        "    while os.path.exists(%r):\n        time.sleep(0.1)\n" % str(hold)
    )
    with RunningServer("gunicorn-sync", python, extra_args=["-c", str(config)]) as server:
        server.wait_status(lambda s: s["ready"] and len(s["workers"]) == 2, timeout=30)
        hold.touch()
        for worker in server.status()["workers"]:
            os.kill(worker["pid"], signal.SIGKILL)
        status = server.wait_status(lambda s: not s["ready"], timeout=60)
        assert status["workers"] == []
        assert "no worker process has reported" in status["gates"]["workers"]["reason"]
        readiness = server.status_get("/readiness")
        assert readiness.status == 503
        assert list(readiness.json()["failing"]) == ["workers"]
        hold.unlink()
        server.wait_status(lambda s: s["ready"] and len(s["workers"]) == 2, timeout=60)
        assert server.status_get("/readiness").status == 200
