"""The shop's entry service: Flask under gunicorn. It calls checkout with requests, by Service name."""

from __future__ import annotations

import os

import requests
from flask import Flask, Response, jsonify

app = Flask(__name__)
CHECKOUT = os.environ.get("CHECKOUT_URL", "http://checkout/checkout")
session = requests.Session()


@app.get("/")
def index() -> Response:
    answer = session.get(CHECKOUT, timeout=5)
    answer.raise_for_status()
    return jsonify(chain=[os.environ.get("POD_NAME", "frontend")] + answer.json()["chain"])
