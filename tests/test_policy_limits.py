"""A bad policy costs the config service little, and the last good policy stays in force.

- YAML aliases are counted before anything is built: a document that would expand beyond
  ``MAX_EXPANDED_NODES`` nodes (a "billion laughs" bomb of a few hundred bytes) or into
  itself is refused whole, with a message naming the document;
- error messages show bad values in bounded size (``schema.MAX_SHOWN_CHARS``) and at most
  ``schema.MAX_PROBLEMS`` problems, and still name the object and the field;
- the same holds for GovernancePolicy objects arriving through the in-cluster watch
  (recorded objects served by ``support.fake_kube``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml
from pilotfish_webhook.config import schema
from pilotfish_webhook.config.sources import (
    MAX_EXPANDED_NODES,
    FileSource,
    KubeSource,
    PolicyFileError,
    load_documents,
)
from pilotfish_webhook.config.store import PolicyStore
from support.fake_kube import FakeKube

SYSTEM = "pilotfish-system"
DATA = Path(__file__).resolve().parent / "data" / "kube"
POLICIES = "/apis/pilotfish.io/v1alpha1/governancepolicies"

GOOD = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: shop-ns, namespace: shop}
spec:
  lossless: {warmup: {seconds: 61}}
"""


def alias_bomb(levels: int = 9, width: int = 9, name: str = "shop-ns") -> str:
    """A GovernancePolicy whose warm-up seconds is ``width ** levels`` strings through aliases."""
    lines = ["    a0: &a0 [%s]" % ", ".join(['"lol"'] * width)]
    for level in range(1, levels):
        lines.append("    a%d: &a%d [%s]" % (level, level, ", ".join(["*a%d" % (level - 1)] * width)))
    return (
        "apiVersion: pilotfish.io/v1alpha1\nkind: GovernancePolicy\n"
        "metadata: {name: %s, namespace: shop}\n"
        "spec:\n  x:\n%s\n  lossless:\n    warmup:\n      seconds: *a%d\n"
    ) % (name, "\n".join(lines), levels - 1)


def test_an_alias_bomb_is_refused_before_it_is_built_naming_the_document() -> None:
    bomb = alias_bomb()
    assert len(bomb) < 1024  # 9 ** 9 = 387 million strings from under a kilobyte
    started = time.monotonic()
    with pytest.raises(PolicyFileError) as refused:
        load_documents(GOOD + "---\n" + bomb, "policies.yaml")
    assert time.monotonic() - started < 1.0
    message = str(refused.value)
    assert "policies.yaml document 2" in message and "YAML aliases" in message
    assert str(MAX_EXPANDED_NODES) in message and len(message) < 300


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(PolicyFileError, match="refers to a node that contains it"):
        load_documents("a: &x [1, *x]\n", "policies.yaml")


def test_anchors_used_in_moderation_still_load() -> None:
    text = GOOD + "---\n" + GOOD.replace("shop-ns", "other").replace("{seconds: 61}", "&w {seconds: 5}")
    text += "  extra: [*w, *w]\n"
    docs = load_documents(text, "policies.yaml")
    assert [doc["metadata"]["name"] for doc, _ in docs] == ["shop-ns", "other"]
    assert docs[1][0]["spec"]["extra"] == [{"seconds": 5}, {"seconds": 5}]


def test_the_bomb_in_the_watched_file_keeps_the_last_good_policies_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(GOOD)
    store = PolicyStore(SYSTEM)
    source = FileSource(path, store, settle=0)
    assert source.poll()
    path.write_text(GOOD + "---\n" + alias_bomb(name="bomb"))
    assert not source.poll()
    status = json.dumps(store.status())
    assert len(status) < 4096
    assert "YAML aliases" in store.status()["source_error"]["message"]
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 61


def test_a_huge_bad_value_is_shown_in_a_few_hundred_characters_naming_the_field() -> None:
    store = PolicyStore(SYSTEM)
    store.upsert(yaml.safe_load(GOOD), "policies.yaml")
    bad = yaml.safe_load(GOOD)
    bad["spec"]["lossless"]["warmup"]["seconds"] = [["x" * 1_000_000] * 1000] * 1000
    store.upsert(bad, "policies.yaml")
    [error] = store.status()["errors"]
    assert "spec.lossless.warmup.seconds: expected a number (got [[" in error["message"]
    assert len(error["message"]) < 600
    assert store.snapshot.effective("shop", "x").config["warmup_seconds"] == 61


def test_thousands_of_problems_are_counted_not_listed() -> None:
    store = PolicyStore(SYSTEM)
    bad = yaml.safe_load(GOOD)
    bad["spec"]["lossless"]["ignorePaths"] = ["no-slash-%d" % i for i in range(100_000)]
    store.upsert(bad, "policies.yaml")
    [error] = store.status()["errors"]
    assert "spec.lossless.ignorePaths[0]: must match" in error["message"]
    assert "and %d more problem(s)" % (100_000 - schema.MAX_PROBLEMS) in error["message"]
    assert len(error["message"]) < 8192


def test_long_keys_and_names_are_cut_in_messages() -> None:
    store = PolicyStore(SYSTEM)
    bad = yaml.safe_load(GOOD)
    bad["metadata"]["name"] = "n" * 100_000
    bad["spec"]["k" * 100_000] = 1
    store.upsert(bad, "policies.yaml")
    [error] = store.status()["errors"]
    assert "metadata.name: at most 253 characters" in error["message"]
    assert "unknown field" in error["message"] and len(json.dumps(error)) < 4096


# ------------------------------------------------------------------ the in-cluster watch


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    recorded = json.loads((DATA / "policies.json").read_text())
    fake.lists[POLICIES] = [recorded["list"], recorded["list"]]
    huge = json.loads(json.dumps(recorded["list"]["items"][1]))  # shop/shop-ns, valid
    assert huge["metadata"]["name"] == "shop-ns"
    huge["metadata"]["resourceVersion"] = "7001"
    huge["spec"]["lossless"]["warmup"]["seconds"] = ["y" * 1000] * 1400  # ~1.4 MB, under etcd's limit
    events: List[Dict[str, Any]] = [{"type": "MODIFIED", "object": huge}]
    fake.watches[POLICIES] = [events]
    yield fake
    fake.close()


def test_a_huge_invalid_object_from_the_watch_is_rejected_in_bounded_size_and_the_last_good_stays(
    kube: FakeKube,
) -> None:
    store = PolicyStore(SYSTEM)
    source = KubeSource(store, kube.api_client(), watch_timeout=5)
    version = source.relist()
    before = store.snapshot.effective("shop", "checkout").config["warmup_seconds"]
    source.watch_once(version)
    errors = [e for e in store.status()["errors"] if e["object"] == "shop/shop-ns"]
    [error] = errors
    assert "spec.lossless.warmup.seconds: expected a number" in error["message"]
    assert len(error["message"]) < 600
    assert store.snapshot.effective("shop", "checkout").config["warmup_seconds"] == before
