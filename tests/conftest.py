"""Shared fixtures, and which tests run where (README, "Tests").

Interpreters that are absent skip with a reason naming them.

Every test is in one of three sets, chosen here by file (or by test) so that the test files
carry no bookkeeping:

- ``unit``: starts no process and no server, only in-process code (the list below was
  measured: nothing in these files forks, spawns or listens). ``make unit`` runs only them,
  and while it does, a unit test that starts a process fails saying so, so the list stays true.
- ``serial``: asserts on wall-clock time (a deadline, a share of picks per tenth of a second,
  a benchmark run, pods Ready within a probe budget) and would turn flaky beside other tests on
  a loaded machine. ``make test`` runs them alone, after the rest.
- everything else runs in parallel (pytest-xdist, ``--dist loadgroup``). Tests that share
  something the machine has only one of get the same ``xdist_group`` and so run one after
  another on one worker: the local clusters (network namespaces, nftables tables, the
  instance locks of hack/cluster). So do the tests of a file whose servers a module- or
  class-scoped fixture starts once: on several workers each would start them again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from support.agent import ensure_agent_tree  # noqa: E402

# Files (or single tests, "file::name") whose tests start no process and no server, measured
# (fork, exec and listen counted per test); NOT_UNIT takes single tests of these files back out.
# (gRPC servers listen from C, unseen by the guard below: name them here by hand.)
UNIT: Tuple[str, ...] = (
    "agent/test_settings.py",
    "agent/test_shared_counters.py",
    "cluster/test_cluster_store.py",
    "cluster/test_cluster_volumes.py",
    "lifecycle/test_drainer.py",
    "lifecycle/test_probe.py",
    "lifecycle/test_state_machine.py",
    "lifecycle/test_warmup.py",
    "routing/test_pick.py",
    "tags/test_baggage.py",
    "tags/test_inbound.py",
    "tags/test_lanes.py",
    "tags/test_outbound_auth.py",
    "tags/test_outbound_grpc.py",
    "tags/test_outbound_http.py",
    "tags/test_propagation.py",
    "test_bench_rollout.py",
    "test_config_push.py",
    "test_harness.py",
    "test_import_graph.py",
    "test_policy_limits.py",
    "test_policy_merge.py",
    "test_policy_schema.py",
    "test_policy_watch.py",
    "test_reference_doc.py",
    "test_routing_registry.py",
    "test_wait.py",
    "webhook/test_deploy_manifests.py",
    "webhook/test_module_boundaries.py",
    "webhook/test_mutation_cases.py",
    "webhook/test_mutation_corpus.py",
    "webhook/test_mutation_limits.py",
    "webhook/test_patch.py",
    "webhook/test_standdown.py",
)
NOT_UNIT: Tuple[str, ...] = (
    "agent/test_shared_counters.py::test_private_cells_are_read_only_by_the_process_that_counts_in_them",
    "lifecycle/test_drainer.py::test_a_real_grpc_server_is_stopped_after_the_quiet_period_and_its_last_call_completes",
    "lifecycle/test_probe.py::test_http_probe_sends_path_headers_and_a_kube_probe_user_agent",
    "lifecycle/test_probe.py::test_http_probe_times_out_at_timeout_seconds",
    "lifecycle/test_probe.py::test_http_status_200_to_399_is_success",
    "lifecycle/test_probe.py::test_https_probe_does_not_verify_the_certificate_like_the_kubelet",
    "lifecycle/test_probe.py::test_runner_checks_at_the_probe_period_on_its_own_thread",
    "lifecycle/test_probe.py::test_tcp_probe_passes_while_a_socket_listens_and_fails_after",
    "lifecycle/test_warmup.py::test_a_marked_request_in_a_worker_process_reaches_the_owner_through_the_marker_file",
    "tags/test_outbound_auth.py::test_basic_auth_works_and_the_app_sees_its_authorization_header",
    "tags/test_outbound_http.py::test_with_no_tag_the_request_is_byte_for_byte_what_the_app_sends_alone",
    "test_bench_rollout.py::test_each_failure_is_counted_by_its_cause",
    "test_policy_limits.py::test_a_huge_invalid_object_from_the_watch_is_rejected_in_bounded_size_and_the_last_good_stays",
    "test_policy_schema.py::test_committed_crd_and_docs_are_the_rendering_of_the_schema",
    # in-process, but a minute or more of generated policies: too slow for the inner loop
    "test_policy_schema.py::test_crd_schema_and_server_validation_agree_on_generated_policies",
    "test_routing_registry.py::test_in_cluster_services_endpointslices_and_pods_make_the_routing_answer",
    "webhook/test_deploy_manifests.py::test_the_e2e_script_parses_and_says_it_cannot_run_here",
    "test_config_push.py::test_an_answer_is_plain_http_with_uvicorns_headers_and_the_connection_carries_the_next_poll",
    "test_harness.py::test_another_process_never_gets_a_port_this_one_holds",
    "webhook/test_module_boundaries.py::test_the_server_module_loads_without_the_kubernetes_client",
)

# Files (or single tests) that assert on elapsed time: run alone, after the parallel run.
# (Measured: these failed under parallel load and passed alone, or assert a tight deadline.)
SERIAL: Tuple[str, ...] = (
    "routing/test_warmup_realtime.py",  # >= 1000 picks in each 0.3 s, shares within 5 points
    "test_bench_harness.py",  # runs the benchmark harness against real servers for a second or two
    # a fork waits 0.2-0.6 s for the TLS set-up in progress
    "test_config_client.py::test_a_fork_waits_for_tls_set_up_in_progress_but_never_longer_than_fork_wait",
    # a long poll answers after its 1 s timeout, in under 3 s
    "test_config_server.py::test_a_poll_with_the_current_version_waits_for_the_timeout_then_answers_304",
    # /healthz answers in under 1 s while a huge review is parsed
    "webhook/test_server_limits.py::test_a_huge_review_gets_a_bounded_answer_while_healthz_stays_responsive",
    # A local cluster with its node (network namespaces, a kubelet, real pods) waits for pods to
    # become Ready within the kubelet's probe budget: beside three busy workers on two cores, a
    # rollout took over its 120 s and a probed pod missed its 30 s (all passed alone).
    "cluster/test_cluster_main.py",
    "cluster/test_cluster_pilotfish.py",
    "cluster/test_node_kubelet.py",
    "cluster/test_node_network.py",
    "test_demo.py",
)

# Tests that must not run beside each other: one xdist group each, run in order on one worker.
GROUPS: Dict[str, Tuple[str, ...]] = {
    "cluster": ("cluster", "test_demo.py", "test_bench_rollout.py"),
}


def _matches(rel: str, name: str, entries: Tuple[str, ...]) -> bool:
    """Is the test ``rel::name`` (rel relative to tests/) named by one of ``entries``?"""
    for entry in entries:
        path, _, test = entry.partition("::")
        in_path = rel == path or rel.startswith(path.rstrip("/") + "/")
        if in_path and (not test or name == test or name.startswith(test + "[")):
            return True
    return False


def _check_entries(entries: Tuple[str, ...], what: str) -> None:
    """A listed path that no longer exists (a renamed file) fails loudly instead of silently."""
    for entry in entries:
        path = entry.partition("::")[0]
        if not (TESTS / path).exists():
            raise pytest.UsageError("tests/conftest.py %s names tests/%s, which is gone" % (what, path))


def pytest_configure(config: pytest.Config) -> None:
    _check_entries(UNIT, "UNIT")
    _check_entries(NOT_UNIT, "NOT_UNIT")
    _check_entries(SERIAL, "SERIAL")
    for group, entries in GROUPS.items():
        _check_entries(entries, "GROUPS[%r]" % group)
    # Built once here, before pytest-xdist starts its workers, not by each worker at once.
    if not hasattr(config, "workerinput"):
        ensure_agent_tree()
    else:
        config.pluginmanager.register(_GroupIds(), "pilotfish-xdist-group-ids")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> Optional[bool]:
    """Under ``make unit``, files with no unit test are not even imported (seconds of imports)."""
    name = collection_path.name
    if not _unit_run(config) or not (name.startswith("test_") and name.endswith(".py")):
        return None
    rel = collection_path.resolve().relative_to(TESTS).as_posix()
    return None if any(_matches(rel, "", (entry.partition("::")[0],)) for entry in UNIT) else True


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix()
        name = item.name
        if _matches(rel, name, UNIT) and not _matches(rel, name, NOT_UNIT):
            item.add_marker(pytest.mark.unit)
        if _matches(rel, name, SERIAL):
            item.add_marker(pytest.mark.serial)
        group = next((g for g, entries in GROUPS.items() if _matches(rel, name, entries)), None)
        if group is None and _shares_fixtures(item):
            group = rel
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


class _GroupIds:
    """pytest-xdist 3.8 marks a grouped test by appending ``@group`` to ``item._nodeid``, which
    pytest 9.2 no longer reads (its node ids live in ``_id``): without this every group was
    spread over the workers like ungrouped tests. Applied after xdist's own hook, only where
    the suffix is missing, so a fixed xdist makes it a no-op."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: List[pytest.Item]) -> None:
        if not getattr(config.option, "loadgroup", False):
            return
        from _pytest.nodeid import coerce_node_id

        for item in items:
            names = sorted(
                {
                    str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")
                }
            )
            if names and "@" not in item.nodeid:
                item._id = coerce_node_id("%s@%s" % (item.nodeid, "_".join(names)))  # type: ignore[attr-defined]


def _shares_fixtures(item: pytest.Item) -> bool:
    """Does the test use a module- or class-scoped fixture (servers started once for a file)?

    Such a file is one xdist group: split over workers, each would start its servers again.
    """
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope in ("module", "class", "package") for ds in info.name2fixturedefs.values() for d in ds)


def _unit_run(config: pytest.Config) -> bool:
    return config.getoption("markexpr", "") == "unit"


@pytest.fixture(autouse=True)
def _no_process_in_unit_run(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under ``make unit`` (``-m unit``), a test that forks, execs or listens fails and says so."""
    if not _unit_run(request.config):
        yield
        return

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            "a unit test started a process or server: put %s in NOT_UNIT (tests/conftest.py)"
            % request.node.nodeid
        )

    saved = (subprocess._fork_exec, os.fork, socket.socket.listen)  # type: ignore[attr-defined]
    subprocess._fork_exec = refuse  # type: ignore[attr-defined]
    os.fork = refuse
    socket.socket.listen = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess._fork_exec, os.fork, socket.socket.listen = saved  # type: ignore[attr-defined, method-assign]


@pytest.fixture(scope="session", autouse=True)
def agent_tree() -> Path:
    return ensure_agent_tree()
