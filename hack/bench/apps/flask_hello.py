"""Hello-world Flask app for the requests/s benchmark (served by gunicorn, one sync worker).

``/`` is the measured route. ``/_bench/agents`` lets the harness check, before it
measures, that the configuration it thinks it runs is the one loaded in the worker.
"""

from __future__ import annotations

import sys

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "Hello, World!"


@app.route("/_bench/agents")
def agents() -> dict:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from agents_probe import loaded_agents

    return loaded_agents(app)
