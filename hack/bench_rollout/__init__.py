"""Rollout benchmark: N rolling updates of a 3-replica provider under open-loop load, three setups.

Run ``.venv/bin/python -m hack.bench_rollout --help`` from the repository root. The modules
``stats`` and ``loadgen`` use only the standard library (plus ``requests`` for the sender) so the
consumer pod can import them from the mounted directory.
"""
