# pilotfish bootstrap: the only module the injected PYTHONPATH entry exposes.
#
# Rules this file lives by (see DESIGN.md section 4):
# - It must parse on Python 2.7 and 3.6+ (no f-strings, no annotations) and do
#   nothing at all on interpreters the agent does not support.
# - It must never raise into the app: anything that goes wrong in the agent is
#   swallowed here and the app starts as if we were not there.
# - It puts the agent library at the END of sys.path, so the app's own modules
#   (an `agent.py`, its own wrapt, ...) always win, and only `pilotfish` can
#   ever be imported from our tree.
# - It chains to the app's own `sitecustomize`, if one exists further down
#   sys.path, exactly as Python would have imported it without us: errors
#   raised by the app's sitecustomize reach `site` unchanged.
import sys


def _pilotfish_start():
    """Start the agent, if this interpreter is one we support. Never raises."""
    try:
        if sys.version_info < (3, 8):
            return
        if sys.implementation.name != "cpython":
            return
        import os

        here = os.path.dirname(os.path.abspath(__file__))
        lib = os.path.join(os.path.dirname(here), "lib")
        if lib not in sys.path:
            sys.path.append(lib)
        foreign = _foreign_pilotfish(lib)
        if foreign:
            # Someone else's `pilotfish` shadows ours: stand down, touch nothing.
            if os.environ.get("PILOTFISH_LOG_LEVEL", "").lower() == "debug":
                sys.stderr.write(
                    "pilotfish: another module named pilotfish is importable (%s); "
                    "agent disabled\n" % (foreign,)
                )
            return
        from pilotfish import bootstrap

        bootstrap.start(bootstrap_dir=here)
    except BaseException:  # noqa: B036 - the app must start whatever happens here
        try:
            from pilotfish import log

            log.exception_once("bootstrap", "agent start-up failed; the app runs without it")
        except BaseException:  # noqa: B036
            pass


def _foreign_pilotfish(lib):
    """The path of a `pilotfish` found on sys.path before our lib, or "".

    A few stat calls instead of importlib.util.find_spec, which costs more than
    the rest of the bootstrap on some interpreters.
    """
    import os

    for entry in sys.path:
        if entry == lib:
            return ""
        base = os.path.join(entry or os.curdir, "pilotfish")
        for candidate in (base, base + ".py"):
            if os.path.exists(candidate):
                return candidate
    return ""


def _chain_app_sitecustomize():
    """Import the next `sitecustomize` on sys.path, as `site` would have done.

    The bootstrap directory is taken off sys.path while importing so that the
    search finds the app's module, not this one. If there is none, this module
    stays registered as `sitecustomize`. Errors from the app's module propagate,
    so `site` reports them exactly as it would without the agent.
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.get("sitecustomize")
    removed = []
    for index in range(len(sys.path) - 1, -1, -1):
        entry = sys.path[index]
        try:
            same = os.path.abspath(entry or os.curdir) == here
        except Exception:
            same = False
        if same:
            removed.append((index, entry))
            del sys.path[index]
    if ours is not None:
        del sys.modules["sitecustomize"]
    found = False
    try:
        __import__("sitecustomize")
        found = True
    except ImportError as error:
        missing = getattr(error, "name", None) == "sitecustomize" or (
            sys.version_info < (3,) and str(error) == "No module named sitecustomize"
        )
        if not missing:
            raise
    finally:
        for index, entry in reversed(removed):
            sys.path.insert(index, entry)
        if not found and ours is not None:
            sys.modules["sitecustomize"] = ours


_pilotfish_start()
_chain_app_sitecustomize()
