"""The agent's life in one process: dormant until a server appears, then awake.

At start-up :func:`install` only registers import hooks (see
:mod:`pilotfish.importhooks`); the integrations they trigger do the rest.
"""

from __future__ import annotations

bootstrap_dir = ""


def install(bootstrap_dir: str = "") -> None:
    """Register the agent's import hooks. Cheap: imports nothing the app has not."""
    globals()["bootstrap_dir"] = bootstrap_dir

    # Traffic tags (issue 7): post-import hooks only; guarded inside.
    from pilotfish.tags import install as tags

    tags.install()
