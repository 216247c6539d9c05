"""The agent's config client against the real server, and against every way a server can fail.

Spec (docs/agent.md, docs/policies.md): long-poll the effective config, version-aware, applied through
``pilotfish.settings.apply_central``; the last good config cached on disk and loaded at
start (a restart works while the service is down); https verified against
PILOTFISH_CONFIG_CA and the bearer token re-read from PILOTFISH_TOKEN_FILE on every
call; faults (service down, garbage, TLS mismatch, slow answers) never raise and never
lose the last good config; registration renews its lease until deregistered.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest
from pilotfish import owner, settings
from pilotfish.central import follower as follower_module
from pilotfish.central import registration, transport
from pilotfish.central.config import ConfigClient
from pilotfish.central.registration import Registration
from pilotfish.central.transport import CallFailed, Transport
from pilotfish_webhook.tls import ensure_certs
from support.config_server import ConfigServer, example_config_server
from support.ports import free_port
from support.wait import eventually


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConfigServer]:
    with example_config_server(tmp_path, ["--lease-seconds", "1.5"]) as running:
        yield running


class Applied:
    """Records what the client applies, like settings.apply_central would receive."""

    def __init__(self) -> None:
        self.calls: List[Tuple[Dict[str, Any], str]] = []

    def __call__(self, config: Dict[str, Any], version: str) -> None:
        self.calls.append((config, version))


def make_client(url: str, tmp_path: Path, ca: str = "", token_file: str = "", **kw: Any) -> ConfigClient:
    apply = kw.pop("apply", Applied())
    return ConfigClient(
        Transport(url, ca, token_file), "shop", "demo", str(tmp_path / "cache.json"), apply, **kw
    )


def test_the_client_applies_the_merged_config_and_caches_it(server: ConfigServer, tmp_path: Path) -> None:
    client = make_client(server.url, tmp_path, str(server.ca), poll_seconds=0.2)
    assert client.poll_once() == "changed"
    config, version = client.apply.calls[-1]  # type: ignore[attr-defined]
    assert config["warmup_seconds"] == 60 and version == client.version
    assert client.poll_once() == "unchanged"  # 304 after the hold time
    cached = json.loads((tmp_path / "cache.json").read_text())
    assert cached["version"] == version and cached["config"] == config


def test_a_real_settings_snapshot_gets_central_values_but_explicit_env_still_wins(
    server: ConfigServer, tmp_path: Path
) -> None:
    settings.load({"PILOTFISH_WARMUP_CURVE": "4"})
    try:
        client = make_client(server.url, tmp_path, str(server.ca), apply=settings.apply_central)
        client.poll_once()
        current = settings.current()
        assert current.warmup_seconds == 60.0 and current.sources["warmup_seconds"] == "central"
        assert current.warmup_curve == 4.0 and current.sources["warmup_curve"] == "env"
        assert current.central_version == client.version
        assert [lane["tag"] for lane in current.central_extra["lanes"]] == ["gray", "gray"]
    finally:
        settings.load({})


def test_a_restart_while_the_service_is_down_starts_from_the_cached_config(
    server: ConfigServer, tmp_path: Path
) -> None:
    make_client(server.url, tmp_path, str(server.ca)).poll_once()
    restarted = make_client("https://127.0.0.1:%d" % _dead_port(), tmp_path, str(server.ca))
    assert restarted.load_cache()
    config, version = restarted.apply.calls[-1]  # type: ignore[attr-defined]
    assert config["lane_mode"] == "strict" and restarted.source == "cache"
    with pytest.raises(CallFailed):
        restarted.poll_once()
    assert restarted.version == version


def test_a_cache_for_another_app_or_a_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache.json").write_text(
        json.dumps({"app": "other", "namespace": "demo", "version": "v", "config": {}})
    )
    assert not make_client("http://127.0.0.1:1", tmp_path).load_cache()
    (tmp_path / "cache.json").write_text("{not json")
    assert not make_client("http://127.0.0.1:1", tmp_path).load_cache()


def _dead_port() -> int:
    return free_port()  # reserved for this process and not listened on: connections are refused


class FakeService(http.server.ThreadingHTTPServer):
    """A misbehaving config service: answers with whatever the test sets, records headers."""

    daemon_threads = True

    def __init__(self) -> None:
        self.answer: Tuple[int, bytes] = (200, b"")
        self.seen: List[Dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                status, body = outer.answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


@pytest.fixture
def fake() -> Iterator[FakeService]:
    service = FakeService()
    yield service
    service.shutdown()
    service.server_close()


GOOD = json.dumps({"version": "v1", "config": {"warmup_seconds": 5}}).encode()


@pytest.mark.parametrize(
    "garbage",
    [
        b"<html>oops</html>",
        b'{"version": 3, "config": {}}',
        b'{"version": "v2", "config": [1]}',
        b'["v2"]',
        b"\xff\xfe",
        b'{"version": "", "config": {}}',
    ],
)
def test_garbage_from_the_service_is_ignored_and_the_last_good_config_stays(
    fake: FakeService, tmp_path: Path, garbage: bytes
) -> None:
    client = make_client(fake.url, tmp_path)
    fake.answer = (200, GOOD)
    assert client.poll_once() == "changed"
    fake.answer = (200, garbage)
    with pytest.raises(CallFailed):
        client.poll_once()
    assert client.version == "v1" and len(client.apply.calls) == 1  # type: ignore[attr-defined]


def test_the_poll_loop_survives_garbage_warns_once_and_backs_off(
    fake: FakeService, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(transport, "BACKOFF_CAP", 0.2)
    client = make_client(fake.url, tmp_path)
    fake.answer = (500, b"boom")
    loop = threading.Thread(target=client.run)
    loop.start()
    time.sleep(1.0)  # a window: the assertions below bound the rate of retries in it
    client.stopping.set()
    loop.join(5)
    assert not loop.is_alive()
    assert 3 <= len(fake.seen) <= 25  # retried, with back-off, not in a tight loop
    assert client.failures >= 3 and "HTTP 500" in client.last_error
    assert capsys.readouterr().err.count("HTTP 500") <= 1


def test_a_server_that_answers_instantly_without_change_is_not_hammered(
    fake: FakeService, tmp_path: Path
) -> None:
    client = make_client(fake.url, tmp_path)
    fake.answer = (304, b"")
    loop = threading.Thread(target=client.run)
    loop.start()
    time.sleep(1.5)  # a window: at most 3 calls in it
    client.stopping.set()
    loop.join(5)
    assert len(fake.seen) <= 3


def test_the_token_is_re_read_on_every_call_because_projected_tokens_rotate(
    fake: FakeService, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    client = make_client(fake.url, tmp_path, token_file=str(token))
    fake.answer = (304, b"")
    client.poll_once()
    token.write_text("second")
    client.poll_once()
    assert [seen["authorization"] for seen in fake.seen] == ["Bearer first", "Bearer second"]
    token.unlink()
    client.poll_once()  # no token: still calls (the server decides), never raises
    assert "authorization" not in fake.seen[-1]


def test_a_service_whose_certificate_does_not_chain_to_the_ca_is_refused(
    server: ConfigServer, tmp_path: Path
) -> None:
    other = ensure_certs(tmp_path / "other-ca", ["localhost"])
    client = make_client(server.url, tmp_path, str(other.ca_cert))
    with pytest.raises(CallFailed, match="TLS failed"):
        client.poll_once()
    assert client.version == ""


def test_a_service_that_accepts_but_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "NETWORK_SLACK", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = make_client("http://127.0.0.1:%d" % silent.getsockname()[1], tmp_path, poll_seconds=0.2)
        started = time.monotonic()
        with pytest.raises(CallFailed, match="timed out"):
            client.poll_once()
        assert time.monotonic() - started < 3


def test_registration_renews_its_lease_and_deregistration_removes_it(server: ConfigServer) -> None:
    identity = {
        "namespace": "demo",
        "pod": "shop-9",
        "app": "shop",
        "service": "shop",
        "ip": "10.1.1.1",
        "tag": "",
    }
    registration = Registration(Transport(server.url, str(server.ca)), identity)
    assert registration.register(port=8000)
    assert registration.lease_seconds == 1.5
    with httpx.Client(base_url=server.url, verify=server.context()) as http:

        def pods() -> List[str]:
            answer = http.get("/v1/instances", params={"namespace": "demo", "service": "shop"}).json()
            return [i["pod"] for i in answer["instances"]]

        time.sleep(3.5)  # > 2 leases: still there because the renewer runs
        assert pods() == ["shop-9"]
        assert registration.register("offline")
        assert registration.deregister()
        assert pods() == []


def test_registration_against_a_dead_service_returns_false_and_never_raises() -> None:
    registration = Registration(Transport("http://127.0.0.1:%d" % _dead_port()), {"pod": "p"})
    assert registration.register(port=1) is False
    assert registration.last_error
    assert registration.deregister() is False


def test_module_helpers_do_nothing_without_a_config_url() -> None:
    settings.load({})
    assert owner.start_central_config() is False
    assert owner.registry().register(8000) is False
    assert owner.registry().deregister() is False


def test_a_worker_follows_the_owners_cache_file_and_only_this_apps(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    applied = Applied()
    follower = follower_module.CacheFollower(str(cache), "shop", "demo", applied, interval=0.05)
    assert not follower.check()  # no cache yet

    def write(version: str, app: str = "shop", seconds: int = 60) -> None:
        record = {"app": app, "namespace": "demo", "version": version, "config": {"warmup_seconds": seconds}}
        tmp = tmp_path / "tmp.json"
        tmp.write_text(json.dumps(record))
        tmp.replace(cache)

    write("v1")
    assert follower.check() and applied.calls == [({"warmup_seconds": 60}, "v1")]
    assert not follower.check()  # unchanged file: one stat, nothing applied
    write("v2", app="cart", seconds=1)  # someone else's cache: ignored
    assert not follower.check()
    write("v3", seconds=45)
    loop = threading.Thread(target=follower.run)
    loop.start()
    try:
        eventually(lambda: applied.calls[-1][1] == "v3", 2, "v3 applied")
    finally:
        follower.stopping.set()
        loop.join(2)
    assert applied.calls[-1] == ({"warmup_seconds": 45}, "v3") and len(applied.calls) == 2


def test_the_registered_identity_is_this_pod_and_the_port_the_app_listens_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pilotfish import runtime

    monkeypatch.setattr(
        runtime, "app_addresses", lambda: [("AF_UNIX", "/tmp/x.sock"), ("AF_INET", ("0.0.0.0", 8123))]
    )
    settings.load(
        {
            "PILOTFISH_APP": "shop",
            "PILOTFISH_POD_NAME": "shop-1",
            "PILOTFISH_POD_NAMESPACE": "demo",
            "PILOTFISH_POD_IP": "10.0.0.9",
            "PILOTFISH_TAG": "gray",
        }
    )
    try:
        assert registration.identity(settings.current(), runtime.app_port()) == {
            "namespace": "demo",
            "pod": "shop-1",
            "app": "shop",
            "service": "shop",
            "ip": "10.0.0.9",
            "tag": "gray",
            "port": 8123,
        }
    finally:
        settings.load({})


def test_the_app_port_is_the_first_tcp_port_and_none_while_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from pilotfish import runtime

    addresses: List[Tuple[str, Any]] = []
    monkeypatch.setattr(runtime, "app_addresses", lambda: list(addresses))
    assert runtime.app_port() is None  # the app does not listen yet
    addresses.append(("AF_UNIX", "/tmp/x.sock"))
    assert runtime.app_port() is None  # a Unix socket has no port
    addresses.append(("AF_INET6", ("::", 8443, 0, 0)))
    addresses.append(("AF_INET", ("0.0.0.0", 8123)))
    assert runtime.app_port() == 8443
    addresses[:] = [("grpc", ("[::]", 50051))]
    assert runtime.app_port() == 50051  # gRPC's C core listens on TCP without Python's listen()
    settings.load({"PILOTFISH_APP": "shop"})
    try:
        assert registration.identity(settings.current(), None)["port"] == 0  # "unknown" on the wire
    finally:
        settings.load({})


_FORK_SCRIPT = r"""
import json, os, threading, time
from _pilotfish_agent.central import transport  # the agent as sitecustomize loaded it

transport.FORK_WAIT = 0.6
out = {}


def fork_and_time():
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: its TLS lock must be free whatever the parent's poller was doing
        os._exit(0 if transport.tls_lock.acquire(timeout=0.2) else 3)
    took = time.monotonic() - started
    return took, os.waitpid(pid, 0)[1]


def hold(seconds):
    with transport.tls_lock:
        holding.set()
        time.sleep(seconds)


holding = threading.Event()
threading.Thread(target=hold, args=(0.3,)).start()
holding.wait()
out["short"] = fork_and_time()
holding.clear()
threading.Thread(target=hold, args=(3.0,), daemon=True).start()
holding.wait()
out["stuck"] = fork_and_time()
out["free_after"] = transport.tls_lock.acquire(timeout=5)
print(json.dumps(out))
"""


def test_a_fork_waits_for_tls_set_up_in_progress_but_never_longer_than_fork_wait() -> None:
    """Why: a gunicorn worker forked while the owner's poller held OpenSSL's locks hung on its
    first SSLContext (``import requests``), every time on Python 3.8. The poller's CA load and
    handshake run under ``transport.tls_lock``; a fork waits for it, at most FORK_WAIT seconds."""
    import sys

    from support.agent import run_python

    done = run_python(sys.executable, ["-c", _FORK_SCRIPT], timeout=30)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    short_took, short_status = result["short"]
    stuck_took, stuck_status = result["stuck"]
    assert 0.2 <= short_took < 0.6 and short_status == 0  # waited for the set-up to finish
    assert 0.5 <= stuck_took < 2.5 and stuck_status == 0  # gave up after FORK_WAIT, child fine
    assert result["free_after"] is True  # the parent's lock is not leaked by the hooks
