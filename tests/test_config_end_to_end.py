"""Central config end to end: a real app under the agent, a real config server, a policy file.

Spec (docs/policies.md), end to end: an app under the agent (``PYTHONPATH=build/agent-tree/bootstrap``
only), pointed at ``pilotfish-webhook serve --policies FILE`` over HTTPS, shows the merged
config and its version in ``/status`` and a changed value within 1 s of the file changing.
Faults (docs/agent.md): with the service down or answering garbage the app serves exactly as
before, and a restart while the service is down starts from the cached config.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
from support.config_server import ConfigServer, config_server, example_config_server, free_port
from support.interpreters import matrix_versions, require_app_python
from support.servers import RunningServer
from support.wait import eventually

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConfigServer]:
    with example_config_server(tmp_path) as running:
        yield running


def agent_env(url: str, ca: Path, cache: Path) -> Dict[str, str]:
    return {
        "PILOTFISH_CONFIG_URL": url,
        "PILOTFISH_CONFIG_CA": str(ca),
        "PILOTFISH_APP": "shop",
        "PILOTFISH_POD_NAMESPACE": "demo",
        "PILOTFISH_POD_NAME": "shop-0",
        "PILOTFISH_CACHE_DIR": str(cache),
        "PILOTFISH_WARMUP_CURVE": "3",  # explicit env must beat every policy
    }


@pytest.mark.parametrize("minor", matrix_versions())
def test_status_shows_the_merged_config_and_a_file_change_within_one_second(
    server: ConfigServer, tmp_path: Path, minor: str
) -> None:
    python = require_app_python(minor)
    with RunningServer("gunicorn-sync", python, env=agent_env(server.url, server.ca, tmp_path)) as app:
        status = app.wait_status(lambda s: s.get("config_version") is not None, timeout=20)
        config = status["config"]
        assert config["warmup_seconds"] == 60  # namespace scope
        assert config["lane_mode"] == "strict"  # app scope
        assert config["tag_headers"] == ["x-pilotfish-tag", "x-mse-tag"]  # cluster scope
        assert config["warmup_curve"] == 3  # the pod's env wins
        assert [lane["name"] for lane in config["lanes"]] == ["testers", "gray-5-percent"]
        assert status["config_service"]["source"] == "service"
        assert status["config_service"]["version"] == status["config_version"]

        assert server.policies is not None
        written = time.monotonic()
        server.policies.write_text(server.policies.read_text().replace("seconds: 60", "seconds: 45"))
        changed = app.wait_status(lambda s: s["config"]["warmup_seconds"] == 45, timeout=5)
        assert time.monotonic() - written <= 1.0
        assert changed["config_version"] != status["config_version"]
        assert app.get("/healthz").body == b"ok"


def test_a_restart_while_the_service_is_down_comes_up_with_the_cached_config(tmp_path: Path) -> None:
    python = require_app_python(matrix_versions()[-1])
    with example_config_server(tmp_path) as server:
        env = agent_env(server.url, server.ca, tmp_path)
        with RunningServer("gunicorn-sync", python, env=env) as app:
            version = app.wait_status(lambda s: s.get("config_version") is not None, timeout=20)[
                "config_version"
            ]
    # The service is gone now (same URL, nothing listening).
    with RunningServer("gunicorn-sync", python, env=env) as app:
        status = app.wait_status(lambda s: s.get("config_version") is not None, timeout=20)
        assert status["config_version"] == version
        assert status["config"]["lane_mode"] == "strict"
        assert status["config_service"]["source"] == "cache"
        assert app.get("/healthz").body == b"ok"
        after = app.wait_status(lambda s: s["config_service"]["failures"] >= 1, timeout=10)
        assert after["config_version"] == version


@pytest.mark.parametrize("fault", ["down", "garbage", "wrong-ca", "slow"])
def test_the_app_answers_exactly_as_without_the_agent_when_the_service_misbehaves(
    tmp_path: Path, fault: str
) -> None:
    import http.server
    import threading

    python = require_app_python(matrix_versions()[-1])
    garbage = None
    silent = socket.socket()
    if fault == "slow":  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url, ca = "http://127.0.0.1:%d" % silent.getsockname()[1], Path("")
    elif fault == "down":
        url, ca = "https://127.0.0.1:%d" % free_port(), ROOT / "missing-ca.crt"
    elif fault == "garbage":

        class Junk(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"<html>not a config</html>")

            def log_message(self, *args: object) -> None:
                pass

        garbage = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Junk)
        threading.Thread(target=garbage.serve_forever, daemon=True).start()
        url, ca = "http://127.0.0.1:%d" % garbage.server_address[1], Path("")
    else:
        from pilotfish_webhook.tls import ensure_certs

        other = ensure_certs(tmp_path / "other", ["localhost"])
        cm = config_server(tmp_path, None)
        real = cm.__enter__()
        url, ca = real.url, other.ca_cert
    try:
        env = agent_env(url, ca, tmp_path)
        with RunningServer("gunicorn-sync", python, agent=False, env=env) as plain:
            expected = [(r.status, r.body) for r in (plain.get("/healthz"), plain.get("/missing"))]
        with RunningServer("gunicorn-sync", python, env=env) as app:
            if fault == "slow":  # the poll hangs until its socket timeout; the app must not care
                status = app.wait_status(lambda s: s["config_service"].get("enabled"), timeout=15)
            else:
                status = app.wait_status(lambda s: s["config_service"].get("failures", 0) >= 1, timeout=15)
                assert status["config_service"]["last_error"]
            got = [(r.status, r.body) for r in (app.get("/healthz"), app.get("/missing"))]
            assert got == expected
            assert status["config_version"] is None
            assert status["config"]["warmup_seconds"] == 120  # the built-in default
            assert app.proc is not None and app.proc.poll() is None
    finally:
        silent.close()
        if garbage is not None:
            garbage.shutdown()
            garbage.server_close()
        if fault == "wrong-ca":
            cm.__exit__(None, None, None)


def test_every_gunicorn_worker_follows_the_owners_config_without_its_own_connection(
    server: ConfigServer, tmp_path: Path
) -> None:
    python = require_app_python(matrix_versions()[-1])
    apps = str(Path(__file__).resolve().parent / "config_apps")
    env = agent_env(server.url, server.ca, tmp_path)
    with RunningServer(
        "gunicorn-sync", python, env=env, pythonpath=(apps,), app="settings_app:app", workers=3
    ) as app:

        def workers_at(seconds: float, within: float) -> Dict[int, float]:
            seen: Dict[int, float] = {}

            def three_at_seconds() -> bool:
                answer = app.get("/").json()
                seen[answer["pid"]] = answer["warmup_seconds"]
                if answer["warmup_seconds"] != seconds:
                    seen.pop(answer["pid"])
                return len(seen) >= 3 and all(v == seconds for v in seen.values())

            eventually(
                three_at_seconds,
                within,
                "3 workers at %s s" % seconds,
                interval=0.01,
                context=lambda: "workers seen: %s" % seen,
            )
            return seen

        workers_at(60, within=20)
        assert server.policies is not None
        written = time.monotonic()
        server.policies.write_text(server.policies.read_text().replace("seconds: 60", "seconds: 45"))
        workers_at(45, within=5)
        assert time.monotonic() - written < 2.0  # owner <= ~0.2 s, then one cache check (0.5 s)
        status = app.status()
        assert status["config"]["warmup_seconds"] == 45
        assert len(status["workers"]) >= 3


TESTER = {"x-user-group": "testers", "Cookie": "beta=1"}  # the example's "testers" lane: tag gray


@pytest.mark.parametrize("kind", ["uvicorn", "uvicorn-workers"])
def test_an_asgi_app_follows_lanes_and_ignored_paths_that_change_while_it_serves(
    server: ConfigServer, tmp_path: Path, kind: str
) -> None:
    """The ASGI wrapper reads lanes and ignored paths once per change, not per request:
    a change must reach it in the owner and in every spawned worker."""
    python = require_app_python(matrix_versions()[-1])
    with RunningServer(kind, python, env=agent_env(server.url, server.ca, tmp_path)) as app:
        app.wait_status(
            lambda s: (
                [lane["name"] for lane in s["config"].get("lanes") or []] == ["testers", "gray-5-percent"]
            ),
            20,
        )

        def batch(path: str, headers: Dict[str, str]) -> Dict[str, int]:
            """Six requests; how each total of /status moved."""
            before = app.status()
            for _ in range(6):
                app.get(path, headers=headers)
            try:
                after = app.wait_status(
                    lambda s: (
                        s["requests_total"] + s["ignored_total"]
                        >= before["requests_total"] + before["ignored_total"] + 6
                    ),
                    2,
                )
            except AssertionError:
                # A spawned worker that has just started counts only once its agent has woken
                # (beside its event loop): the batch comes out short and `until` tries again.
                after = app.status()
            tags = {
                t: after["requests_by_tag"].get(t, 0) - before["requests_by_tag"].get(t, 0)
                for t in ("gray", "baseline")
            }
            return {
                "requests": after["requests_total"] - before["requests_total"],
                "ignored": after["ignored_total"] - before["ignored_total"],
                **tags,
            }

        def until(path: str, headers: Dict[str, str], want: Dict[str, int], within: float = 5.0) -> None:
            """Workers follow the owner's config within one cache check: poll until a whole batch agrees."""
            got: Dict[str, Dict[str, int]] = {}

            def agreed() -> bool:
                got["batch"] = batch(path, headers)
                return got["batch"] == want

            eventually(
                agreed, within, "a batch of %s" % want, context=lambda: "got %s\n%s" % (got, app.output())
            )

        until("/", TESTER, {"requests": 6, "ignored": 0, "gray": 6, "baseline": 0})
        until("/", {}, {"requests": 6, "ignored": 0, "gray": 0, "baseline": 6})
        until("/skip", {}, {"requests": 6, "ignored": 0, "gray": 0, "baseline": 6})

        assert server.policies is not None
        text = server.policies.read_text()
        lanes_at = text.index("  lanes:")
        routing_at = text.index("  routing:", lanes_at)
        changed = text[:lanes_at] + text[routing_at:]  # the shop's lanes removed...
        changed = changed.replace(
            "    delayRegisterSeconds: 2\n", "    delayRegisterSeconds: 2\n    ignorePaths: [/skip]\n"
        )  # ...and /skip no longer traffic
        server.policies.write_text(changed)
        app.wait_status(
            lambda s: not s["config"].get("lanes") and s["config"]["ignore_paths"] == ["/skip"], 5
        )

        until("/skip", {}, {"requests": 0, "ignored": 6, "gray": 0, "baseline": 0})
        until("/skip/deeper", TESTER, {"requests": 0, "ignored": 6, "gray": 0, "baseline": 0})
        until("/", TESTER, {"requests": 6, "ignored": 0, "gray": 0, "baseline": 6})
