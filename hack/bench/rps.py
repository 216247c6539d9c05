#!/usr/bin/env python3
"""Requests/s of hello-world apps bare, under pilotfish and under OpenTelemetry.

Servers (docs/benchmarks.md): Flask under gunicorn with one sync worker, FastAPI under uvicorn
in one process (uvloop + httptools, as ``uvicorn[standard]``; access log off). Apps: ``hack/bench/apps/``.

Method. Per app, one server per configuration is started, pinned to CPU 1 with
``taskset``, and asked (``/_bench/agents``) which agents it loaded: the harness
aborts if that is not the configuration it meant to run. The load generator is
pinned to CPU 0 (wrk ``-t1`` when installed, else the asyncio fallback
``hack/bench/loadgen.py``). A run is a 1 s warm-up (discarded) then a fixed
measurement on ``GET /``; runs rotate over the configurations (A B C, B C A, ...)
for ``--rounds`` rounds (>= 5), so the three servers take turns through the same
stretch of machine weather. Under pilotfish, the agent's ``/status`` must have
counted every answered request, or the run aborts (an idle agent is not a
measurement). ``--fresh`` starts a new server for every run instead.
``--simultaneous`` loads the servers of a round at the same time, each with its own
generator: they share CPU 1 over the same seconds, so the ratio of their requests/s
is the ratio of their CPU cost per request, free of the drift between runs taken one
after the other. A configuration ``pilotfish@DIR`` runs the agent tree in ``DIR``
(``hack/build_agent_tree.py --out DIR``) to compare two versions side by side.

We report per app and configuration the median requests/s with min-max, the ratio
to bare as the median (min-max) of per-round ratios (paired within a round), and
the server's CPU time per request (user+system of its process session), which a
busy shared machine disturbs much less than requests/s.

Usage: ``python -m hack.bench.rps [--rounds N] [--duration S] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .common import (
    APPS_DIR,
    CONFIGS,
    ROOT,
    Summary,
    bench_python,
    config_env,
    is_pilotfish,
    markdown_table,
    median_interval,
    otel_sitecustomize_dir,
    rotated,
    session_stats,
    taskset_prefix,
)

SERVER_CPU = 1
LOADGEN_CPU = 0


@dataclass
class App:
    name: str
    label: str
    connections: int

    def argv(self, python: str, port: int) -> List[str]:
        if self.name == "flask-gunicorn":
            return [
                python,
                "-m",
                "gunicorn",
                "--workers",
                "1",
                "--worker-class",
                "sync",
                "--bind",
                "127.0.0.1:%d" % port,
                "--chdir",
                str(APPS_DIR),
                "--log-level",
                "warning",
                "flask_hello:app",
            ]
        if self.name == "fastapi-uvicorn":
            return [
                python,
                "-m",
                "uvicorn",
                "--app-dir",
                str(APPS_DIR),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # Loop and HTTP parser left to uvicorn's "auto": uvloop and httptools, which
                # the bench venv installs, as `uvicorn[standard]` (FastAPI's own advice) does.
                "--log-level",
                "warning",
                "--no-access-log",
                "fastapi_hello:app",
            ]
        raise ValueError(self.name)


APPS = {
    # A sync worker serves one connection at a time (and closes it after each
    # response); a few connections keep its accept queue non-empty.
    "flask-gunicorn": App("flask-gunicorn", "Flask · gunicorn 1 sync worker", connections=4),
    "fastapi-uvicorn": App("fastapi-uvicorn", "FastAPI · uvicorn 1 process", connections=16),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> Optional[bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Load:
    rps: float
    requests: int
    non_2xx: int
    errors: int
    generator: str


def run_wrk(url: str, seconds: float, connections: int) -> Load:
    argv = taskset_prefix(LOADGEN_CPU) + [
        "wrk",
        "-t1",
        "-c%d" % connections,
        "-d%ds" % max(1, round(seconds)),
        "--timeout",
        "5s",
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Load:
    """Requests/s, request count, non-2xx count and socket errors from wrk's report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if rps is None or total is None:
        raise RuntimeError("could not parse wrk output:\n" + out)
    errors = sum(int(g) for g in sock.groups()) if sock else 0
    return Load(
        float(rps.group(1)), int(total.group(1)), int(non2xx.group(1)) if non2xx else 0, errors, "wrk"
    )


def run_pyload(url: str, seconds: float, connections: int) -> Load:
    argv = taskset_prefix(LOADGEN_CPU) + [
        sys.executable,
        "-m",
        "hack.bench.loadgen",
        "--url",
        url,
        "--duration",
        str(seconds),
        "--connections",
        str(connections),
    ]
    out = subprocess.run(
        argv, cwd=str(ROOT), capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    data = json.loads(out)
    return Load(data["rps"], data["requests"], data["non_2xx"], data["errors"], "loadgen.py")


@dataclass
class RunResult:
    app: str
    config: str
    round: int
    rps: float
    requests: int
    non_2xx: int
    errors: int
    generator: str
    cpu_us_per_request: float = 0.0
    agents: Dict[str, Any] = field(default_factory=dict)
    status: Optional[Dict[str, Any]] = None


def session_cpu_seconds(session: int) -> float:
    """User + system CPU seconds of every live process in a session (the server and its workers).

    Requests/s on a shared machine moves with whatever else runs; CPU time per request
    moves much less, so it is reported beside requests/s as the steadier ratio.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(int(fields[11]) + int(fields[12]) for fields in session_stats(session).values())
    return total / float(ticks)


class Server:
    """One server process (in its own session, so it and its workers stop together)."""

    def __init__(self, argv: List[str], env: Dict[str, str], log: Path) -> None:
        self.log = log
        self._log_handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            taskset_prefix(SERVER_CPU) + argv,
            env=env,
            cwd=str(APPS_DIR),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        self._log_handle.close()


def wait_agents(base: str, server: Server, timeout: float = 90.0) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                "server exited with %s; log:\n%s" % (server.proc.returncode, server.log.read_text())
            )
        body = http_get(base + "/_bench/agents")
        if body is not None:
            return dict(json.loads(body))
        time.sleep(0.1)
    raise RuntimeError("server not ready after %.0f s; log:\n%s" % (timeout, server.log.read_text()))


def check_agents(config: str, agents: Dict[str, Any]) -> None:
    """Refuse to measure a configuration that is not the one requested."""
    want_pilotfish = is_pilotfish(config)
    want_otel = config == "otel"
    if bool(agents.get("pilotfish")) != want_pilotfish or bool(agents.get("otel")) != want_otel:
        raise RuntimeError("configuration %s is not what the server runs: %r" % (config, agents))


def check_counted(status: Optional[Dict[str, Any]], served: int) -> None:
    """Under pilotfish the agent must have seen every request, or we measured an idle agent.

    ``served`` counts the measured requests only; the agent also saw the warm-up and
    the ``/_bench/agents`` probe, so its total is at least ``served``.
    """
    if status is None:
        raise RuntimeError("pilotfish status server did not answer /status: is the agent awake?")
    counted = status.get("requests_total")
    if not isinstance(counted, int) or counted < served:
        raise RuntimeError(
            "pilotfish counted %r requests but the load generator got %d answers: inbound wrapper "
            "not on the request path" % (counted, served)
        )


class Live:
    """A started server of one app under one configuration, checked to run that configuration."""

    def __init__(
        self, python: str, app: App, config: str, otel_dir: Optional[str], logdir: Path, use_wrk: bool
    ) -> None:
        self.app = app
        self.config = config
        self.use_wrk = use_wrk
        self.served = 0  # measured answers so far: the agent must have counted at least these
        port = free_port()
        extra: Dict[str, str] = {}
        self.status_port: Optional[int] = None
        if is_pilotfish(config):
            # Never the default 55199: other benchmarks and tests share this machine.
            self.status_port = free_port()
            extra = {"PILOTFISH_STATUS_HOST": "127.0.0.1", "PILOTFISH_STATUS_PORT": str(self.status_port)}
        self.base = "http://127.0.0.1:%d" % port
        self.server = Server(
            app.argv(python, port),
            config_env(config, otel_dir, extra),
            logdir / ("%s-%s.log" % (app.name, re.sub(r"[^A-Za-z0-9_.-]+", "_", config))),
        )
        try:
            self.agents = wait_agents(self.base, self.server)
            check_agents(config, self.agents)
        except BaseException:
            self.server.stop()
            raise

    def status(self) -> Optional[Dict[str, Any]]:
        if self.status_port is None:
            return None
        raw = http_get("http://127.0.0.1:%d/status" % self.status_port)
        if raw is None:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            return {"unparsed": raw[:200].decode("latin-1")}

    def measure(self, round_index: int, duration: float, warmup: float) -> RunResult:
        load = run_wrk if self.use_wrk else run_pyload
        if warmup > 0:
            load(self.base + "/", warmup, self.app.connections)
        cpu_before = session_cpu_seconds(self.server.proc.pid)
        result = load(self.base + "/", duration, self.app.connections)
        cpu = session_cpu_seconds(self.server.proc.pid) - cpu_before
        self.served += result.requests
        status = self.status()
        if is_pilotfish(self.config):
            check_counted(status, self.served)
        return RunResult(
            app=self.app.name,
            config=self.config,
            round=round_index,
            rps=result.rps,
            requests=result.requests,
            non_2xx=result.non_2xx,
            errors=result.errors,
            generator=result.generator,
            cpu_us_per_request=cpu * 1e6 / result.requests if result.requests else 0.0,
            agents=self.agents,
            status=status,
        )

    def stop(self) -> None:
        self.server.stop()


def measure_together(lives: List[Live], round_index: int, duration: float, warmup: float) -> List[RunResult]:
    """One run of every server at once, each with its own load generator.

    Why: the servers share CPU 1, so over the same seconds the scheduler gives each
    an equal share of one core, and whatever else the machine runs hits them all
    alike. Each server's requests/s is then its throughput on half (a third, ...) of
    the core, and the ratio between them is the ratio of their CPU cost per request:
    the quantity a ≤ 3 % budget is about, without the drift between runs taken one
    after the other.
    """
    results: Dict[int, RunResult] = {}
    failures: List[BaseException] = []

    def run(i: int, live: Live) -> None:
        try:
            results[i] = live.measure(round_index, duration, warmup)
        except BaseException as exc:  # reported below, on the calling thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i, live)) for i, live in enumerate(lives)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [results[i] for i in range(len(lives))]


def one_run(
    python: str,
    app: App,
    config: str,
    round_index: int,
    otel_dir: Optional[str],
    duration: float,
    warmup: float,
    use_wrk: bool,
    logdir: Path,
) -> RunResult:
    """Start a server, measure once, stop it."""
    live = Live(python, app, config, otel_dir, logdir, use_wrk)
    try:
        return live.measure(round_index, duration, warmup)
    finally:
        live.stop()


def measure(
    python: str,
    apps: List[str],
    configs: List[str],
    rounds: int,
    duration: float,
    warmup: float,
    use_wrk: bool,
    logdir: Path,
    fresh: bool = False,
    progress: bool = True,
    simultaneous: bool = False,
    restart_every: int = 0,
) -> List[RunResult]:
    """All rounds. Per app, one server per configuration lives through all its rounds
    (``fresh``: a new server for every run instead, slower and no less noisy here;
    ``simultaneous``: the configurations of a round are loaded at the same time;
    ``restart_every``: new servers every that many rounds).

    Why restart: two starts of the same server differ by up to ~1 % in requests/s for as
    long as they live (hash seed, address layout), so the servers of one run are one draw
    each. Restarting every few rounds puts several draws into the rounds, and their spread
    into the interval, instead of one draw's luck into the ratio."""
    otel_dir = otel_sitecustomize_dir(python) if "otel" in configs else None
    logdir.mkdir(parents=True, exist_ok=True)
    results = []

    def note(res: RunResult, r: int) -> None:
        results.append(res)
        if progress:
            print(
                "rps round %d/%d %s %s: %.0f req/s, %.0f CPU µs/req (non-2xx %d, errors %d)"
                % (
                    r + 1,
                    rounds,
                    res.app,
                    res.config,
                    res.rps,
                    res.cpu_us_per_request,
                    res.non_2xx,
                    res.errors,
                ),
                file=sys.stderr,
            )

    for app_name in apps:
        app = APPS[app_name]
        if fresh:
            for r in range(rounds):
                for config in rotated(configs, r):
                    note(one_run(python, app, config, r, otel_dir, duration, warmup, use_wrk, logdir), r)
            continue
        lives: Dict[str, Live] = {}
        try:
            for r in range(rounds):
                if not lives or (restart_every > 0 and r % restart_every == 0 and r > 0):
                    for live in lives.values():
                        live.stop()
                    lives.clear()
                    for config in configs:
                        lives[config] = Live(python, app, config, otel_dir, logdir, use_wrk)
                if simultaneous:
                    for res in measure_together([lives[c] for c in rotated(configs, r)], r, duration, warmup):
                        note(res, r)
                    continue
                for config in rotated(configs, r):
                    note(lives[config].measure(r, duration, warmup), r)
        finally:
            for live in lives.values():
                live.stop()
    return results


def ratios(results: List[RunResult], app: str, config: str, metric: str = "rps") -> List[float]:
    """Per-round ``config / bare`` of ``metric``, paired within each round."""
    by_round: Dict[int, Dict[str, float]] = {}
    for res in results:
        if res.app == app:
            by_round.setdefault(res.round, {})[res.config] = float(getattr(res, metric))
    return [row[config] / row["bare"] for row in by_round.values() if config in row and row.get("bare")]


def rps_table(results: List[RunResult]) -> str:
    rows = []
    apps = list(dict.fromkeys(r.app for r in results))
    configs = list(dict.fromkeys(r.config for r in results))
    for app in apps:
        for config in configs:
            runs = [r for r in results if r.app == app and r.config == config]
            if not runs:
                continue
            s = Summary.of([r.rps for r in runs])
            c = Summary.of([r.cpu_us_per_request for r in runs])
            if config == "bare":
                ratio = cpu_ratio = "1"
            else:
                q = Summary.of(ratios(results, app, config))
                ratio = "%.3f (%.3f–%.3f)" % (q.median, q.lo, q.hi) if q.n else "—"
                k = Summary.of(ratios(results, app, config, "cpu_us_per_request"))
                cpu_ratio = "%.3f (%.3f–%.3f)" % (k.median, k.lo, k.hi) if k.n else "—"
            bad = sum(r.non_2xx + r.errors for r in runs)
            rows.append(
                [
                    APPS[app].label,
                    config,
                    str(s.n),
                    "%.0f (%.0f–%.0f)" % (s.median, s.lo, s.hi),
                    ratio,
                    "%.0f (%.0f–%.0f)" % (c.median, c.lo, c.hi),
                    cpu_ratio,
                    str(bad),
                ]
            )
    return markdown_table(
        [
            "app · server",
            "configuration",
            "runs",
            "requests/s, median (min–max)",
            "ratio to bare, median (min–max)",
            "server CPU µs/request, median (min–max)",
            "CPU ratio to bare",
            "non-2xx + socket errors",
        ],
        rows,
    )


def budget_lines(results: List[RunResult], budget: float = 0.97) -> List[str]:
    """The verdict on the 3 % budget, honest about what a noisy run can resolve.

    The budget is about the typical cost, the median of the paired ratios; single
    rounds spread wider than 3 % on a shared machine (p10-p90, printed too). So the
    verdict comes from a 95 % confidence interval of that median
    (:func:`common.median_interval`): met when the whole interval keeps at least
    97 %, missed when it lies below, inconclusive when it straddles the line (more
    rounds narrow it).
    """
    lines = []
    for app in dict.fromkeys(r.app for r in results):
        rs = ratios(results, app, "pilotfish")
        if not rs:
            continue
        s = Summary.of(rs)
        low, high = median_interval(rs)
        cpu = Summary.of(ratios(results, app, "pilotfish", "cpu_us_per_request"))
        if math.isnan(low):
            verdict = "too few rounds (%d) to judge" % s.n
        elif low >= budget:
            verdict = "within the ≤ 3 % budget (the whole interval keeps ≥ 97 %)"
        elif high < budget:
            verdict = "MISSES the ≤ 3 % budget (the whole interval keeps < 97 %)"
        else:
            verdict = "inconclusive against the ≤ 3 % budget: the interval straddles 97 %; run more rounds"
        lines.append(
            "%s: pilotfish keeps %.1f %% of bare requests/s (median of %d paired ratios; 95 %% confidence "
            "interval of the median %.1f–%.1f %%; single rounds p10–p90 %.1f–%.1f %%) and uses %.1f %% of "
            "bare's server CPU per request — %s"
            % (
                APPS[app].label,
                100 * s.median,
                s.n,
                100 * low,
                100 * high,
                100 * s.p10,
                100 * s.p90,
                100 * cpu.median,
                verdict,
            )
        )
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.rps", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", help="interpreter that runs the servers (default: .venvs/bench/bin/python)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument("--fresh", action="store_true", help="a new server for every run")
    parser.add_argument(
        "--simultaneous",
        action="store_true",
        help="load the configurations of a round at the same time (they share the server CPU)",
    )
    parser.add_argument(
        "--restart-every",
        type=int,
        default=0,
        metavar="N",
        help="new servers every N rounds (0: one server per configuration for the whole run)",
    )
    parser.add_argument("--logdir", type=Path, default=Path("build") / "bench" / "logs")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    args = parser.parse_args(argv)
    python = bench_python(args.python)
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    results = measure(
        python,
        [a.strip() for a in args.apps.split(",") if a.strip()],
        [c.strip() for c in args.configs.split(",") if c.strip()],
        args.rounds,
        args.duration,
        args.warmup,
        use_wrk,
        args.logdir,
        fresh=args.fresh,
        simultaneous=args.simultaneous,
        restart_every=max(0, args.restart_every),
    )
    print("Load generator: %s\n" % ("wrk -t1" if use_wrk else "hack/bench/loadgen.py"))
    print(rps_table(results))
    for line in budget_lines(results):
        print("\n" + line)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
