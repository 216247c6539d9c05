"""Without a config service nothing can be routed, so nothing of routing is loaded.

Spec (docs/routing.md): the routing table comes only from the config service. With
``PILOTFISH_CONFIG_URL`` unset no client library is hooked, neither the routing core nor
the HTTP transport to the config service is imported (an idle pod keeps that memory), and
``/status`` says why routing is off. Outbound calls take the ordinary path.
"""

from __future__ import annotations

import pytest
from support.interpreters import require_app_python
from support.servers import RunningServer

NEVER_LOADED = (
    "_pilotfish_agent.routing.core",
    "_pilotfish_agent.routing.table",
    "_pilotfish_agent.integrations.routing_http_client",
    "_pilotfish_agent.central.transport",
    "_pilotfish_agent.central.config",
)


@pytest.mark.parametrize("kind", ["gunicorn-sync", "uvicorn"])
def test_without_a_config_service_routing_is_off_says_why_and_loads_nothing(kind: str) -> None:
    with RunningServer(kind, require_app_python("3.11")) as server:
        status = server.wait_status(lambda s: s["ready"] and "routing" in s, timeout=30)
        assert status["routing"]["enabled"] is False
        assert "PILOTFISH_CONFIG_URL" in status["routing"]["reason"]
        loaded = server.get("/agent-modules").json()["modules"]
        assert "_pilotfish_agent.runtime" in loaded  # the agent is there
        assert [name for name in NEVER_LOADED if name in loaded] == []
