"""A WSGI app that shows which central config the worker serving the request has.

Only for tests: a real app never imports the agent (loaded as ``_pilotfish_agent``). Here it
reads the agent's settings in whichever worker process answers, to prove workers follow the owner.
"""

import json
import os


def app(environ, start_response):
    from _pilotfish_agent import settings

    current = settings.current()
    body = json.dumps(
        {
            "pid": os.getpid(),
            "warmup_seconds": current.warmup_seconds,
            "version": current.central_version,
            "lanes": [lane["name"] for lane in current.central_extra.get("lanes", [])],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
