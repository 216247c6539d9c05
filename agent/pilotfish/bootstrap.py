"""What runs at interpreter start-up, inside every Python process of an injected pod.

Budget: a few milliseconds. So this module imports only the standard library
modules Python has already loaded, reads the kill switch, and hands over to
:mod:`pilotfish.runtime`, which registers import hooks and nothing else until a
server actually starts listening.
"""

import os

TYPE_CHECKING = False  # typing is not loaded at start-up; importing it costs ms
if TYPE_CHECKING:
    from typing import Mapping

loaded = False
"""True once the agent has started in this process (for tests and /status)."""

_FALSE = ("0", "false", "no", "off", "disabled")


def enabled(environ: "Mapping[str, str]" = os.environ) -> bool:
    """The kill switch: ``PILOTFISH_ENABLED=false`` turns the whole agent off."""
    return environ.get("PILOTFISH_ENABLED", "true").strip().lower() not in _FALSE


def start(bootstrap_dir: str = "") -> None:
    """Start the agent in this process. Called once from sitecustomize; never raises there.

    ``bootstrap_dir`` is the directory of our sitecustomize, kept so child
    processes spawned by the app (uvicorn ``--workers``, multiprocessing spawn)
    inherit the same PYTHONPATH and therefore the agent.
    """
    global loaded
    if loaded or not enabled():
        return
    from . import runtime

    runtime.install(bootstrap_dir=bootstrap_dir)
    loaded = True
