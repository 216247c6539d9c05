"""Run uvicorn or gunicorn with cProfile on CPU time, for ``hack/bench/profile_share.py``.

``python profiled.py OUT uvicorn ARGS...`` profiles the uvicorn process until it
shuts down (SIGINT). ``python profiled.py OUT gunicorn ARGS...`` profiles each
worker from its fork to its exit (gunicorn server hooks), one file per worker:
``OUT.<pid>``. The timer is ``time.process_time``, so time spent waiting for
requests is not counted and shares are shares of CPU (``BENCH_PROFILE_TIMER=wall``:
cProfile's own clock, cheaper per call but counting waits too).
"""

from __future__ import annotations

import cProfile
import os
import sys
import time
from typing import Any, List


def _profile() -> cProfile.Profile:
    """CPU-time profiler (idle waits not counted), or cProfile's cheaper wall clock."""
    if os.environ.get("BENCH_PROFILE_TIMER") == "wall":
        return cProfile.Profile()
    return cProfile.Profile(time.process_time)


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def run_uvicorn(out: str, args: List[str]) -> None:
    import signal

    import uvicorn.main

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the handler it
    # found: let that be an exception we catch, not the default that kills us.
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    profile = _profile()
    profile.enable()
    try:
        uvicorn.main.main(args)
    except SystemExit:
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


_worker_profile: Any = None


def post_fork(server: Any, worker: Any) -> None:
    global _worker_profile
    _worker_profile = _profile()
    _worker_profile.enable()


def worker_exit(server: Any, worker: Any) -> None:
    if _worker_profile is not None:
        _worker_profile.disable()
        _worker_profile.dump_stats("%s.%d" % (os.environ["BENCH_PROFILE_OUT"], os.getpid()))


def run_gunicorn(out: str, args: List[str]) -> None:
    from gunicorn.app.wsgiapp import WSGIApplication

    os.environ["BENCH_PROFILE_OUT"] = out

    class Profiled(WSGIApplication):
        def load_config(self) -> None:
            super().load_config()
            self.cfg.set("post_fork", post_fork)
            self.cfg.set("worker_exit", worker_exit)

    sys.argv = ["gunicorn", *args]
    Profiled("%(prog)s [OPTIONS] [APP_MODULE]").run()


if __name__ == "__main__":
    target, server_name, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if server_name == "uvicorn":
        run_uvicorn(target, rest)
    elif server_name == "gunicorn":
        run_gunicorn(target, rest)
    else:
        raise SystemExit("usage: profiled.py OUT uvicorn|gunicorn ARGS...")
