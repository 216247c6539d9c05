"""A caller under the agent: calls a Service by name with each client library, reports who answered.

Usage: ``python routed_client.py SCENARIO_JSON``. The scenario names the URL
(``http://stock:PORT``, a Service the registry knows), the libraries, the tags
to interleave (``null`` = untagged), how many threads / tasks share one
keep-alive client and how many calls each makes. A tag is set the way the
inbound wrapper sets it for a request being handled (``CURRENT_TAG``), so every
call carries it and is routed by it. Prints one JSON line:
``{"results": {library: [{"tag", "pod"} | {"tag", "error"}]}, "routing": ...}``.
"""

import asyncio
import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.request
from urllib.parse import urlsplit

SCENARIO = json.loads(sys.argv[1])
URL = SCENARIO["url"]
TAGS = SCENARIO.get("tags", [None])
THREADS = SCENARIO.get("threads", 4)
CALLS = SCENARIO.get("calls", 20)
CA = SCENARIO.get("ca")
TIMEOUT = SCENARIO.get("timeout", 10)


def context():
    return ssl.create_default_context(cafile=CA) if CA else None


def tagged(tag, call):
    if not SCENARIO.get("agent", True):
        return call()  # the reference run: no agent, nothing to tag
    from _pilotfish_agent.tags.context import CURRENT_TAG

    token = CURRENT_TAG.set(tag)
    try:
        return call()
    finally:
        CURRENT_TAG.reset(token)


def outcome(tag, call):
    try:
        body = call()
        return {"tag": tag, "pod": json.loads(body)["pod"] if body.startswith(b"{") else body.decode()}
    except Exception as problem:  # the report says what the app would have seen
        return {"tag": tag, "error": "%s: %s" % (type(problem).__name__, problem)}


# -- sync libraries: one keep-alive client shared by THREADS threads


def make_http_client():
    parts = urlsplit(URL)
    local = threading.local()

    def call(path):
        conn = getattr(local, "conn", None)
        if conn is None:  # one kept-alive connection per thread, reused across lanes
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=TIMEOUT, context=context()
                )
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
            local.conn = conn
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except Exception:
            conn.close()  # what an app does with a connection whose request failed
            raise
        if response.will_close:
            conn.close()
        return body

    return call, lambda: None


def make_urllib():
    def call(path):
        with urllib.request.urlopen(URL + path, timeout=TIMEOUT, context=context()) as response:
            return response.read()

    return call, lambda: None


def make_urllib3():
    import urllib3

    pool = urllib3.PoolManager(ca_certs=CA) if CA else urllib3.PoolManager()

    def call(path):
        response = pool.request("GET", URL + path, timeout=TIMEOUT, retries=False)
        return response.data

    return call, pool.clear


def make_requests():
    import requests

    session = requests.Session()
    verify = CA or True  # per call: a session default loses to REQUESTS_CA_BUNDLE in the environment

    def call(path):
        response = session.get(URL + path, timeout=TIMEOUT, verify=verify)
        response.raise_for_status()
        return response.content

    return call, session.close


def make_httpx():
    import httpx

    client = httpx.Client(verify=context() or True, timeout=TIMEOUT)

    def call(path):
        response = client.get(URL + path)
        response.raise_for_status()
        return response.content

    return call, client.close


def make_grpc():
    import grpc

    target = URL.split("//")[-1]
    channel = grpc.insecure_channel(target)  # built once, before any call: as apps do
    call_method = channel.unary_unary("/stock.Stock/Call")

    def call(path):
        return call_method(path.encode(), timeout=TIMEOUT)

    return call, channel.close


SYNC = {
    "http.client": make_http_client,
    "urllib": make_urllib,
    "urllib3": make_urllib3,
    "requests": make_requests,
    "httpx": make_httpx,
    "grpc": make_grpc,
}


def run_sync(name):
    call, close = SYNC[name]()
    results = []
    lock = threading.Lock()

    def worker(index):
        for i in range(CALLS):
            tag = TAGS[(index + i) % len(TAGS)]
            path = "/%s/%d/%d" % (name, index, i)
            found = tagged(tag, lambda tag=tag, path=path: outcome(tag, lambda: call(path)))
            with lock:
                results.append(found)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close()
    return results


# -- async libraries: one client shared by THREADS tasks


async def run_async(name):
    results = []
    if name == "grpc-aio":
        import grpc.aio

        channel = grpc.aio.insecure_channel(URL.split("//")[-1])
        method = channel.unary_unary("/stock.Stock/Call")

        async def get(path):
            return await method(path.encode(), timeout=TIMEOUT)

        close = channel.close
    elif name == "httpx-async":
        import httpx

        client = httpx.AsyncClient(verify=context() or True, timeout=TIMEOUT)

        async def get(path):
            response = await client.get(URL + path)
            response.raise_for_status()
            return response.content

        close = client.aclose
    else:
        import aiohttp

        session = aiohttp.ClientSession()

        async def get(path):
            async with session.get(URL + path, ssl=context() or True) as response:
                response.raise_for_status()
                return await response.read()

        close = session.close

    async def task(index):
        for i in range(CALLS):
            tag = TAGS[(index + i) % len(TAGS)]
            if SCENARIO.get("agent", True):
                from _pilotfish_agent.tags.context import CURRENT_TAG

                CURRENT_TAG.set(tag)  # this task's own context, as for a request being handled
            try:
                body = await get("/%s/%d/%d" % (name, index, i))
                results.append(
                    {"tag": tag, "pod": json.loads(body)["pod"] if body.startswith(b"{") else body.decode()}
                )
            except Exception as problem:
                results.append({"tag": tag, "error": "%s: %s" % (type(problem).__name__, problem)})

    await asyncio.gather(*(task(n) for n in range(THREADS)))
    await close()
    return results


def wake_and_wait_for_routing():
    """Listen like a server (the agent wakes), then wait until the routing table knows the host."""
    if not SCENARIO.get("agent", True):
        return None
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    from _pilotfish_agent.routing import core

    host = SCENARIO.get("wait_host") or urlsplit(URL).hostname
    want = SCENARIO.get("wait_for_instances", 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        service = core.routed_hosts.get(host)
        if service is not None and len(service.instances) >= want:
            return sock
        time.sleep(0.05)
    raise SystemExit("routing table never knew %s: %r" % (host, core.snapshot()))


FOREIGN_CALLS: dict = {}


def foreign_targets():
    """The attributes the agent's routing hooks patch, as another instrumentation would wrap them."""
    import aiohttp.client_reqrep
    import aiohttp.connector
    import httpcore
    import urllib3.poolmanager

    return [
        (http.client.HTTPConnection, "connect"),
        (http.client.HTTPConnection, "putrequest"),
        (http.client.HTTPConnection, "getresponse"),
        (urllib3.poolmanager.PoolManager, "connection_from_context"),
        (httpcore.ConnectionPool, "handle_request"),
        (httpcore.AsyncConnectionPool, "handle_async_request"),
        (aiohttp.connector.BaseConnector, "connect"),
        (aiohttp.client_reqrep.ClientResponse, "start"),
    ]


def foreign_wrap(cls, name):
    """What OpenTelemetry / ddtrace do: replace the class attribute with a wrapper that calls it."""
    original = getattr(cls, name)
    key = "%s.%s" % (cls.__name__, name)
    FOREIGN_CALLS[key] = 0
    if asyncio.iscoroutinefunction(original):

        async def wrapper(*args, **kwargs):
            FOREIGN_CALLS[key] += 1
            return await original(*args, **kwargs)

    else:

        def wrapper(*args, **kwargs):  # type: ignore[misc]
            FOREIGN_CALLS[key] += 1
            return original(*args, **kwargs)

    setattr(cls, name, wrapper)


def install_foreign(when):
    if when == "after":  # the agent patched at import; the other instrumentation wraps on top
        for cls, name in foreign_targets():
            foreign_wrap(cls, name)
    elif when == "before":  # the other instrumentation wrapped first; the agent patches on top
        from _pilotfish_agent.integrations import routing_http_client, routing_httpx, routing_urllib3

        for module in (routing_http_client, routing_urllib3, routing_httpx):
            module.unpatch()
        for cls, name in foreign_targets()[:6]:
            foreign_wrap(cls, name)
        routing_http_client.patch()
        routing_urllib3.patch()
        routing_httpx.patch()
        routing_http_client.patch()  # twice: patching is idempotent
        routing_urllib3.patch()


def main():
    keep = wake_and_wait_for_routing()
    if SCENARIO.get("foreign"):
        install_foreign(SCENARIO["foreign"])
    report: dict = {"results": {}}
    for name in SCENARIO["libraries"]:
        if name in SYNC:
            report["results"][name] = run_sync(name)
        else:
            report["results"][name] = asyncio.run(run_async(name))
    if keep is not None:
        from _pilotfish_agent.routing import core

        report["routing"] = core.snapshot()
        report["foreign_calls"] = FOREIGN_CALLS
        keep.close()
    report["urllib3"] = getattr(sys.modules.get("urllib3"), "__version__", None)
    print(json.dumps(report))


main()
