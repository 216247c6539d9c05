"""The demo's sample service: a plain Flask app that knows nothing about pilotfish."""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(service="shop", pid=os.getpid(), tag=request.headers.get("x-pilotfish-tag"))


@app.get("/slow")
def slow():
    time.sleep(float(request.args.get("seconds", "2")))
    return jsonify(slept=True)
