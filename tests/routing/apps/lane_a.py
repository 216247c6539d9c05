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
