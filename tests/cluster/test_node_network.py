"""The local cluster's pod network: own addresses, ClusterIPs with kube-proxy semantics, names.

Real network namespaces, bridge and nftables (root; skipped with the reason otherwise). All
traffic stays on the addresses of the namespaces these tests create.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
from nodekit import Node, echo_container, http_get, pod_ip, require_node
from support.wait import eventually

from hack.cluster.network import Network, Ranges, _try_lock, cleanup_instance


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "state")
    try:
        yield n
    finally:
        n.stop()


def names_of_new_connections(host: str, port: int, count: int) -> Counter:
    """Which pod answered each of ``count`` new connections."""
    seen: Counter = Counter()
    for _ in range(count):
        _, body = http_get(host, port)
        seen[body.split()[0]] += 1
    return seen


def start_echo_pods(node: Node, names: List[str]) -> List[str]:
    for name in names:
        node.pod(name, [echo_container(readinessProbe={"tcpSocket": {"port": 8000}, "periodSeconds": 1})])
    return [pod_ip(node.wait_ready(name)) for name in names]


def test_two_pods_bind_the_same_port_side_by_side_each_on_its_own_address(node: Node) -> None:
    ips = start_echo_pods(node, ["one", "two"])
    assert len(set(ips)) == 2
    assert all(ip.startswith(str(node.network.ranges.pod_net.network_address)[:-1]) for ip in ips)
    assert http_get(ips[0], 8000)[1].split()[0] == "one"
    assert http_get(ips[1], 8000)[1].split()[0] == "two"


def test_pods_have_no_default_route_and_the_forward_chain_drops_what_is_not_between_pods(node: Node) -> None:
    start_echo_pods(node, ["solo"])
    routes = node.exec("solo", ["ip", "route"]).stdout
    assert "default" not in routes
    assert str(node.network.ranges.service_net) in routes and "via %s" % node.network.host_address in routes
    rules = subprocess.run(
        ["nft", "list", "chain", "ip", node.network.ranges.table, "filter_forward"],
        capture_output=True,
        text=True,
    ).stdout
    bridge = node.network.ranges.bridge
    assert 'iifname "%s" drop' % bridge in rules and 'oifname "%s" drop' % bridge in rules
    assert "masquerade" not in subprocess.run(
        ["nft", "list", "chain", "ip", node.network.ranges.table, "nat_postrouting"],
        capture_output=True,
        text=True,
    ).stdout.replace("@hairpin masquerade", "")


def test_cluster_ip_spreads_new_connections_while_an_established_one_stays(node: Node) -> None:
    ips = start_echo_pods(node, ["a", "b"])
    vip = node.service("web", 80)
    node.endpoints("web", ips)
    eventually(
        lambda: node.network.applied_endpoints("default", "web").get(80) is not None, 10, "rules applied"
    )

    seen = names_of_new_connections(vip, 80, 40)
    assert set(seen) == {"a", "b"}, seen  # P(all 40 on one pod) = 2 * 0.5**40

    kept = http.client.HTTPConnection(vip, 80, timeout=5)
    kept.request("GET", "/")
    first = kept.getresponse().read().decode().split()[0]
    for _ in range(20):
        kept.request("GET", "/")
        assert kept.getresponse().read().decode().split()[0] == first

    # The endpoint this connection uses leaves the Service: new connections avoid it at once
    # (no delay configured), the established connection keeps talking to it.
    other = "b" if first == "a" else "a"
    node.endpoints("web", [ips[["a", "b"].index(other)]])
    eventually(
        lambda: len(node.network.applied_endpoints("default", "web")[80]) == 1, 10, "one endpoint applied"
    )
    assert names_of_new_connections(vip, 80, 10) == Counter({other: 10})
    kept.request("GET", "/")
    assert kept.getresponse().read().decode().split()[0] == first
    kept.close()


def test_endpoint_changes_reach_the_rules_after_the_propagation_delay(tmp_path: Path) -> None:
    delay = 1.5
    node = Node(tmp_path / "state", propagation_delay=delay)
    try:
        ips = start_echo_pods(node, ["old", "new"])
        vip = node.service("web", 80)
        node.endpoints("web", ips[:1])
        eventually(
            lambda: node.network.applied_endpoints("default", "web").get(80) is not None, 10, "rules applied"
        )
        assert names_of_new_connections(vip, 80, 3) == Counter({"old": 3})

        changed = time.monotonic()
        node.endpoints("web", ips)
        eventually(
            lambda: "new" in names_of_new_connections(vip, 80, 4), 10, "connections reaching the new pod"
        )
        took = time.monotonic() - changed
        assert delay <= took < delay + 2.0, took
    finally:
        node.stop()


def test_a_service_without_endpoints_refuses_connections(node: Node) -> None:
    vip = node.service("empty", 80)
    node.endpoints("empty", [])
    eventually(
        lambda: node.network.applied_endpoints("default", "empty").get(80) is not None, 10, "rules applied"
    )
    with pytest.raises(ConnectionRefusedError):
        http_get(vip, 80, timeout=3)


CLIENT = r"""
import socket, sys, urllib.request
for name in sys.argv[1:]:
    try:
        body = urllib.request.urlopen("http://%s/" % name, timeout=5).read().decode()
        print(name, "->", body.split()[0], flush=True)
    except Exception as e:
        print(name, "-> error", type(e).__name__, flush=True)
"""


def test_pods_reach_services_by_every_name_form_and_short_names_only_in_their_namespace(node: Node) -> None:
    node.store.create("namespaces", {"metadata": {"name": "shop"}})
    node.pod(
        "server", [echo_container(readinessProbe={"tcpSocket": {"port": 8000}, "periodSeconds": 1})], "shop"
    )
    ip = pod_ip(node.wait_ready("server", "shop"))
    node.service("web", 80, "shop")
    node.endpoints("web", [ip], "shop")
    forms = ["web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local"]
    node.pod("same-ns", [echo_container()], "shop")
    node.pod("other-ns", [echo_container()], "default")
    node.wait_ready("same-ns", "shop")
    node.wait_ready("other-ns")

    def answered() -> Optional[str]:
        out: str = node.exec("same-ns", ["python3", "-c", CLIENT, *forms], "shop").stdout
        return out if "-> server" in out else None

    same = eventually(answered, 15, "the service answering in the same namespace", interval=0.1)
    other = node.exec("other-ns", ["python3", "-c", CLIENT, "web", "web.shop"]).stdout
    for form in forms:
        assert "%s -> server" % form in same, same
    assert "web -> error" in other, other
    assert "web.shop -> server" in other, other


def test_hairpin_a_pod_reaches_itself_through_its_own_service(node: Node) -> None:
    ips = start_echo_pods(node, ["self"])
    node.service("loop", 80)
    node.endpoints("loop", ips)

    def both_forms_reach_self() -> str:
        out: str = node.exec(
            "self", ["python3", "-c", CLIENT, "loop", "loop.default.svc.cluster.local"]
        ).stdout
        assert out.count("-> self") == 2, out
        return out

    eventually(both_forms_reach_self, 15, "the pod reaching itself through its service", interval=0.1)


def test_pods_reach_the_host_side_address(node: Node) -> None:
    start_echo_pods(node, ["client"])
    code = "import socket; socket.create_connection((%r, %d), timeout=5); print('connected')"
    listen = (
        "import socket, time; s = socket.socket(); s.bind((%r, 0)); s.listen();"
        " print(s.getsockname()[1], flush=True); s.accept(); time.sleep(1)" % node.network.host_address
    )
    server = subprocess.Popen(["python3", "-c", listen], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        out = node.exec("client", ["python3", "-c", code % (node.network.host_address, port)])
        assert "connected" in out.stdout, out
    finally:
        server.kill()
        server.wait()


def test_leftovers_of_a_killed_cluster_are_removed_at_the_next_start(tmp_path: Path) -> None:
    require_node()
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys, time\n"
        "sys.path[:0] = [%r, %r, %r]\n"
        "from nodekit import Node, echo_container\n"
        "n = Node(__import__('pathlib').Path(%r))\n"
        "n.pod('victim', [echo_container(volumeMounts=[{'name': 'mem', 'mountPath': '/scratch'}])],\n"
        "      volumes=[{'name': 'mem', 'emptyDir': {'medium': 'Memory'}}])\n"
        "n.wait_log('victim', 'listening')\n"
        "print(n.network.ranges.instance, flush=True)\n"
        "time.sleep(600)\n"
        % (
            str(Path(__file__).resolve().parents[2]),
            str(Path(__file__).resolve().parents[1]),  # tests/, for support (as conftest.py sets it)
            str(Path(__file__).resolve().parent),
            str(tmp_path / "state"),
        )
    )
    crashed = subprocess.Popen(
        [__import__("sys").executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=str(tmp_path)
    )
    try:
        assert crashed.stdout is not None
        line = crashed.stdout.readline()
        assert line.strip().isdigit(), "the node did not come up"
        ranges = Ranges(int(line))
    finally:
        crashed.kill()  # SIGKILL: nothing of the node's own cleanup runs
        crashed.wait()
    # Hold the dead instance's lock while looking, or another cluster starting meanwhile (tests
    # run in parallel on these machines) would clean it first, as it should.
    lock = eventually(lambda: _try_lock(ranges.lock_path), 10, "the dead instance's lock")
    netns = [n for n in _netns() if n.startswith(ranges.netns_prefix)]
    assert netns, "the killed node left no network namespace: nothing to test"
    pods = _pids_in(netns)
    assert pods, "the pod process should have outlived its node"
    assert _mounts_tagged(ranges.netns_prefix), "the Memory emptyDir should still be mounted"
    os.close(lock)

    again = Network(tmp_path / "state2", instance=ranges.instance)
    again.start()
    try:
        assert not [n for n in _netns() if n.startswith(ranges.netns_prefix)]
        assert not _alive(pods)
        assert not _mounts_tagged(ranges.netns_prefix)
    finally:
        again.stop()
    assert not Path("/sys/class/net", ranges.bridge).exists()
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert ranges.table not in out.split()
    cleanup_instance(ranges)  # nothing left: a no-op


def _netns() -> List[str]:
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir())
    except FileNotFoundError:
        return []


def _pids_in(netns: List[str]) -> List[int]:
    from hack.cluster.network import processes_in_netns

    return processes_in_netns(netns)


def _alive(pids: List[int]) -> List[int]:
    out = []
    for pid in pids:
        try:
            state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.append(pid)
    return out


def _mounts_tagged(prefix: str) -> List[str]:
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " - tmpfs " + prefix in line
    ]
