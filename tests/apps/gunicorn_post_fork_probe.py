"""A gunicorn config file (``-c``): each worker reports, right after its fork and before it
loads the app, whether its class's ``handle_request`` is already the agent's recompiled one.

Written to the file named by ``POST_FORK_REPORT``, one JSON line per worker.
"""

import json
import os


def post_fork(server, worker):
    path = os.environ.get("POST_FORK_REPORT")
    if path:
        handle_request = type(worker).__dict__.get("handle_request")
        patched = getattr(handle_request, "__pilotfish_patch__", False) is True
        with open(path, "a") as report:
            report.write(json.dumps({"pid": os.getpid(), "recompiled": patched}) + "\n")
