"""Service C: a WSGI app that says which instance answered and which tag the request carried."""

import os
import threading

POD = os.environ["PILOTFISH_POD_NAME"]
_lock = threading.Lock()
seen: list = []


def app(environ, start_response):
    if environ["PATH_INFO"] == "/seen":
        with _lock:
            body = ",".join(seen).encode()
    else:
        tag = environ.get("HTTP_X_PILOTFISH_TAG") or "-"
        with _lock:
            seen.append(tag)
        body = ("c:%s:%s" % (POD, tag)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
