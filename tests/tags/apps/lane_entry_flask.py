"""An entry app with no pilotfish code: Flask under gunicorn, calling one downstream with requests.

Which requests get a tag is decided only by the lanes of its central policy.
"""

import os

import requests
from flask import Flask, request

app = Flask(__name__)
DOWNSTREAM = os.environ["LANE_DOWNSTREAM"]


@app.route("/")
def index():
    return "ok"


@app.route("/order")
def order():
    response = requests.get(DOWNSTREAM + "/stock", params={"id": request.args["id"]}, timeout=20)
    return "order>" + response.text
