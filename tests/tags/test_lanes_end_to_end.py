"""Entry tagging end to end: a policy's lanes, served by the real config service, tag real requests.

    policies.yaml --> pilotfish-webhook serve --policies FILE   (HTTPS on loopback, its own CA)
                          | GET /v1/config (long-poll), the agent's config client
    test --HTTP--> shop: Flask under gunicorn (gthread), PYTHONPATH=build/agent-tree/bootstrap only
                          | requests.get --> capture server (keeps every request's raw bytes)

The app has no pilotfish code and no tag header arrives with the request: whether the
downstream call carries ``x-pilotfish-tag`` is decided only by the lanes the config
service delivered for app ``shop`` (the config service's contract, docs/policies.md, read
by the entry tagging, docs/tags.md).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
from support.capture import CaptureServer, header
from support.config_server import config_server
from support.interpreters import matrix_versions, require_app_python
from support.servers import RunningServer, http_get
from support.wait import eventually

APPS = Path(__file__).resolve().parent / "apps"

POLICY = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata:
  name: shop-lanes
  namespace: demo
spec:
  selector:
    apps: [shop]
  lanes:
    - name: vip                   # staff or vip users who opted into the beta
      tag: gray
      match:
        - header: X-User-Group
          op: in
          values: [vip, staff]
        - cookie: beta
          op: present
    - name: half-of-users         # half of the numeric user ids, sticky per id
      tag: blue
      match:
        - header: x-user-id
          op: regex
          values: ["^[0-9]+$"]
      percentage: 50
      hashKey: header:X-User-Id
"""


class Shop(RunningServer):
    """The entry app under the agent, pointed at the config service; ``order()`` gives its downstream call."""

    def __init__(self, python: str, env: Dict[str, str], capture: CaptureServer) -> None:
        super().__init__(
            "gunicorn-gthread",
            python,
            app="lane_entry_flask:app",
            workers=1,
            env=dict(env, LANE_DOWNSTREAM=capture.url),
            pythonpath=(str(APPS),),
        )
        self.capture = capture

    def wait(self, predicate, what: str, timeout: float = 30):
        def check():
            self.raise_if_exited()
            return predicate()

        return eventually(check, timeout, what, interval=0.1, context=self.output)

    def order(self, rid: str, headers: Optional[Dict[str, str]] = None) -> bytes:
        """GET /order on the app; the one request it made downstream, raw."""
        self.capture.take()
        response = http_get(self.port, "/order?id=%s" % rid, headers, timeout=30)
        assert response.status == 200 and response.body == b"order>ok", response.body
        (downstream,) = self.capture.take()
        assert downstream.startswith(b"GET /stock?id=%s " % rid.encode())
        return downstream


@pytest.fixture(params=matrix_versions())
def shop(request, tmp_path: Path) -> Iterator[Shop]:
    python = require_app_python(request.param)
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICY)
    with config_server(tmp_path, policies) as server, CaptureServer() as capture:
        env = {
            "PILOTFISH_CONFIG_URL": server.url,
            "PILOTFISH_CONFIG_CA": str(server.ca),
            "PILOTFISH_APP": "shop",
            "PILOTFISH_POD_NAMESPACE": "demo",
            "PILOTFISH_POD_NAME": "shop-0",
            "PILOTFISH_CACHE_DIR": str(tmp_path),  # gunicorn's workers follow the owner through it
        }
        with Shop(python, env, capture) as app:
            yield app


def tag_of(raw: bytes) -> Optional[str]:
    return header(raw, "x-pilotfish-tag")


def test_the_policys_lanes_tag_matching_untagged_requests_and_nothing_else(shop: Shop) -> None:
    def configured() -> Optional[dict]:
        status = http_get(shop.status_port, "/status", timeout=5).json()
        return status if status.get("config_version") else None

    status = shop.wait(configured, "the central config reaching the app", timeout=60)
    assert [lane["name"] for lane in status["config"]["lanes"]] == ["vip", "half-of-users"]
    vip = {"X-User-Group": "staff", "Cookie": "theme=dark; beta=1"}
    # The worker follows the owner's config within its poll interval; then every matching request is tagged.
    shop.wait(lambda: tag_of(shop.order("warm-up", vip)) == "gray", "a matching request being tagged")

    tagged = shop.order("vip", vip)
    assert tag_of(tagged) == "gray"
    assert header(tagged, "baggage") == "pilotfish-tag=gray"

    # One condition short of the lane, or nothing at all: the downstream call carries nothing.
    for rid, headers in [
        ("no-cookie", {"X-User-Group": "staff"}),
        ("other-group", {"X-User-Group": "guests", "Cookie": "beta=1"}),
        ("plain", {}),
        ("not-numeric", {"X-User-Id": "alice"}),
    ]:
        raw = shop.order(rid, headers)
        assert tag_of(raw) is None and header(raw, "baggage") is None, (rid, raw)

    # A request that arrives tagged keeps its tag; lanes are only for untagged requests.
    assert tag_of(shop.order("pre-tagged", dict(vip, **{"x-pilotfish-tag": "green"}))) == "green"

    # The percentage lane: exactly the ids in the documented crc32 bucket, the same on every call.
    ids = [str(i) for i in range(24)]
    expected = {i for i in ids if zlib.crc32(("half-of-users:" + i).encode()) % 10000 < 5000}
    got = {i for i in ids if tag_of(shop.order("u" + i, {"X-User-Id": i})) == "blue"}
    assert got == expected and 0 < len(got) < len(ids)
    assert {i for i in ids if tag_of(shop.order("again" + i, {"x-user-id": i})) == "blue"} == expected
