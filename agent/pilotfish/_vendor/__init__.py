"""Third-party code vendored into the agent so user processes never see our copies.

Only ``pilotfish._vendor.wrapt`` lives here (wrapt 1.17.3, BSD-2-Clause, pure-Python
mode; see ``wrapt/LICENSE``). It is imported lazily, when the first patch is
installed, never at interpreter start-up.
"""
