"""Developer and demo tooling, run from the repository root as ``python -m hack.<module>``.

``hack.build_agent_tree`` builds the agent tree, ``hack.cluster`` is the local cluster,
``hack.demo`` plays the demo on it, ``hack.bench`` and the ``hack.bench_*`` modules are the
benchmarks (docs/benchmarks.md). Nothing here is shipped: the wheel holds ``pilotfish_webhook``
only, and the agent reaches processes as the agent tree.

A few modules call the agent in this process (the routing benchmarks, the warm-up curve):
they import it from its source, ``agent/pilotfish``, as ``pilotfish``, the way the in-process
tests do (pytest's ``pythonpath``). For that, importing this package appends ``agent/`` to
``sys.path`` (last, so it never shadows anything). Processes that run *under* the agent still
get it only from ``build/agent-tree``, as ``_pilotfish_agent``.
"""

import os
import sys

AGENT_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agent")
if AGENT_SOURCE not in sys.path:
    sys.path.append(AGENT_SOURCE)
