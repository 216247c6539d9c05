"""Nothing the status port shows works as a credential.

Spec: ``/status``, ``/metrics`` and ``/readiness`` answer anyone who can reach the
pod. The app probe's header values (``Authorization: Bearer ...``), a config URL's
userinfo (``https://user:pass@host``), credential-looking query values
(``?token=``) and the offline token are masked wherever they would appear,
while what they are (header names, hosts, whether a token is set) stays visible.

A real app runs under the agent with all of these set; the config service URL
points at a closed port so that its errors (which quote the URL) show up too.
"""

from __future__ import annotations

import json
from typing import Iterator

import pytest
from support.interpreters import require_app_python
from support.servers import RunningServer, free_port

SECRETS = ("pr0be-t0ken", "hdr-s3cret", "c0nfig-pass", "url-t0ken", "0ffline-t0ken", "qu3ry-k3y")


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    config_port = free_port()  # nothing listens: every call fails, quoting the URL
    running = RunningServer(
        "waitress",
        require_app_python("3.11"),
        env={
            "PILOTFISH_OFFLINE_TOKEN": "0ffline-t0ken",
            "PILOTFISH_CONFIG_URL": "http://svc-user:c0nfig-pass@127.0.0.1:%d/base?token=url-t0ken"
            % config_port,
            "PILOTFISH_APP": "shop",
            "PILOTFISH_POD_NAMESPACE": "default",
        },
        port=free_port(),  # the app's probe below names it before the start
    )
    running.env["PILOTFISH_APP_PROBE"] = json.dumps(
        {
            "httpGet": {
                "path": "/?api_key=qu3ry-k3y",
                "port": running.port,
                "httpHeaders": [
                    {"name": "Authorization", "value": "Bearer pr0be-t0ken"},
                    {"name": "X-Api-Key", "value": "hdr-s3cret"},
                ],
            },
            "periodSeconds": 1,
        }
    )
    with running:
        running.wait_status(
            lambda s: (
                s["lifecycle"]["app_probe"].get("checks", 0) >= 1
                and s["config_service"].get("failures", 0) >= 1
            ),
            timeout=30,
        )
        yield running


@pytest.mark.parametrize("path", ["/status", "/metrics", "/readiness"])
def test_no_secret_appears_anywhere_the_status_port_answers(server: RunningServer, path: str) -> None:
    body = server.status_get(path).body.decode()
    assert [secret for secret in SECRETS if secret in body] == []


def test_the_probe_shows_its_header_names_with_masked_values(server: RunningServer) -> None:
    probe = json.loads(server.status()["config"]["app_probe"])
    assert probe["httpGet"]["httpHeaders"] == [
        {"name": "Authorization", "value": "***"},
        {"name": "X-Api-Key", "value": "***"},
    ]
    assert probe["httpGet"]["path"] == "/?api_key=***"


def test_urls_keep_their_host_and_lose_their_userinfo(server: RunningServer) -> None:
    status = server.status()
    for shown in (status["config"]["config_url"], status["config_service"]["url"]):
        assert shown.startswith("http://***@127.0.0.1:") and shown.endswith("/base?token=***")


def test_the_offline_token_is_shown_only_as_set(server: RunningServer) -> None:
    assert server.status()["config"]["offline_token"] == "(set)"


def test_the_agents_own_log_lines_do_not_carry_them_either(server: RunningServer) -> None:
    agent_lines = [line for line in server.output().splitlines() if line.startswith("pilotfish:")]
    assert any(
        "http://***@127.0.0.1:" in line for line in agent_lines
    )  # the config service errors were logged
    assert [secret for secret in SECRETS if any(secret in line for line in agent_lines)] == []
