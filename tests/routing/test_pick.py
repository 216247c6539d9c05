"""The per-request pick, on registry answers with a fake clock (no network).

Spec: lane first (tagged -> its instances; none -> baseline in permissive mode, a
ConnectionError naming lane and Service in strict mode); untagged never to a
tagged instance unless the Service has only tagged ones; then weighted random by
the provider's ``max(min%, (t/T)^curve)`` with the server's clock; no weights while
more than half of the instances warm up; offline, evicted and ejected instances
never picked; host spellings of a Service and its ClusterIP all reach it.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from typing import Any, Dict, List, Optional

import pytest
from pilotfish.routing import hosts, table
from pilotfish.routing.table import NoInstanceInLane

WARM = {"enabled": True, "seconds": 100.0, "curve": 2.0, "min_weight_percent": 10.0}
NOW = 1_800_000_000.0  # the server's clock in the answers below
RECEIVED = 5_000.0  # this process's monotonic clock when the answer arrived


def instance(
    pod: str, ip: str, tag: str = "", age: Optional[float] = 10_000.0, **extra: Any
) -> Dict[str, Any]:
    return dict(
        {
            "pod": pod,
            "ip": ip,
            "ports": {"80": 8080},
            "tag": tag,
            "state": "registered",
            "ready": True,
            "ready_at": None if age is None else NOW - age,
            "warmup": dict(WARM),
        },
        **extra,
    )


def answer(*instances: Dict[str, Any], name: str = "stock", **extra: Any) -> Dict[str, Any]:
    service = dict(
        {
            "name": name,
            "cluster_ips": ["10.96.7.7"],
            "ports": [{"name": "http", "port": 80, "target_port": 8080}],
            "instances": list(instances),
        },
        **extra,
    )
    return {"version": "v1", "namespace": "shop", "now": NOW, "services": [service]}


def service_of(raw: Dict[str, Any]) -> table.Service:
    return table.build(raw, "shop", RECEIVED).services[0]


def picks(
    service: table.Service, tag: Optional[str], n: int = 200, now: float = RECEIVED, strict: bool = False
) -> Counter:
    found: Counter = Counter()
    for _ in range(n):
        chosen, _outcome = service.pick(80, tag, strict, now=now)
        found[chosen.pod if chosen is not None else None] += 1
    return found


def test_every_dns_spelling_and_the_cluster_ip_reach_the_service() -> None:
    built = table.build(answer(instance("a", "10.0.0.1")), "shop", RECEIVED)
    service = built.services[0]
    for host in [
        "stock",
        "stock.",
        "stock.shop",
        "stock.shop.svc",
        "stock.shop.svc.cluster.local",
        "stock.shop.svc.cluster.local.",
        "10.96.7.7",
    ]:
        assert built.hosts[host] is service, host
    assert "stock.other" not in built.hosts and "stocks" not in built.hosts
    # from another namespace, the bare name is not this Service
    assert "stock" not in hosts.names("stock", "shop", "web")
    assert "stock.shop" in hosts.names("stock", "shop", "web")


def test_a_tagged_request_stays_in_its_lane_and_falls_back_to_baseline_only_without_one() -> None:
    service = service_of(
        answer(
            instance("base-1", "10.0.0.1"),
            instance("base-2", "10.0.0.2"),
            instance("gray-1", "10.0.0.3", "gray"),
        )
    )
    assert set(picks(service, "gray")) == {"gray-1"}
    assert set(picks(service, None)) == {"base-1", "base-2"}  # untagged never reaches gray
    assert service.pick(80, "blue", False, now=RECEIVED)[1] == "fallback"
    assert set(picks(service, "blue")) == {"base-1", "base-2"}


def test_strict_mode_fails_with_a_connection_error_naming_the_lane_and_the_service() -> None:
    service = service_of(answer(instance("base-1", "10.0.0.1")))
    with pytest.raises(NoInstanceInLane) as raised:
        service.pick(80, "gray", True, now=RECEIVED)
    assert isinstance(raised.value, ConnectionError)
    assert "'gray'" in str(raised.value) and "stock.shop" in str(raised.value)
    untagged = service.pick(80, None, True, now=RECEIVED)[0]
    assert untagged is not None and untagged.pod == "base-1"  # untagged is unaffected


def test_a_service_with_only_tagged_instances_takes_untagged_requests_anywhere() -> None:
    service = service_of(
        answer(instance("gray-1", "10.0.0.3", "gray"), instance("blue-1", "10.0.0.4", "blue"))
    )
    chosen, outcome = service.pick(80, None, False, now=RECEIVED)
    assert outcome == "anywhere" and chosen is not None
    assert set(picks(service, None)) == {"gray-1", "blue-1"}


def test_offline_not_ready_and_evicted_instances_are_never_picked() -> None:
    service = service_of(
        answer(
            instance("ok", "10.0.0.1"),
            instance("offline", "10.0.0.2", state="offline"),
            instance("not-ready", "10.0.0.3", ready=False),
            instance("terminating", "10.0.0.4", terminating=True),
            instance("evicted", "10.0.0.5"),
        )
    )
    service.instances[4].evicted_until = RECEIVED + 60
    assert set(picks(service, None)) == {"ok"}
    assert set(picks(service, None, now=RECEIVED + 61)) == {"ok", "evicted"}


def test_ejected_instances_are_skipped_until_their_backoff_ends_unless_all_are_ejected() -> None:
    service = service_of(answer(instance("a", "10.0.0.1"), instance("b", "10.0.0.2")))
    service.instances[0].ejected_until = RECEIVED + 5
    assert set(picks(service, None)) == {"b"}
    service.instances[1].ejected_until = RECEIVED + 5
    assert set(picks(service, None)) == {"a", "b"}  # a guess beats a certain failure
    first = service.instances[0]
    assert service.pick(80, None, False, exclude=first, now=RECEIVED + 6)[0] is service.instances[1]


def test_an_instance_without_the_requested_port_is_not_a_candidate() -> None:
    service = service_of(answer(instance("a", "10.0.0.1"), instance("b", "10.0.0.2", ports={"81": 9090})))
    assert set(picks(service, None)) == {"a"}


def expected_share(fraction: float, warm: int, curve: float = 2.0, floor: float = 0.10) -> float:
    weight = 1.0 if fraction >= 1 else max(floor, fraction**curve)
    return weight / (warm + weight)


@pytest.mark.parametrize("tenth", range(1, 11))
def test_a_new_instance_gets_its_warmup_share_at_each_tenth_of_the_ramp(tenth: int) -> None:
    """One new instance among three warm ones: share within 5 points of the curve (N=4000, sigma < 0.7)."""
    random.seed(tenth)
    service = service_of(
        answer(
            instance("warm-1", "10.0.0.1"),
            instance("warm-2", "10.0.0.2"),
            instance("warm-3", "10.0.0.3"),
            instance("new", "10.0.0.4", age=0.0),
        )
    )
    now = RECEIVED + tenth * 10.0  # T = 100 s: the fake clock moves by a tenth of T
    n = 4000
    share = picks(service, None, n=n, now=now)["new"] / n
    assert abs(share - expected_share(tenth / 10, warm=3)) <= 0.05, share


def test_the_providers_own_warmup_settings_apply() -> None:
    random.seed(7)
    steep = dict(WARM, seconds=10.0, curve=1.0, min_weight_percent=50.0)
    service = service_of(
        answer(instance("warm", "10.0.0.1"), instance("new", "10.0.0.2", age=0.0, warmup=steep))
    )
    share = picks(service, None, n=4000, now=RECEIVED + 1.0)["new"] / 4000  # floor 50 %: weight .5
    assert abs(share - 0.5 / 1.5) <= 0.05, share


def test_ages_use_the_servers_clock_not_this_process_clock() -> None:
    raw = answer(instance("new", "10.0.0.1", age=30.0))
    service = table.build(raw, "shop", received_mono=RECEIVED).services[0]
    new = service.instances[0]
    assert new.weight(RECEIVED) == pytest.approx(max(0.1, 0.3**2))  # 30 s old when the answer left
    assert new.weight(RECEIVED + 20) == pytest.approx(0.5**2)  # plus our monotonic time since
    assert new.weight(RECEIVED + 70) == 1.0


def test_no_weights_while_more_than_half_of_the_instances_warm_up() -> None:
    random.seed(3)
    service = service_of(
        answer(
            instance("warm", "10.0.0.1"),
            instance("new-1", "10.0.0.2", age=0.0),
            instance("new-2", "10.0.0.3", age=0.0),
        )
    )
    found = picks(service, None, n=3000, now=RECEIVED + 1)
    for pod in ("warm", "new-1", "new-2"):
        assert abs(found[pod] / 3000 - 1 / 3) <= 0.05, found


def test_an_unknown_ready_time_counts_as_warm_never_as_new() -> None:
    service = service_of(answer(instance("a", "10.0.0.1", age=None)))
    assert service.instances[0].weight(RECEIVED) == 1.0


def test_a_new_answer_keeps_what_this_caller_learnt_about_the_same_pods() -> None:
    first = table.build(answer(instance("a", "10.0.0.1"), instance("b", "10.0.0.2")), "shop", RECEIVED)
    first.services[0].instances[0].evicted_until = RECEIVED + 60
    first.services[0].instances[0].sent = 7
    second = table.build(
        answer(instance("a", "10.0.0.1"), instance("c", "10.0.0.3")), "shop", RECEIVED + 1, first
    )
    kept: List[Any] = [(i.pod, i.evicted_until, i.sent) for i in second.services[0].instances]
    assert kept == [("a", RECEIVED + 60, 7), ("c", table.NEVER, 0)]


def test_fits_says_whether_a_kept_alive_connection_may_carry_the_next_request() -> None:
    service = service_of(answer(instance("base", "10.0.0.1"), instance("gray", "10.0.0.2", "gray")))
    base, gray = service.instances
    assert service.fits(gray, 80, "gray", False) and not service.fits(base, 80, "gray", False)
    assert service.fits(base, 80, None, False) and not service.fits(gray, 80, None, False)
    assert service.fits(base, 80, "blue", False) and not service.fits(base, 80, "blue", True)


def test_counts_from_many_threads_at_once_are_never_lost() -> None:
    """A gthread worker routes from 8+ threads: every request is counted, on its Service and its instance."""
    service = service_of(answer(instance("a", "10.0.0.1")))
    target = service.instances[0]
    threads, each = 8, 20_000
    start = threading.Barrier(threads)

    def send() -> None:
        start.wait()
        for _ in range(each):
            service.count("", "", "baseline", sent=target)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        workers = [threading.Thread(target=send) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch)
    assert service.stats == {("", "", "baseline"): threads * each}
    assert target.sent == threads * each


def test_a_new_answer_keeps_the_services_counts_even_for_requests_still_in_flight() -> None:
    """Why: counts restarted at zero whenever the registry answered again (a pod registering
    mid-run), so /status lost the requests before it; a request that had picked from the old
    table and counted after the new one was built was lost as well."""
    first = table.build(answer(instance("a", "10.0.0.1")), "shop", RECEIVED)
    old_service = first.services[0]
    old_service.count("gray", "", "fallback", sent=old_service.instances[0])
    second = table.build(
        answer(instance("a", "10.0.0.1"), instance("b", "10.0.0.2")), "shop", RECEIVED, first
    )
    old_service.count("", "", "baseline", sent=old_service.instances[0])  # picked before the swap
    new_service = second.services[0]
    new_service.count("", "", "baseline", sent=new_service.instances[1])
    assert new_service.stats == {("gray", "", "fallback"): 1, ("", "", "baseline"): 2}
    assert [i.sent for i in new_service.instances] == [2, 1]
