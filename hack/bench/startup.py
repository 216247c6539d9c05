#!/usr/bin/env python3
"""Interpreter start-up cost: ``python -c pass`` bare, under pilotfish, under OpenTelemetry.

Every process of an injected pod pays the agent's start-up, including ``pip``,
migrations and one-off scripts, so the budget is strict (at most 20 ms added, docs/benchmarks.md).

Method. Configurations are interleaved in rounds with a rotating order (A B C, B C A,
C A B, ...), so slow phases of a shared machine hit all of them alike. Each round
runs a small block of start-ups per configuration, with hyperfine (``-N``, no shell)
when it is installed and a plain ``subprocess`` timing loop otherwise, so the script
also runs on a fresh machine. We report per configuration the median and p10-p90
of all start-ups, and the added time as the median (p10-p90) of the per-round
differences to ``bare`` (paired, which cancels most of the machine's drift).

Then ``-X importtime`` of the pilotfish start-up, repeated, shows which modules the
agent imports that a bare interpreter does not, with their self and cumulative
microseconds (medians): the list to shorten if the budget is missed.

Usage: ``python -m hack.bench.startup [--rounds N] [--runs-per-block K] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .common import (
    CONFIGS,
    Summary,
    bench_python,
    config_env,
    markdown_table,
    median,
    otel_sitecustomize_dir,
    rotated,
)

SCENARIOS: Dict[str, str] = {
    "python -c pass": "pass",
    "python -c 'import flask'": "import flask",
}
DEFAULT_SCENARIOS = ("python -c pass", "python -c 'import flask'")


def time_block_hyperfine(argv: List[str], env: Dict[str, str], runs: int) -> List[float]:
    """``runs`` start-ups timed by hyperfine, in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hf.json")
        subprocess.run(
            [
                "hyperfine",
                "-N",
                "--style",
                "none",
                "--warmup",
                "1",
                "--runs",
                str(runs),
                "--export-json",
                out,
                shlex.join(argv),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
        with open(out) as handle:
            data = json.load(handle)
    return [float(t) for t in data["results"][0]["times"]]


def time_block_loop(argv: List[str], env: Dict[str, str], runs: int) -> List[float]:
    """Fallback without hyperfine: wall time of ``subprocess.run``, one warm-up discarded."""
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


@dataclass
class ScenarioResult:
    scenario: str
    # configuration -> all start-up times (ms)
    samples: Dict[str, List[float]]
    # configuration -> per-round (block median - bare block median), ms
    deltas: Dict[str, List[float]]


def check_quiet(python: str, code: str, env: Dict[str, str], config: str) -> None:
    """A configuration that prints errors would be measuring a broken start-up: refuse."""
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or done.stderr.strip():
        raise SystemExit(
            "startup: %s configuration is not clean (exit %d):\n%s" % (config, done.returncode, done.stderr)
        )


def measure(
    python: str,
    scenario: str,
    configs: Sequence[str],
    otel_dir: Optional[str],
    rounds: int,
    runs_per_block: int,
    use_hyperfine: bool,
    progress: bool = True,
) -> ScenarioResult:
    code = SCENARIOS[scenario]
    argv = [python, "-c", code]
    envs = {c: config_env(c, otel_dir) for c in configs}
    for config, env in envs.items():
        check_quiet(python, code, env, config)
    block = time_block_hyperfine if use_hyperfine else time_block_loop
    samples: Dict[str, List[float]] = {c: [] for c in configs}
    deltas: Dict[str, List[float]] = {c: [] for c in configs}
    for r in range(rounds):
        medians: Dict[str, float] = {}
        for config in rotated(list(configs), r):
            times = [t * 1000.0 for t in block(argv, envs[config], runs_per_block)]
            samples[config].extend(times)
            medians[config] = median(times)
        if "bare" in medians:
            for config in configs:
                deltas[config].append(medians[config] - medians["bare"])
        if progress:
            print(
                "startup [%s] round %d/%d: %s"
                % (scenario, r + 1, rounds, ", ".join("%s %.1f ms" % kv for kv in medians.items())),
                file=sys.stderr,
            )
    return ScenarioResult(scenario=scenario, samples=samples, deltas=deltas)


# -- import-time breakdown -------------------------------------------------------------------------


@dataclass
class ImportEntry:
    module: str
    depth: int
    self_us: float
    cumulative_us: float
    parent: str = ""


def _with_parents(entries: List[ImportEntry]) -> List[ImportEntry]:
    """Fill ``parent``: importtime prints a module's line after its children's, so a module's
    importer is the next line with a smaller depth (depth 1 lines were imported by ``site``)."""
    for i, entry in enumerate(entries):
        entry.parent = "site"
        for later in entries[i + 1 :]:
            if later.depth < entry.depth:
                entry.parent = later.module
                break
    return entries


def parse_importtime(stderr: str) -> List[ImportEntry]:
    """Parse ``-X importtime`` lines: ``import time: self | cumulative | name`` (name indented)."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            self_us = float(parts[0])
            cumulative_us = float(parts[1])
        except ValueError:
            continue  # the header line
        raw = parts[2].rstrip()
        name = raw.lstrip()
        depth = (len(raw) - len(name) - 1) // 2
        entries.append(ImportEntry(name, depth, self_us, cumulative_us))
    return _with_parents(entries)


def import_breakdown(
    python: str, config: str, otel_dir: Optional[str], repeats: int = 7
) -> Tuple[List[ImportEntry], float]:
    """Modules ``config`` imports at start-up that a bare interpreter does not, medians over repeats.

    Returns the entries (in import order) and the median total self time of those
    modules in microseconds.
    """

    def run(env: Dict[str, str]) -> List[ImportEntry]:
        done = subprocess.run(
            [python, "-X", "importtime", "-c", "pass"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return parse_importtime(done.stderr)

    # `sitecustomize` is attempted by bare too (and fails); under an agent its cumulative
    # time is the agent's whole start-up, so it is always kept.
    bare_modules = {e.module for e in run(config_env("bare", otel_dir))} - {"sitecustomize"}
    env = config_env(config, otel_dir)
    runs = [run(env) for _ in range(repeats)]
    # Keyed by (module, depth): a name can appear twice, e.g. our sitecustomize (depth 1)
    # looking for the app's own sitecustomize (depth 2) to chain to it.
    order: List[Tuple[str, int, str]] = []
    per_module: Dict[Tuple[str, int], List[ImportEntry]] = {}
    totals = []
    for entries in runs:
        total = 0.0
        for e in entries:
            if e.module in bare_modules:
                continue
            key = (e.module, e.depth)
            if key not in per_module:
                per_module[key] = []
                order.append((e.module, e.depth, e.parent))
            per_module[key].append(e)
            total += e.self_us
        totals.append(total)
    result = [
        ImportEntry(
            module=name,
            depth=depth,
            self_us=median([e.self_us for e in per_module[(name, depth)]]),
            cumulative_us=median([e.cumulative_us for e in per_module[(name, depth)]]),
            parent=parent,
        )
        for name, depth, parent in order
    ]
    return result, median(totals)


# -- report ----------------------------------------------------------------------------------------


def fmt_summary(values: Sequence[float]) -> str:
    s = Summary.of(values)
    return "%.1f (%.1f–%.1f)" % (s.median, s.p10, s.p90)


def fmt_delta(values: Sequence[float]) -> str:
    s = Summary.of(values)
    return "%+.1f (%+.1f…%+.1f)" % (s.median, s.p10, s.p90)


def startup_table(results: Sequence[ScenarioResult]) -> str:
    rows = []
    for res in results:
        for config, values in res.samples.items():
            added = "—" if config == "bare" or not res.deltas.get(config) else fmt_delta(res.deltas[config])
            rows.append([res.scenario, config, str(len(values)), fmt_summary(values), added])
    return markdown_table(
        [
            "command",
            "configuration",
            "runs",
            "wall ms, median (p10–p90)",
            "added ms vs bare, median (p10…p90)",
        ],
        rows,
    )


def importtime_table(entries: Sequence[ImportEntry], top: int) -> str:
    ranked = sorted(entries, key=lambda e: e.self_us, reverse=True)[:top]
    rows = [
        ["`%s`" % e.module, "`%s`" % e.parent, "%.0f" % e.self_us, "%.0f" % e.cumulative_us] for e in ranked
    ]
    return markdown_table(["module (not imported by bare)", "imported by", "self µs", "cumulative µs"], rows)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="interpreter to measure (default: .venvs/bench/bin/python)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs-per-block", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable")
    parser.add_argument("--no-hyperfine", action="store_true", help="use the Python timing loop")
    parser.add_argument("--top", type=int, default=15, help="import-time entries to list")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    args = parser.parse_args(argv)

    python = bench_python(args.python)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    otel_dir = otel_sitecustomize_dir(python) if "otel" in configs else None
    use_hyperfine = not args.no_hyperfine and shutil.which("hyperfine") is not None
    results = [
        measure(python, s, configs, otel_dir, args.rounds, args.runs_per_block, use_hyperfine)
        for s in (args.scenario or DEFAULT_SCENARIOS)
    ]
    print("Timer: %s\n" % ("hyperfine -N" if use_hyperfine else "Python subprocess loop"))
    print(startup_table(results))
    breakdown: Dict[str, object] = {}
    if "pilotfish" in configs:
        entries, total = import_breakdown(python, "pilotfish", otel_dir)
        print(
            "\npilotfish: modules imported at start-up beyond bare: %d, self total %.0f µs\n"
            % (len(entries), total)
        )
        print(importtime_table(entries, args.top))
        breakdown["pilotfish"] = {"total_self_us": total, "entries": [asdict(e) for e in entries]}
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "timer": "hyperfine" if use_hyperfine else "loop",
                    "results": [asdict(r) for r in results],
                    "importtime": breakdown,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
