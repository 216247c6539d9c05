"""The embedded config service under hostile or clumsy policy files: a real
``pilotfish-webhook serve --policies FILE`` over HTTPS on loopback.

- a YAML alias bomb in the file is refused whole: ``/v1/status`` says why in a few hundred
  bytes, the server's memory stays small, and the last good policies stay in force;
- a file rewritten in place (truncated, then written in two halves with a pause) is applied
  only once it is complete: long-polling agents never see the intermediate versions.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest
from support.config_server import ConfigServer, example_config_server
from support.wait import eventually
from test_policy_limits import alias_bomb


def client(server: ConfigServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, verify=server.context(), timeout=30)


def get_config(http: httpx.Client, version: str = "", timeout: float = 0) -> httpx.Response:
    params: Dict[str, Any] = {"namespace": "demo", "app": "shop", "version": version, "timeout": timeout}
    return http.get("/v1/config", params=params)


def peak_rss_mib(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM for pid %d" % pid)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConfigServer]:
    with example_config_server(tmp_path) as running:
        yield running


def test_an_alias_bomb_in_the_policy_file_is_refused_in_bounded_size_and_the_last_good_stays(
    server: ConfigServer, tmp_path: Path
) -> None:
    assert server.policies is not None
    with client(server) as http:
        good = get_config(http).json()
        log_before = len(server.output())
        replacement = tmp_path / "next.yaml"
        replacement.write_text(server.policies.read_text() + "---\n" + alias_bomb(name="bomb"))
        os.replace(replacement, server.policies)
        eventually(lambda: http.get("/v1/status").json()["source_error"], 15, "the refused file reported")
        status = http.get("/v1/status")
        assert len(status.content) < 8192
        message = status.json()["source_error"]["message"]
        assert "policies.yaml document 4" in message and "YAML aliases" in message
        assert get_config(http, good["version"], timeout=0.5).status_code == 304  # nothing changed
        assert get_config(http).json()["config"] == good["config"]
    assert peak_rss_mib(server.proc.pid) < 200
    assert len(server.output()) - log_before < 4096


def test_a_file_rewritten_in_place_is_applied_only_once_complete(tmp_path: Path) -> None:
    with example_config_server(tmp_path, ["--policies-settle-seconds", "1.0"]) as server:
        assert server.policies is not None
        original = server.policies.read_text()
        final = original.replace("seconds: 60", "seconds: 45")
        assert final != original
        cut = final.index("---\n", final.index("name: demo-namespace"))  # before the shop-lanes document
        seen: List[Dict[str, Any]] = []
        stop = threading.Event()

        def watch() -> None:
            with client(server) as http:
                version = ""
                while not stop.is_set():
                    answer = get_config(http, version, timeout=5)
                    if answer.status_code == 200:
                        body = answer.json()
                        seen.append(body)
                        version = body["version"]
                        if body["config"].get("warmup_seconds") == 45:
                            return

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            eventually(lambda: seen, 15, "the first long-poll's answer")
            with client(server) as http:
                reloads = http.get("/v1/status").json()["source"]["reloads"]
            with open(server.policies, "w") as out:  # truncates: an empty file is valid YAML too
                out.write(final[:cut])
                out.flush()
                os.fsync(out.fileno())
                time.sleep(0.3)  # a slow writer: the first half alone is valid, without the lanes
                out.write(final[cut:])
            watcher.join(20)
            assert not watcher.is_alive(), "the final version was never published"
        finally:
            stop.set()
            watcher.join(10)
        assert [body["config"].get("warmup_seconds") for body in seen] == [60, 45]
        assert all(body["config"].get("lanes") for body in seen), "an intermediate version was published"
        with client(server) as http:
            assert http.get("/v1/status").json()["source"]["reloads"] == reloads + 1
