"""Entry service A: Flask under gunicorn (gthread); calls Service ``b`` by name with requests."""

import os

import requests
from flask import Flask, request

app = Flask(__name__)
B = os.environ["LANE_B"]  # http://b:PORT: a name only the agent's routing resolves


@app.route("/a")
def a():
    response = requests.get(B + "/b", params={"id": request.args["id"]}, timeout=20)
    return "a>" + response.text, response.status_code


@app.route("/lanes")
def lanes():
    """Only for the test: the lanes this worker has (a worker follows the owner's config within one
    cache check, so the test waits for the worker itself, not only for the owner's /status)."""
    from _pilotfish_agent import settings

    return ",".join(lane["name"] for lane in settings.current().central_extra.get("lanes", []))
