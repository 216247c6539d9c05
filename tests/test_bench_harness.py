"""The overhead benchmark harness (hack/bench/) measures what it says it measures.

These are not timed tests: they check the harness's parsing, statistics and
configuration, and run it for real against small servers for a second or two, so a
broken harness cannot silently publish numbers of the wrong configuration.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from hack.bench import (
    common,
    idle,
    instructions,
    loadgen,
    profile_share,
    rps,
    startup,
    wrapper,
    wrapper_parts,
)


def test_percentile_interpolates_like_numpy_default() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert common.percentile(values, 50) == 3.0
    assert common.percentile(values, 10) == pytest.approx(1.4)
    assert common.percentile(values, 90) == pytest.approx(4.6)
    assert common.median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_the_median_interval_is_the_pair_of_order_statistics_of_the_binomial_tables() -> None:
    # The exact binomial ranks for 95 %: n=6 -> x(1)..x(6) (covers 96.9 %),
    # n=20 -> x(6)..x(15) (95.9 %), n=60 -> x(22)..x(39) (95.1 %).
    assert common.median_interval([float(v) for v in range(6, 0, -1)]) == (1.0, 6.0)
    assert common.median_interval([float(v) for v in range(1, 21)]) == (6.0, 15.0)
    assert common.median_interval([float(v) for v in range(1, 61)]) == (22.0, 39.0)
    low, high = common.median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert low != low and high != high  # nan: five samples cannot give 95 %


def _paired_rounds(ratios_kept: List[float]) -> List[rps.RunResult]:
    results = []
    for index, kept in enumerate(ratios_kept):
        for config, value in (("bare", 1000.0), ("pilotfish", 1000.0 * kept)):
            results.append(rps.RunResult("fastapi-uvicorn", config, index, value, 1, 0, 0, "wrk", 100.0))
    return results


@pytest.mark.parametrize(
    "kept, verdict",
    [
        # In both, single rounds spread across 97 % (p10 below it, p90 above), but
        # twenty of them pin the median on one side.
        ([0.93, 0.94, 0.95, 1.01, 1.02] + [0.98] * 15, "within the ≤ 3 % budget"),
        ([0.90, 0.99, 1.0, 1.01] + [0.95] * 16, "MISSES the ≤ 3 % budget"),
        ([0.96, 0.98] * 10, "inconclusive"),
        ([0.99] * 5, "too few rounds (5)"),
    ],
)
def test_the_budget_verdict_comes_from_the_interval_of_the_median(kept: List[float], verdict: str) -> None:
    (line,) = rps.budget_lines(_paired_rounds(kept))
    assert verdict in line
    assert line.startswith("FastAPI · uvicorn 1 process: pilotfish keeps")


def test_rounds_rotate_so_every_configuration_goes_first_once_per_cycle() -> None:
    firsts = [common.rotated(["bare", "pilotfish", "otel"], r)[0] for r in range(3)]
    assert firsts == ["bare", "pilotfish", "otel"]
    assert sorted(common.rotated(["bare", "pilotfish", "otel"], 7)) == ["bare", "otel", "pilotfish"]


def test_configurations_differ_only_in_the_injection_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("PILOTFISH_ENABLED", "false")
    auto = "/otel/opentelemetry/instrumentation/auto_instrumentation"
    bare = common.config_env("bare", auto)
    agent = common.config_env("pilotfish", auto)
    otel = common.config_env("otel", auto)
    assert "PYTHONPATH" not in bare and "PILOTFISH_ENABLED" not in bare and "OTEL_TRACES_EXPORTER" not in bare
    assert agent["PYTHONPATH"] == str(common.BOOTSTRAP)
    assert otel["PYTHONPATH"] == auto + ":/otel"  # the operator's order: sitecustomize dir, then packages
    assert {otel[k] for k in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")} == {
        "none"
    }
    assert set(agent) - set(bare) == {"PYTHONPATH"}
    with pytest.raises(SystemExit, match="OpenTelemetry is not installed"):
        common.config_env("otel", None)
    with pytest.raises(ValueError, match="unknown configuration 'datadog'"):
        common.config_env("datadog", None)


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       150 |        150 |     _typing
import time:      3000 |       3150 |   typing
import time:       200 |       3350 | pilotfish.bootstrap
import time:        40 |         40 |   sitecustomize
import time:       100 |       3490 | sitecustomize
"""


def test_machine_facts_read_otel_versions_from_its_own_packages_dir(tmp_path: Path) -> None:
    """OTel lives apart (pip --target), as in the operator's image; its version must still show."""
    auto = tmp_path / "otel" / "opentelemetry" / "instrumentation" / "auto_instrumentation"
    auto.mkdir(parents=True)
    dist = tmp_path / "otel" / "opentelemetry_distro-9.8.7.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: opentelemetry-distro\nVersion: 9.8.7\n")
    facts = common.machine_facts(sys.executable, str(auto))
    assert facts.packages["opentelemetry-distro"] == "9.8.7"
    assert common.machine_facts(sys.executable).packages["opentelemetry-distro"] == "absent"


def test_importtime_lines_are_parsed_with_the_module_that_imported_them() -> None:
    entries = startup.parse_importtime(IMPORTTIME)
    assert [(e.module, e.depth, e.parent) for e in entries] == [
        ("_typing", 2, "typing"),
        ("typing", 1, "pilotfish.bootstrap"),
        ("pilotfish.bootstrap", 0, "site"),
        ("sitecustomize", 1, "sitecustomize"),
        ("sitecustomize", 0, "site"),
    ]
    assert entries[1].self_us == 3000 and entries[1].cumulative_us == 3150


def test_import_breakdown_of_the_agent_lists_only_what_bare_does_not_import() -> None:
    entries, total = startup.import_breakdown(sys.executable, "pilotfish", None, repeats=1)
    names = [e.module for e in entries]
    assert "_pilotfish_agent.bootstrap" in names and "sitecustomize" in names
    assert "os" not in names  # every interpreter imports os before site runs
    assert total > 0


def test_the_fallback_timer_times_real_start_ups() -> None:
    times = startup.time_block_loop([sys.executable, "-c", "pass"], common.base_env(), 3)
    assert len(times) == 3 and all(0.001 < t < 10 for t in times)


def test_a_configuration_that_writes_to_stderr_is_refused() -> None:
    with pytest.raises(SystemExit, match="not clean"):
        startup.check_quiet(sys.executable, "import sys; sys.stderr.write('boom')", common.base_env(), "bare")


WRK_REPORT = """\
Running 1s test @ http://127.0.0.1:18765/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.85ms    1.95ms  11.63ms   85.25%
    Req/Sec     1.29k   219.80     1.66k    63.64%
  1412 requests in 1.10s, 717.03KB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:   1284.80
Transfer/sec:    652.44KB
"""


def test_wrk_reports_are_parsed_including_errors() -> None:
    load = rps.parse_wrk(WRK_REPORT)
    assert (load.rps, load.requests, load.non_2xx, load.errors) == (1284.80, 1412, 12, 4)
    with pytest.raises(RuntimeError, match="could not parse"):
        rps.parse_wrk("wrk: unable to connect")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 500 if self.path == "/fail" else 200
        body = b"hello"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Tuple[str, http.server.ThreadingHTTPServer]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1], server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["/", "/close"])
def test_the_fallback_load_generator_counts_keep_alive_and_closing_responses(
    http_server: Tuple[str, object], path: str
) -> None:
    import asyncio

    base, _ = http_server
    result = asyncio.run(loadgen.run(base + path, duration=0.5, connections=2, warmup=0.2))
    assert result.requests > 10
    assert result.errors == 0 and result.non_2xx == 0
    assert result.rps == pytest.approx(result.requests / result.seconds)


def test_the_fallback_load_generator_counts_error_statuses_apart(http_server: Tuple[str, object]) -> None:
    import asyncio

    base, _ = http_server
    result = asyncio.run(loadgen.run(base + "/fail", duration=0.3, connections=1, warmup=0.0))
    assert result.requests == 0 and result.non_2xx > 0


def _dev_python_has(*modules: str) -> None:
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            pytest.skip("%s is not installed in %s" % (name, sys.executable))


@pytest.mark.parametrize(
    ("app", "modules"),
    [("flask-gunicorn", ("flask", "gunicorn")), ("fastapi-uvicorn", ("fastapi", "uvicorn"))],
)
@pytest.mark.parametrize("config", ["bare", "pilotfish"])
def test_a_real_server_run_checks_its_configuration_and_measures_requests(
    tmp_path: Path, app: str, modules: Tuple[str, ...], config: str
) -> None:
    _dev_python_has(*modules)
    result = rps.one_run(
        sys.executable,
        rps.APPS[app],
        config,
        0,
        None,
        duration=1.0,
        warmup=0.0,
        use_wrk=False,
        logdir=tmp_path,
    )
    assert result.agents["pilotfish"] is (config == "pilotfish")
    assert result.agents["otel"] is False
    assert result.requests > 0 and result.errors == 0 and result.non_2xx == 0
    assert result.cpu_us_per_request > 0
    if config == "pilotfish":
        assert result.status is not None and result.status["requests_total"] >= result.requests


def test_simultaneous_rounds_pair_the_servers_and_restart_them_every_n_rounds(tmp_path: Path) -> None:
    """Both servers are loaded in the same round, one result each, paired for the ratio; with
    --restart-every 2 over 3 rounds, rounds 0-1 share their servers and round 2 has new ones."""
    _dev_python_has("fastapi", "uvicorn")
    results = rps.measure(
        sys.executable,
        ["fastapi-uvicorn"],
        ["bare", "pilotfish"],
        rounds=3,
        duration=0.5,
        warmup=0.0,
        use_wrk=False,
        logdir=tmp_path,
        progress=False,
        simultaneous=True,
        restart_every=2,
    )
    for r in range(3):
        assert sorted(res.config for res in results if res.round == r) == ["bare", "pilotfish"]
    assert all(res.requests > 0 and res.errors == 0 for res in results)
    pids = {(r.round, r.config): r.status["pid"] for r in results if r.status is not None}
    assert set(pids) == {(0, "pilotfish"), (1, "pilotfish"), (2, "pilotfish")}
    assert pids[(0, "pilotfish")] == pids[(1, "pilotfish")] != pids[(2, "pilotfish")]
    assert len(rps.ratios(results, "fastapi-uvicorn", "pilotfish")) == 3


def test_the_idle_benchmark_counts_cpu_and_wake_ups_of_a_whole_session() -> None:
    """A child that wakes 50 times a second in its own session is seen doing so."""
    import subprocess

    code = "import time\nfor _ in range(100): time.sleep(0.02)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        time.sleep(0.3)  # past interpreter start-up
        cpu0, n0 = idle.session_schedstat(child.pid)
        time.sleep(1.0)
        cpu1, n1 = idle.session_schedstat(child.pid)
    finally:
        child.kill()
        child.wait()
    assert 20 <= n1 - n0 <= 150, "about 50 wake-ups in one second (an idle process: ~0)"
    assert 0 < cpu1 - cpu0 < 500e6
    assert idle.session_schedstat(child.pid) == (0, 0), "a session with no process left costs nothing"


def test_an_idle_window_counts_threads_that_lived_through_it_or_started_in_it() -> None:
    before = {"1/1": (100, 10), "1/2": (5_000, 40)}  # 1/2: a start-up thread, about to end
    after = {"1/1": (160, 13), "1/3": (20, 2)}  # 1/3 started in the window
    assert idle.window_delta(before, after) == (60 + 20, 3 + 2)


def test_an_idle_run_measures_every_server_over_the_same_windows(tmp_path: Path) -> None:
    _dev_python_has("fastapi", "uvicorn")
    results = idle.run(sys.executable, ["fastapi-uvicorn"], windows=2, window=0.5, settle=0.0)
    assert [(w.config, w.window) for w in results] == [
        ("bare", 0),
        ("pilotfish", 0),
        ("bare", 1),
        ("pilotfish", 1),
    ]
    assert all(w.cpu_ms_per_s > 0 and w.wakeups_per_s > 0 for w in results), results
    # A Python interpreter with uvicorn and FastAPI loaded holds tens of MiB, not bytes or GiB.
    assert all(10 < w.pss_mib < 1000 for w in results)
    table = idle.idle_table(results)
    assert "| FastAPI · uvicorn 1 process | pilotfish | 2 |" in table
    assert "wake-ups/s" in table and "MiB" in table


def test_another_agent_tree_is_a_configuration_of_its_own(tmp_path: Path) -> None:
    env = common.config_env(common.TREE_CONFIG + str(tmp_path), None)
    assert env["PYTHONPATH"] == str(tmp_path.resolve() / "bootstrap")
    assert common.is_pilotfish(common.TREE_CONFIG + str(tmp_path)) and common.is_pilotfish("pilotfish")
    assert not common.is_pilotfish("bare") and not common.is_pilotfish("otel")


_TAG_PROBE = (
    "import _testcapi\n"
    "class Probe(object):\n"
    "    pass\n"
    "getattr(Probe, 'missing', None)\n"
    "print(_testcapi.type_get_version(Probe))\n"
)


def _next_type_version(env: Dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _TAG_PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout)


def test_a_layout_shift_is_bare_with_the_type_version_tags_moved_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("_testcapi", reason="this interpreter has no _testcapi to read a type's version tag")
    monkeypatch.setattr(common, "SHIFT_DIR", tmp_path)
    env = common.config_env("shift@1200", None)
    assert env["PYTHONPATH"] == str(tmp_path / "1200")
    assert not common.is_pilotfish("shift@1200")
    bare = _next_type_version(common.config_env("bare", None))
    shifted = _next_type_version(env)
    # 1200 re-tags over three classes (a class takes at most 1000 tags on 3.12+), give or take
    # the few the loop itself touches.
    assert abs(shifted - bare - 1200) < 50
    assert _next_type_version(common.config_env("shift@0", None)) - bare < 50


@pytest.mark.parametrize("config", ["shift@", "shift@-3", "shift@many", "shift@99999999"])
def test_a_layout_shift_must_be_a_count(config: str) -> None:
    with pytest.raises(SystemExit, match=config):
        common.config_env(config, None)


def test_type_cache_misses_are_read_from_callgrind_calls_with_compressed_names(tmp_path: Path) -> None:
    dump = tmp_path / "cg.1"
    dump.write_text(
        "events: Ir\n"
        "fn=(1) _PyEval_EvalFrameDefault\n"
        "10 5\n"
        "cfn=(2) find_name_in_mro\n"
        "calls=3 0\n"
        "11 300\n"
        "cfn=(3) _PyType_Lookup\n"
        "calls=7 0\n"
        "12 70\n"
        "fn=(4) slot_tp_call\n"
        "cfn=(2)\n"
        "calls=2 0\n"
        "13 200\n"
        "fn=(2)\n"
        "14 500\n"
        "totals: 1075\n"
    )
    assert instructions.type_cache_misses(dump) == 5
    (tmp_path / "cg.2").write_text("events: Ir\nfn=(1) main\n1 5\ntotals: 5\n")
    assert instructions.type_cache_misses(tmp_path / "cg.2") is None


def test_an_agent_that_did_not_count_the_load_is_refused() -> None:
    rps.check_counted({"requests_total": 1200}, 1000)
    with pytest.raises(RuntimeError, match="not on the request path"):
        rps.check_counted({"requests_total": 3}, 1000)
    with pytest.raises(RuntimeError, match="did not answer"):
        rps.check_counted(None, 1000)


def test_a_server_that_runs_another_configuration_is_refused() -> None:
    with pytest.raises(RuntimeError, match="configuration bare is not what the server runs"):
        rps.check_agents("bare", {"pilotfish": True, "otel": False})
    with pytest.raises(RuntimeError, match="configuration otel is not what the server runs"):
        rps.check_agents("otel", {"pilotfish": False, "otel": False})


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_the_in_process_wrapper_benchmark_times_the_counting_path(kind: str) -> None:
    _dev_python_has("flask", "fastapi")
    result = wrapper.measure(sys.executable, kind, rounds=2, calls=50)
    assert result["counted"] >= 2 * 50  # the agent saw every wrapped call
    assert len(result["delta_us"]) == 2
    assert all(t > 0 for t in result["per_call_us"]["bare"] + result["per_call_us"]["pilotfish"])


@pytest.mark.parametrize(
    ("app", "modules"),
    [("flask-gunicorn", ("flask", "gunicorn")), ("fastapi-uvicorn", ("fastapi", "uvicorn"))],
)
def test_the_profile_attributes_cpu_to_the_agents_request_path(
    tmp_path: Path, app: str, modules: Tuple[str, ...]
) -> None:
    _dev_python_has(*modules)
    share = profile_share.profile_app(sys.executable, app, duration=1.0, warmup=0.0, workdir=tmp_path)
    names = [name for name, _calls, _s in share.functions]
    # Both servers count in their own per-request code (the agent's begin, compiled into it).
    counting = (
        "inbound/gunicorn_worker.py:begin" if app == "flask-gunicorn" else "inbound/uvicorn_cycle.py:begin"
    )
    assert any(name.endswith(counting) for name in names), names
    assert share.requests > 0 and 0 < share.share < 0.5


def test_every_step_of_the_inbound_path_is_timed() -> None:
    _dev_python_has("flask", "fastapi")
    rows = dict(wrapper_parts.measure(sys.executable, 2000))
    assert rows["shared.py:Slot.begin + Slot.end"] is not None
    assert all(us is None or us > 0 for us in rows.values())
    assert rows["trivial WSGI app, wrap_wsgi"] > rows["trivial WSGI app, bare"]  # type: ignore[operator]


@pytest.mark.parametrize("mode", ["bare", "agent"])
def test_the_cycle_micro_benchmark_drives_the_recompiled_run_asgi_through_its_short_path(
    agent_tree: Path, mode: str, tmp_path: Path
) -> None:
    """``cycle_instructions`` measures the added lines only if, in its driver, the agent woke,
    recompiled ``run_asgi`` and counted the usual request from the cache: the driver says so
    or fails (here without valgrind, which only counts what the same driver runs)."""
    import os
    import subprocess

    from hack.bench import cycle_instructions

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTFISH_") and k != "PYTHONPATH"}
    if mode == "agent":
        env.update(
            PYTHONPATH=str(agent_tree / "bootstrap"),
            PILOTFISH_STATUS_HOST="127.0.0.1",
            PILOTFISH_STATUS_PORT=str(rps.free_port()),
        )
    done = subprocess.run(
        [sys.executable, str(cycle_instructions.write_driver(tmp_path)), mode, "50", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
