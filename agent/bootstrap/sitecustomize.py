# pilotfish bootstrap: the only module the injected PYTHONPATH entry exposes.
#
# Rules this file lives by:
# - It must parse on Python 2.7 and 3.6+ (no f-strings, no annotations): every
#   interpreter of an injected container runs it, supported or not.
# - It must never raise into the app: anything that goes wrong in the agent is
#   swallowed here and the app starts as if we were not there.
# - It occupies no import name an app might use: the agent package in
#   <tree>/lib/pilotfish is loaded under the private name `_pilotfish_agent`
#   and <tree>/lib never goes on sys.path, so the app's own `pilotfish` module
#   (beside its script, in the cwd of `python -m`, in gunicorn's --chdir) is the
#   one `import pilotfish` finds.
# - Where the agent does not run (an interpreter it does not support, the kill
#   switch, a start-up failure), the pod's readiness probe may still point at
#   the agent's status port. The stand-in below answers it from the app's own
#   probe, so a rollout never waits for an agent that is not there.
# - It chains to the app's own `sitecustomize`, if one exists further down
#   sys.path, exactly as Python would have imported it without us: errors
#   raised by the app's sitecustomize reach `site` unchanged.
import sys

_AGENT = "_pilotfish_agent"
_OFF = ("0", "false", "no", "off", "disabled")


def _pilotfish_start():
    """Start the agent, or arm the readiness stand-in where it cannot run. Never raises."""
    try:
        import os

        if sys.version_info < (3, 8) or getattr(sys, "implementation", None) is None:
            return _standin_arm("Python %d.%d is not supported by the agent" % sys.version_info[:2])
        if sys.implementation.name != "cpython":
            return _standin_arm("%s is not supported by the agent" % sys.implementation.name)
        if os.environ.get("PILOTFISH_ENABLED", "true").strip().lower() in _OFF:
            return _standin_arm("PILOTFISH_ENABLED turns the agent off")
        here = os.path.dirname(os.path.abspath(__file__))
        _load_agent(os.path.join(os.path.dirname(here), "lib", "pilotfish"))
        __import__(_AGENT + ".bootstrap")
        sys.modules[_AGENT + ".bootstrap"].start(bootstrap_dir=here)
    except BaseException:  # noqa: B036 - the app must start whatever happens here
        try:
            problem = sys.exc_info()[1]
            log = sys.modules.get(_AGENT + ".log")
            if log is not None:
                log.exception_once("bootstrap", "agent start-up failed; the app runs without it")
            else:
                sys.stderr.write(
                    "pilotfish: warning: agent start-up failed; the app runs without it (%s: %s)\n"
                    % (type(problem).__name__, problem)
                )
            _standin_arm("the agent failed to start (%s)" % type(problem).__name__)
        except BaseException:  # noqa: B036
            pass


def _load_agent(package_dir):
    """Import <tree>/lib/pilotfish as `_pilotfish_agent`, with the import machinery that is
    already loaded at start-up (importlib.util is not, and importing it costs more than this)."""
    import _frozen_importlib
    import _frozen_importlib_external

    spec = _frozen_importlib_external.spec_from_file_location(
        _AGENT, package_dir + "/__init__.py", submodule_search_locations=[package_dir]
    )
    module = _frozen_importlib.module_from_spec(spec)
    sys.modules[_AGENT] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:  # noqa: B036
        del sys.modules[_AGENT]
        raise
    return module


# -- the readiness stand-in -------------------------------------------------------------
#
# Armed only where the agent does not run. It waits for the process's first listen():
# processes that never serve (pip, scripts, migrations) get no thread and no port. Then
# it binds the status port if it is free, else stays silent (the agent or a stand-in of
# another process of this container already answers), and serves on one daemon thread:
#   /readiness  200 when the app's original probe (PILOTFISH_APP_PROBE) passes, checked
#               once per request; without one, when the app's listening address accepts
#               a TCP connection. 503 otherwise, the body saying why.
#   /offline    200 at once: there is no agent to drain, so preStop never waits.
#   anything else: 404, naming why the agent is not running.


def _standin_arm(why):
    """Once the app imports `socket`, watch for its first listen(). Never raises.

    Importing `socket` here would cost more than the whole agent start-up (it pulls in
    `enum`), so a one-shot finder waits for the app's own import of it.
    """
    try:
        module = sys.modules.get("socket")
        if module is not None:
            _standin_watch_listen(module, why)
        else:
            sys.meta_path.insert(0, _SocketWatch(why))
    except Exception:
        pass


class _SocketWatch(object):
    """A meta-path finder that only ever answers for `socket`, once, then leaves."""

    def __init__(self, why):
        self.why = why

    def _leave(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass

    def find_spec(self, name, path=None, target=None):  # Python 3
        if name != "socket":
            return None
        self._leave()
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, why = spec.loader, self.why

        def exec_module(module):
            try:
                del loader.exec_module  # back to the loader's own method
            except Exception:
                pass
            loader.exec_module(module)
            try:
                _standin_watch_listen(module, why)
            except Exception:
                pass

        loader.exec_module = exec_module
        return spec

    def find_module(self, name, path=None):  # Python 2 (Python 3 asks find_spec)
        if name != "socket" or path is not None:
            return None
        self._leave()
        module = __import__("socket")
        try:
            _standin_watch_listen(module, self.why)
        except Exception:
            pass
        return self

    def load_module(self, name):
        return sys.modules[name]


def _standin_watch_listen(socket, why):
    """Wrap socket.listen() so that the first call starts the stand-in, then unwrap it."""
    cls = socket.socket
    own = vars(cls).get("listen")  # Python 2 defines it on the class, Python 3 inherits it
    original = own if own is not None else cls.listen
    armed = [True]

    def listen(self, *args):
        result = original(self, *args)
        if armed[0]:
            armed[0] = False  # once is enough: later listen() calls only pass through
            if vars(cls).get("listen") is listen:
                if own is None:
                    del cls.listen
                else:
                    cls.listen = own
            try:
                _standin_start(socket, self.getsockname(), why)
            except Exception:
                pass
        return result

    cls.listen = listen


def _standin_start(socket, app_address, why):
    import os
    import threading

    host = os.environ.get("PILOTFISH_STATUS_HOST", "0.0.0.0").strip() or "0.0.0.0"
    port = int(os.environ.get("PILOTFISH_STATUS_PORT", "55199").strip() or "55199")
    server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(16)
    except Exception:
        server.close()
        return  # taken: whoever holds it answers for this container
    try:
        import fcntl

        fcntl.fcntl(server.fileno(), fcntl.F_SETFD, fcntl.FD_CLOEXEC)  # Python 2 would pass it on
    except Exception:
        pass
    _standin_thread(threading, _standin_serve, (server, app_address, why))
    if os.environ.get("PILOTFISH_LOG_LEVEL", "").strip().lower() in ("debug", "info"):
        sys.stderr.write("pilotfish: info: %s; readiness stand-in on %s:%d\n" % (why, host, port))


def _standin_thread(threading, target, args):
    thread = threading.Thread(target=target, args=args, name="pilotfish-standin")
    thread.daemon = True
    thread.start()


def _standin_serve(server, app_address, why):
    import threading
    import time

    while True:
        try:
            connection = server.accept()[0]
            _standin_thread(threading, _standin_answer, (connection, app_address, why))
        except Exception:
            time.sleep(0.5)  # out of file descriptors or threads: try again, gently


def _standin_answer(connection, app_address, why):
    try:
        connection.settimeout(10)
        request = b""
        while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < 8192:
            chunk = connection.recv(4096)
            if not chunk:
                break
            request += chunk
        words = request.split(b"\n", 1)[0].split()
        path = words[1].decode("latin-1").split("?")[0] if len(words) > 1 else ""
        if path == "/offline":
            status, body = 200, "pilotfish agent not running (%s): nothing to drain\n" % why
        elif path == "/readiness":
            ok, detail = _standin_ready(app_address)
            status, body = (200 if ok else 503), "%s (stand-in: %s)\n" % (detail, why)
        else:
            status, body = 404, "pilotfish agent not running: %s; only /readiness and /offline\n" % why
        data = body.encode("utf-8")
        head = "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        phrase = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        connection.sendall((head % (status, phrase, len(data))).encode("latin-1") + data)
    except Exception:
        pass
    try:
        connection.close()
    except Exception:
        pass


def _standin_ready(app_address):
    """(ok, why): the app's original probe, with the kubelet's meaning; never raises."""
    import os

    raw = os.environ.get("PILOTFISH_APP_PROBE", "").strip()
    probe = None
    if raw:
        try:
            import json

            probe = json.loads(raw)
        except Exception:
            probe = None
    try:
        if isinstance(probe, dict) and isinstance(probe.get("httpGet"), dict):
            return _standin_http(probe["httpGet"], _standin_timeout(probe))
        for kind in ("tcpSocket", "grpc"):
            if isinstance(probe, dict) and isinstance(probe.get(kind), dict):
                action = probe[kind]
                address = (action.get("host") or "127.0.0.1", int(action["port"]))
                _standin_connect(address, _standin_timeout(probe)).close()
                return True, "app probe: tcp %s:%d open" % address
        if not isinstance(app_address, tuple):
            return True, "app listens on %s" % (app_address,)
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(app_address[0], app_address[0])
        _standin_connect((host, app_address[1]), 1.0).close()
        return True, "app listens on %s:%d" % (host, app_address[1])
    except Exception as problem:
        return False, "app not ready: %s: %s" % (type(problem).__name__, problem)


def _standin_timeout(probe):
    timeout = probe.get("timeoutSeconds", 1)
    return float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else 1.0


def _standin_connect(address, timeout):
    import socket

    return socket.create_connection(address, timeout)


def _standin_http(action, timeout):
    host = action.get("host") or "127.0.0.1"
    port = int(action["port"])
    path = action.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = [("Host", "%s:%d" % (host, port))]
    for item in action.get("httpHeaders") or []:
        name = str(item.get("name", ""))
        if name.lower() == "host":
            headers[0] = ("Host", str(item.get("value", "")))
        elif name and name.lower() != "user-agent":
            headers.append((name, str(item.get("value", ""))))
    headers += [("User-Agent", "kube-probe/pilotfish"), ("Accept", "*/*"), ("Connection", "close")]
    connection = _standin_connect((host, port), timeout)
    try:
        if str(action.get("scheme", "HTTP")).upper() == "HTTPS":
            import ssl

            context = ssl.SSLContext(getattr(ssl, "PROTOCOL_TLS_CLIENT", ssl.PROTOCOL_SSLv23))
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
            connection = context.wrap_socket(connection)
        request = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % h for h in headers))
        connection.sendall(request.encode("latin-1"))
        reply = b""
        try:
            while len(reply) < 10240:  # like the kubelet, read (and ignore) up to 10 KiB of body
                chunk = connection.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except Exception:
            if b"\n" not in reply:
                raise  # no status line: the probe timed out
        status = int(reply.split(b"\n", 1)[0].split()[1])
    finally:
        connection.close()
    return 200 <= status < 400, "app probe: GET %s:%d%s: HTTP %d" % (host, port, path, status)


def _chain_app_sitecustomize():
    """Import the next `sitecustomize` on sys.path, as `site` would have done.

    The bootstrap directory is taken off sys.path while importing so that the
    search finds the app's module, not this one. If there is none, this module
    stays registered as `sitecustomize`. Errors from the app's module propagate,
    so `site` reports them exactly as it would without the agent.
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.get("sitecustomize")
    removed = []
    for index in range(len(sys.path) - 1, -1, -1):
        entry = sys.path[index]
        try:
            same = os.path.abspath(entry or os.curdir) == here
        except Exception:
            same = False
        if same:
            removed.append((index, entry))
            del sys.path[index]
    if ours is not None:
        del sys.modules["sitecustomize"]
    found = False
    try:
        __import__("sitecustomize")
        found = True
    except ImportError as error:
        missing = getattr(error, "name", None) == "sitecustomize" or (
            sys.version_info < (3,) and str(error) == "No module named sitecustomize"
        )
        if not missing:
            raise
    finally:
        for index, entry in reversed(removed):
            sys.path.insert(index, entry)
        if not found and ours is not None:
            sys.modules["sitecustomize"] = ours


_pilotfish_start()
_chain_app_sitecustomize()
