"""Developer and demo tooling, run from the repository root as ``python -m hack.<module>``.

``hack.build_agent_tree`` builds the agent tree, ``hack.cluster`` is the local cluster,
``hack.demo`` plays the demo on it, ``hack.bench`` and the ``hack.bench_*`` modules are the
benchmarks (docs/benchmarks.md). Nothing here is shipped: the wheel holds ``pilotfish_webhook``
only, and the agent reaches processes as the agent tree.
"""
