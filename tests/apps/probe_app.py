"""A stdlib HTTP app for any Python, 2.7 included: ``python probe_app.py PORT [READY_FILE]``.

``GET /healthz`` answers 200 while READY_FILE exists (always, without one) and 503 otherwise,
so a test can flip the app's own readiness; every other path answers 200 ``hello``. It uses
no f-strings or annotations: the unsupported-interpreter tests run it on 2.7 and 3.6.
"""

import os
import sys

try:
    from BaseHTTPServer import BaseHTTPRequestHandler, HTTPServer
except ImportError:
    from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ready = len(sys.argv) < 3 or os.path.exists(sys.argv[2])
        status, body = 200, b"hello"
        if self.path == "/healthz":
            status, body = (200, b"ok") if ready else (503, b"not yet")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
