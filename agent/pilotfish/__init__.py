"""pilotfish: the in-process governance agent injected into Python services.

Nothing here is imported by hand: ``bootstrap/sitecustomize.py`` of the agent tree
calls :func:`pilotfish.bootstrap.start` at interpreter start-up.
"""

__version__ = "0.1.0"
