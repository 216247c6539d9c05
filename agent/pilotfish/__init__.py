"""pilotfish: the in-process governance agent injected into Python services.

Nothing here is imported by hand: ``bootstrap/sitecustomize.py`` of the agent tree
calls :func:`pilotfish.bootstrap.start` at interpreter start-up.
"""

__version__ = "0.1.0"

PACKAGE = __name__
"""This package's import name. The agent tree loads it under a private name, so that an
app's own module called ``pilotfish`` is never shadowed; modules that import by string use
this instead of a literal."""
