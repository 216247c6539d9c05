"""Run processes exactly as in a pod: the agent comes only from the built agent tree.

Never from an editable install: ``PYTHONPATH=build/agent-tree/bootstrap`` is the one
thing the webhook sets, so it is the one thing the tests set.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent.parent
AGENT_TREE = ROOT / "build" / "agent-tree"
BOOTSTRAP = AGENT_TREE / "bootstrap"

# Variables of the developer's shell that would change how a child interpreter
# behaves; tests start from a clean slate so results do not depend on the machine.
_SCRUB = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "PYTHONVERBOSE",
)


def ensure_agent_tree() -> Path:
    """Build the tree if a developer runs pytest without ``make`` first."""
    if not (BOOTSTRAP / "sitecustomize.py").exists():
        subprocess.run(["python3", str(ROOT / "hack" / "build_agent_tree.py"), "--no-compile"], check=True)
    return AGENT_TREE


def clean_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("PILOTFISH_")}
    env.update(extra or {})
    return env


def agent_env(extra: Optional[Mapping[str, str]] = None, pythonpath: Sequence[str] = ()) -> Dict[str, str]:
    """Environment of a process in an injected pod: bootstrap dir first, then the app's entries."""
    ensure_agent_tree()
    env = clean_env(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(BOOTSTRAP), *pythonpath])
    return env


def run_python(
    python: str,
    args: List[str],
    *,
    agent: bool = True,
    env: Optional[Mapping[str, str]] = None,
    pythonpath: Sequence[str] = (),
    cwd: Optional[Path] = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run ``python args...`` with or without the agent and capture everything."""
    if agent:
        full_env = agent_env(env, pythonpath)
    else:
        full_env = clean_env(env)
        if pythonpath:
            full_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return subprocess.run(
        [python, *args],
        env=full_env,
        cwd=str(cwd) if cwd else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
