"""A Flask app with the endpoints the tests use."""

import os
import sys
import time

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(path="/", pid=os.getpid())


@app.get("/slow")
def slow():
    time.sleep(float(request.args.get("seconds", "1")))
    return jsonify(path="/slow", pid=os.getpid())


@app.get("/stream")
def stream():
    chunks, delay = int(request.args.get("chunks", "5")), float(request.args.get("delay", "0.2"))

    def body():
        for i in range(chunks):
            time.sleep(delay)
            yield "chunk %d\n" % i

    return Response(body(), mimetype="text/plain")


@app.get("/headers")
def headers():
    return jsonify({k.lower(): v for k, v in request.headers.items()})


@app.get("/healthz")
def healthz():
    return "ok"


@app.get("/subprocess")
def run_subprocess():
    from subprocess_probe import run_child

    return run_child()


@app.get("/agent-modules")
def agent_modules():
    return jsonify(modules=sorted(name for name in sys.modules if name.startswith("_pilotfish_agent")))
