"""The shop's inventory: Flask under gunicorn, the end of the chain (a baseline and a gray Deployment)."""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/stock")
def stock() -> Response:
    return jsonify(chain=[os.environ.get("POD_NAME", "inventory")], items=7)
