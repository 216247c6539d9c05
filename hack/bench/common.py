"""What the overhead benchmarks share: the three configurations, statistics, tables.

The three configurations are the ones a user would compare in a pod:

- ``bare``: the app alone.
- ``pilotfish``: ``PYTHONPATH=build/agent-tree/bootstrap``, exactly what our webhook sets.
- ``otel``: OpenTelemetry's zero-code Python instrumentation injected the way the
  OpenTelemetry operator does it: its ``auto_instrumentation`` directory (which
  holds OTel's ``sitecustomize.py``) first on ``PYTHONPATH``, all exporters set to
  ``none`` so no network is attempted and no telemetry is written anywhere.

All three run the same interpreter of the same bench venv (``.venvs/bench``, from
``requirements/bench.txt``), which holds the apps' libraries. The OTel packages live
apart in ``.venvs/bench/otel`` (``pip install --target``, from
``requirements/bench-otel.txt``), as the operator's image does, and are on
``PYTHONPATH`` only in the ``otel`` configuration.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
BOOTSTRAP = ROOT / "build" / "agent-tree" / "bootstrap"
BENCH_VENV = ROOT / ".venvs" / "bench"

CONFIGS = ("bare", "pilotfish", "otel")
TREE_CONFIG = "pilotfish@"
"""``pilotfish@DIR``: pilotfish from another agent tree (built with ``hack/build_agent_tree.py
--out DIR``), to compare two trees side by side in one run."""


SHIFT_CONFIG = "shift@"
"""``shift@N``: bare, with CPython's type version tags moved on by N before anything else runs.

No agent at all: a ``sitecustomize`` that only re-tags a throwaway class N times. CPython caches
attribute lookups through a type in a table of 4096 slots indexed by the type's version tag
(handed out in order as types are first looked up) and the attribute name's address, so any
code that runs before the app (an agent, a different ``sitecustomize``, one more import) moves
which of the app's lookups share a slot and miss on every request. ``bare,shift@1000,shift@2500``
measures what that alone costs an app: the layout draw the agent's own cost is read against
(docs/benchmarks.md, "The layout draw")."""
SHIFT_DIR = ROOT / "build" / "bench" / "shift"
_RETAGS_PER_CLASS = 500  # CPython 3.12+ gives one class at most 1000 version tags

_SHIFT_SOURCE = """\
# Written by hack/bench/common.py for the shift@%(count)d configuration: bare, with the
# interpreter's type version tags moved on by %(count)d. Changing a class drops its version
# tag; the next lookup through it takes a new one.
for _pilotfish_bench_n in range(0, %(count)d, %(per)d):
    class _PilotfishBenchShift(object):
        pass

    for _pilotfish_bench_i in range(min(%(per)d, %(count)d - _pilotfish_bench_n)):
        _PilotfishBenchShift.x = _pilotfish_bench_i
        _PilotfishBenchShift.x
"""


def shift_count(config: str) -> int:
    """N of ``shift@N``; SystemExit naming the configuration when N is not a count."""
    text = config[len(SHIFT_CONFIG) :]
    if not text.isdigit() or int(text) > 1_000_000:
        raise SystemExit("%s: expected shift@N with N a whole number of version tags (0-1000000)" % config)
    return int(text)


def shift_dir(count: int) -> Path:
    """The ``PYTHONPATH`` entry of ``shift@count`` (written once, under build/bench/shift)."""
    where = SHIFT_DIR / str(count)
    source = _SHIFT_SOURCE % {"count": count, "per": _RETAGS_PER_CLASS}
    target = where / "sitecustomize.py"
    if not target.exists() or target.read_text() != source:
        where.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    return where


def is_pilotfish(config: str) -> bool:
    """Whether a configuration runs the agent (from build/agent-tree or another tree)."""
    return config == "pilotfish" or config.startswith(TREE_CONFIG)


# The OpenTelemetry operator sets OTEL_*_EXPORTER=otlp; with no collector here that
# would mean connection attempts, so every signal's exporter is switched off.
OTEL_ENV = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_SERVICE_NAME": "bench",
}

# Inherited variables that would change how a child interpreter behaves.
_SCRUB_PREFIXES = ("PILOTFISH_", "OTEL_")
_SCRUB = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "PYTHONVERBOSE",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
)


def bench_python(explicit: Optional[str] = None) -> str:
    """The interpreter the benchmarks run: ``--python``, else the bench venv's, else this one."""
    if explicit:
        # Absolute (servers run with another cwd) but not resolved: a venv's python is a symlink.
        return os.path.abspath(explicit)
    candidate = BENCH_VENV / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    return sys.executable


OTEL_TARGET = BENCH_VENV / "otel"
AUTO_INSTRUMENTATION = os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")


def otel_sitecustomize_dir(python: str) -> Optional[str]:
    """Directory of OTel's ``sitecustomize.py``: in ``.venvs/bench/otel`` (the operator-style
    ``pip install --target`` of ``make bench``), else in ``python``'s environment, else None."""
    candidate = OTEL_TARGET / AUTO_INSTRUMENTATION
    if (candidate / "sitecustomize.py").exists():
        return str(candidate)
    probe = (
        "import os, importlib.util as u\n"
        "s = u.find_spec('opentelemetry.instrumentation.auto_instrumentation')\n"
        "print(os.path.dirname(s.origin) if s and s.origin else '')\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", probe], env=base_env(), capture_output=True, text=True, timeout=60, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def base_env() -> Dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SCRUB and not any(k.startswith(p) for p in _SCRUB_PREFIXES)
    }
    return env


def config_env(
    config: str, otel_dir: Optional[str], extra: Optional[Dict[str, str]] = None
) -> Dict[str, str]:
    """The environment of one configuration; nothing else differs between them."""
    env = base_env()
    if config == "pilotfish":
        env["PYTHONPATH"] = str(BOOTSTRAP)
    elif config.startswith(TREE_CONFIG):
        env["PYTHONPATH"] = str(Path(config[len(TREE_CONFIG) :]).resolve() / "bootstrap")
    elif config.startswith(SHIFT_CONFIG):
        env["PYTHONPATH"] = str(shift_dir(shift_count(config)))
    elif config == "otel":
        if not otel_dir:
            raise SystemExit("otel configuration requested but OpenTelemetry is not installed (make bench)")
        # As the operator: the sitecustomize dir first, the packages dir last.
        root = otel_packages_dir(otel_dir)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (otel_dir, root) if p)
        env.update(OTEL_ENV)
    elif config != "bare":
        raise ValueError(
            "unknown configuration %r (expected one of %s, %sDIR or %sN)"
            % (config, ", ".join(CONFIGS), TREE_CONFIG, SHIFT_CONFIG)
        )
    env.update(extra or {})
    return env


def session_stats(session: int) -> Dict[str, List[str]]:
    """``/proc/<pid>/stat`` of every live process in ``session`` (a server and its workers).

    Each value is the fields after the parenthesised command name, so index 0 is the
    state, 3 the session, 11 and 12 utime and stime (in clock ticks).
    """
    found: Dict[str, List[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[3]) == session:
                found[entry] = fields
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we looked
    return found


def otel_packages_dir(otel_dir: str) -> str:
    """The ``pip install --target`` directory that holds OTel's packages ("" if unknown)."""
    if otel_dir.endswith(AUTO_INSTRUMENTATION):
        return otel_dir[: -len(AUTO_INSTRUMENTATION)].rstrip(os.sep)
    return ""


def rotated(items: Sequence[str], round_index: int) -> List[str]:
    """A B C, then B C A, then C A B: interleaved, and no configuration always goes first."""
    k = round_index % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return ordered[int(pos)]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """A distribution-free confidence interval for the median: two order statistics.

    The spread of single runs (p10-p90) says how noisy one run is; whether a budget
    is met is a question about the median, which more runs pin down more closely.
    With ``n`` independent samples, the ``k``-th smallest lies below the true median
    with probability ``P(Binomial(n, 1/2) >= k)``, so ``[x(k), x(n-k+1)]`` covers it
    with probability at least ``confidence`` for the largest ``k`` whose two tails
    stay within ``1 - confidence`` (no normality assumed, as noisy timing needs).
    ``(nan, nan)`` when ``n`` is too small for any such ``k`` (n < 6 at 95 %).
    """
    ordered = sorted(values)
    n = len(ordered)
    tail = 0.0
    k = 0
    while k < n // 2:
        # Probability that at most k samples fall below the median: P(B <= k).
        next_tail = tail + math.comb(n, k) / 2.0**n
        if 2 * next_tail > 1.0 - confidence:
            break
        tail = next_tail
        k += 1
    if k == 0:
        return math.nan, math.nan
    return ordered[k - 1], ordered[n - k]


@dataclass
class Summary:
    """Median and spread of one series of samples."""

    n: int
    median: float
    p10: float
    p90: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            n=len(values),
            median=median(values),
            p10=percentile(values, 10),
            p90=percentile(values, 90),
            lo=min(values) if values else math.nan,
            hi=max(values) if values else math.nan,
        )


@dataclass
class MachineFacts:
    nproc: int
    cpu: str
    python: str
    python_version: str
    kernel: str
    tools: Dict[str, str] = field(default_factory=dict)
    packages: Dict[str, str] = field(default_factory=dict)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(argv: List[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "absent"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "absent"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "present"


def machine_facts(python: str, otel_dir: Optional[str] = None) -> MachineFacts:
    """Machine, interpreter and package versions (OTel's read from its own packages dir)."""
    probe = (
        "import json, sys, platform\n"
        "from importlib import metadata as m\n"
        "names = ['Flask', 'gunicorn', 'fastapi', 'uvicorn', 'httptools', 'uvloop', 'starlette',\n"
        "         'opentelemetry-distro', 'opentelemetry-sdk', 'opentelemetry-instrumentation-flask',\n"
        "         'opentelemetry-instrumentation-fastapi']\n"
        "v = {}\n"
        "for n in names:\n"
        "    try: v[n] = m.version(n)\n"
        "    except Exception: v[n] = 'absent'\n"
        "print(json.dumps({'version': platform.python_version(), 'packages': v}))\n"
    )
    env = base_env()
    packages = otel_packages_dir(otel_dir) if otel_dir else ""
    if packages:
        env["PYTHONPATH"] = packages  # only to read versions: nothing is imported from it
    out = subprocess.run(
        [python, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    data = json.loads(out.stdout)
    return MachineFacts(
        nproc=os.cpu_count() or 0,
        cpu=_cpu_model(),
        python=python,
        python_version=data["version"],
        kernel=platform.release(),
        tools={
            "hyperfine": _tool_version(["hyperfine", "--version"]),
            "wrk": _tool_version(["wrk", "-v"]),
            "taskset": "present" if shutil.which("taskset") else "absent",
        },
        packages=data["packages"],
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def taskset_prefix(cpu: Optional[int]) -> List[str]:
    """``taskset -c N`` when pinning is possible (2+ cores and taskset present), else nothing."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]
