"""Hop 1 of the tag chain: Flask under gunicorn (gthread); calls hop 2 with requests in a thread pool."""

import os
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import Flask, request

app = Flask(__name__)
pool = ThreadPoolExecutor(4)
NEXT = os.environ["CHAIN_NEXT"]


@app.route("/a")
def a():
    rid = request.args["id"]
    response = pool.submit(requests.get, NEXT + "/b", params={"id": rid}, timeout=20).result()
    return "a>" + response.text
