"""Overhead benchmarks (docs/benchmarks.md): ``python -m hack.bench.run_all`` runs them all.

Each module runs alone too (``python -m hack.bench.rps --help``). The servers they start run
the apps of ``apps/`` (plain modules, not part of this package) in the bench venv.
"""
