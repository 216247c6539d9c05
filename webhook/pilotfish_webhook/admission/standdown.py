"""Containers whose processes would never run the agent: the kill switch, ``python -I/-E/-S``.

Injecting such a container would still point readiness at the agent's status port and preStop
at ``/offline``, where nothing listens, and the pod would never become Ready: the documented
incident lever (``PILOTFISH_ENABLED=false``) would stall every rollout. So these containers are
not injected at all (no mount, no env, no probe or preStop change), with the reason recorded
where users look. Only what the pod spec shows literally can be seen here: a kill switch from
``envFrom``/``valueFrom`` or a flag inside a script is handled by the agent tree's bootstrap,
whose stand-in answers readiness from the app's own probe.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Dict, Iterable, List, Optional

from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.podspec import literal_env

Obj = Dict[str, Any]

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
# Flags after which the interpreter reads no further options of its own.
_ENDS_OPTIONS = frozenset("cm")
# Flags whose argument is the rest of the same word, or the next word.
_TAKES_ARGUMENT = frozenset("WXQ")
_LONG_WITH_ARGUMENT = frozenset({"--check-hash-based-pycs"})
_WHY = {
    "I": "isolated mode ignores PYTHONPATH",
    "E": "it ignores PYTHON* environment variables, PYTHONPATH included",
    "S": "it skips the site module, so no sitecustomize runs",
}


def kill_switch(container: Obj) -> bool:
    """The container literally sets ``PILOTFISH_ENABLED`` to a value that turns the agent off."""
    value = literal_env(container, c.ENV_ENABLED)
    return value is not None and value.strip().lower() in c.DISABLED_VALUES


def python_flags(words: Iterable[str]) -> List[str]:
    """The start-up flags among I, E, S given to any ``python`` the words visibly run.

    ``sh -c "..."`` scripts are split like a shell would and searched too. Combined flags
    (``-IS``, ``-uE``) count; option arguments (``-W error``, ``-Xdev``) and everything after
    ``-c``/``-m``/the script name belong to the program, not to the interpreter.
    """
    found: List[str] = []
    words = [w for w in words if isinstance(w, str)]
    for index, word in enumerate(words):
        name = os.path.basename(word)
        if name in _SHELLS:
            script = _shell_script(words[index + 1 :])
            if script is not None:
                found += python_flags(_split(script))
        if _PYTHON.match(name):
            found += _interpreter_flags(words[index + 1 :])
    return sorted(set(found))


def _shell_script(options: List[str]) -> Optional[str]:
    """The script of ``sh -c SCRIPT`` (also ``-ec``, ``-lc``, ``-e -c``), or None."""
    for position, word in enumerate(options):
        if not word.startswith("-") or word == "--":
            return None
        if word.endswith("c") and not word.startswith("--") and position + 1 < len(options):
            return options[position + 1]
    return None


def _split(script: str) -> List[str]:
    try:
        return shlex.split(script, comments=True)
    except ValueError:
        return script.split()


def _interpreter_flags(options: List[str]) -> List[str]:
    found = []
    skip_next = False
    for word in options:
        if skip_next:
            skip_next = False
            continue
        if word == "--" or word == "-" or not word.startswith("-"):
            break
        if word.startswith("--"):
            skip_next = word in _LONG_WITH_ARGUMENT
            continue
        cluster = word[1:]
        for position, flag in enumerate(cluster):
            if flag in _WHY:
                found.append(flag)
            if flag in _ENDS_OPTIONS:
                return found
            if flag in _TAKES_ARGUMENT:
                skip_next = position == len(cluster) - 1
                break
    return found


def why_the_agent_would_not_run(container: Obj) -> Optional[str]:
    """Why this container's processes would not run the agent (so it is not injected), or None."""
    if kill_switch(container):
        return "%s=%s turns the agent off (the kill switch); probes and preStop are left as they are" % (
            c.ENV_ENABLED,
            literal_env(container, c.ENV_ENABLED),
        )
    words = list(container.get("command") or []) + list(container.get("args") or [])
    flags = python_flags(words)
    if flags:
        return "python %s: %s; the agent would never load, so probes and preStop are left as they are" % (
            " ".join("-" + f for f in flags),
            "; ".join(_WHY[f] for f in flags),
        )
    return None
