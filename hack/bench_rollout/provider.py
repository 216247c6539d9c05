"""The provider: a Flask app under gunicorn that answers with its pod name."""

from __future__ import annotations

import os
import socket

from flask import Flask

app = Flask(__name__)
POD = os.environ.get("POD_NAME") or socket.gethostname()


@app.get("/")
def index() -> str:
    return POD


@app.get("/healthz")
def healthz() -> str:
    return "ok"
