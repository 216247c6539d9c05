"""Merging policies into one app's flat effective config, and keeping the last good one.

Spec (docs/policies.md): cluster scope (the server's own namespace) < namespace scope < app scope
(``spec.selector.apps``), field by field, lists replace; an invalid policy is rejected
with a message naming object and field, shown in status, and the last good version of
that object stays in force; the watched file is re-read within a second of a change.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from pilotfish_webhook.config.merge import PolicySet, parse_policy
from pilotfish_webhook.config.sources import FileSource
from pilotfish_webhook.config.store import PolicyStore

SYSTEM = "pilotfish-system"


def policy(namespace: str, name: str, spec: Dict[str, Any], apps: Optional[list] = None) -> Dict[str, Any]:
    if apps is not None:
        spec = dict(spec, selector={"apps": apps})
    return {
        "apiVersion": "pilotfish.io/v1alpha1",
        "kind": "GovernancePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def warmup(seconds: float) -> Dict[str, Any]:
    return {"lossless": {"warmup": {"seconds": seconds}}}


def policy_set(*objs: Dict[str, Any]) -> PolicySet:
    return PolicySet([parse_policy(o) for o in objs], SYSTEM)


def test_app_scope_beats_namespace_scope_beats_cluster_scope_field_by_field() -> None:
    merged = policy_set(
        policy(
            SYSTEM, "defaults", {"lossless": {"warmup": {"seconds": 100, "curve": 3}}, "logLevel": "info"}
        ),
        policy("shop", "ns", {"lossless": {"warmup": {"seconds": 60}}}),
        policy("shop", "checkout-only", {"lossless": {"warmup": {"curve": 1}}}, apps=["checkout"]),
    )
    checkout = merged.effective("shop", "checkout").config
    assert checkout["warmup_seconds"] == 60  # namespace over cluster
    assert checkout["warmup_curve"] == 1  # app over cluster
    assert checkout["log_level"] == "info"  # inherited from cluster
    cart = merged.effective("shop", "cart").config
    assert cart["warmup_curve"] == 3
    other = merged.effective("elsewhere", "checkout").config
    assert other["warmup_seconds"] == 100 and other["warmup_curve"] == 3


def test_a_cluster_policy_with_a_selector_targets_that_app_in_every_namespace_below_namespace_scope() -> None:
    merged = policy_set(
        policy(SYSTEM, "a-defaults", warmup(100)),
        policy(SYSTEM, "b-checkout", warmup(200), apps=["checkout"]),
        policy("shop", "ns", {"logLevel": "debug"}),
    )
    assert merged.effective("shop", "checkout").config["warmup_seconds"] == 200
    assert merged.effective("shop", "cart").config["warmup_seconds"] == 100
    assert merged.effective("shop", "checkout").sources == [
        "pilotfish-system/a-defaults",
        "pilotfish-system/b-checkout",
        "shop/ns",
    ]


def test_policies_of_one_scope_apply_in_name_order_whatever_order_they_arrived_in() -> None:
    a, b = policy("shop", "a", warmup(1)), policy("shop", "b", warmup(2))
    assert policy_set(a, b).effective("shop", "x").config["warmup_seconds"] == 2
    assert policy_set(b, a).effective("shop", "x").config["warmup_seconds"] == 2


def test_lists_replace_rather_than_append() -> None:
    merged = policy_set(
        policy(SYSTEM, "d", {"tags": {"headers": ["x-pilotfish-tag", "x-mse-tag"]}}),
        policy("shop", "n", {"tags": {"headers": ["X-Lane"]}}),
    )
    assert merged.effective("shop", "x").config["tag_headers"] == ["x-lane"]


def test_lanes_arrive_in_the_agents_vocabulary() -> None:
    lane = {
        "name": "beta",
        "tag": "gray",
        "match": [{"header": "X-Group", "values": ["qa"]}, {"cookie": "Beta", "op": "present"}],
        "percentage": 5,
        "hashKey": "header:X-User",
    }
    config = policy_set(policy("shop", "lanes", {"lanes": [lane]})).effective("shop", "web").config
    assert config["lanes"] == [
        {
            "name": "beta",
            "tag": "gray",
            "match": [
                {"source": "header", "name": "x-group", "op": "exact", "values": ["qa"]},
                {"source": "cookie", "name": "Beta", "op": "present", "values": []},
            ],
            "percentage": 5.0,
            "hash": {"source": "header", "name": "x-user"},
        }
    ]


def test_the_version_is_the_content_so_an_unrelated_change_does_not_move_it() -> None:
    before = policy_set(policy("shop", "n", warmup(60)))
    after = policy_set(policy("shop", "n", warmup(60)), policy("other", "n", warmup(5)))
    assert before.effective("shop", "x").version == after.effective("shop", "x").version
    changed = policy_set(policy("shop", "n", warmup(61)))
    assert changed.effective("shop", "x").version != before.effective("shop", "x").version


def test_with_no_policy_the_config_is_empty_so_the_agent_keeps_its_defaults() -> None:
    effective = policy_set().effective("shop", "x")
    assert effective.config == {} and effective.version


def test_an_invalid_update_keeps_the_last_good_version_of_that_object_and_reports_why() -> None:
    store = PolicyStore(SYSTEM)
    store.replace_all([(policy("shop", "n", warmup(60)), "f document 1")])
    store.replace_all([(policy("shop", "n", warmup(-5)), "f document 1")])
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 60
    errors = store.status()["errors"]
    assert [e["object"] for e in errors] == ["shop/n"]
    assert (
        "GovernancePolicy shop/n (f document 1): spec.lossless.warmup.seconds: must be >= 0"
        in errors[0]["message"]
    )
    store.replace_all([(policy("shop", "n", warmup(30)), "f document 1")])
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 30
    assert store.status()["errors"] == []


def test_a_new_invalid_object_is_simply_not_applied_and_the_others_are() -> None:
    store = PolicyStore(SYSTEM)
    store.replace_all(
        [(policy("shop", "good", warmup(60)), "f 1"), (policy("shop", "bad", {"nope": 1}), "f 2")]
    )
    assert list(store.snapshot.policies) == ["shop/good"]
    assert "spec.nope: unknown field" in store.status()["errors"][0]["message"]


def test_watch_events_upsert_and_delete_and_an_invalid_modification_keeps_the_old_object() -> None:
    store = PolicyStore(SYSTEM)
    store.upsert(policy("shop", "n", warmup(60)), "cluster")
    store.upsert(policy("shop", "n", {"routing": {"laneMode": "sloppy"}}), "cluster")
    assert store.snapshot.effective("shop", "x").config == {"warmup_seconds": 60}
    assert "spec.routing.laneMode" in store.status()["errors"][0]["message"]
    store.delete(policy("shop", "n", {}))
    assert store.snapshot.effective("shop", "x").config == {}
    assert store.status()["errors"] == []


def _write(path: Path, text: str) -> None:
    path.write_text(text)


DOC = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: n, namespace: shop}
spec:
  lossless: {warmup: {seconds: %s}}
"""


def test_the_file_source_sees_a_same_size_edit_that_keeps_the_mtime(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _write(path, DOC % "61")
    store = PolicyStore(SYSTEM)
    source = FileSource(path, store, rehash_every=0.2, settle=0)
    assert source.poll()
    stat = path.stat()
    _write(path, DOC % "62")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    time.sleep(0.25)  # past rehash_every: the behaviour under test
    assert source.poll()
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 62


def test_broken_yaml_keeps_every_policy_in_force_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _write(path, DOC % "61")
    store = PolicyStore(SYSTEM)
    source = FileSource(path, store, settle=0)
    source.poll()
    _write(path, "spec: [unclosed\n")
    assert not source.poll()
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 61
    assert "not valid YAML" in store.status()["source_error"]["message"]
    path.unlink()
    source.poll()
    assert "cannot read" in store.status()["source_error"]["message"]
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 61
