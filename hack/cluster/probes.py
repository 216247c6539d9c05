"""One probe attempt (httpGet, tcpSocket, exec, grpc) and lifecycle handlers, as the kubelet runs them.

httpGet and tcpSocket connect from the host into the pod's address (the kubelet's vantage
point); exec runs inside the container's network and mount namespaces (``nsenter``) with its
environment; grpc asks ``grpc.health.v1.Health/Check`` (encoded by hand: grpcio only, no
protobuf stubs needed). Timing, thresholds and what a result means live in the kubelet.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["ProbeTarget", "Timing", "nsenter_argv", "resolve_port", "run_handler", "timing"]

Obj = Dict[str, Any]
USER_AGENT = "kube-probe/1.32"


@dataclass(frozen=True)
class Timing:
    """A probe's timing and thresholds with Kubernetes' defaults."""

    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


def timing(probe: Obj) -> Timing:
    return Timing(
        initial_delay=float(probe.get("initialDelaySeconds") or 0),
        period=float(probe.get("periodSeconds") or 10),
        timeout=float(probe.get("timeoutSeconds") or 1),
        success_threshold=int(probe.get("successThreshold") or 1),
        failure_threshold=int(probe.get("failureThreshold") or 3),
    )


@dataclass
class ProbeTarget:
    """Where a container is: its pod's address, its main process, its environment."""

    ip: str
    pid: Optional[int]
    env: Dict[str, str]
    cwd: str = "/"
    ports: List[Obj] = field(default_factory=list)  # the container's declared ports
    own_netns: bool = True  # False for hostNetwork pods: exec stays in the host's network


def resolve_port(port: Any, ports: List[Obj]) -> int:
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in ports:
        if p.get("name") == text and isinstance(p.get("containerPort"), int):
            return int(p["containerPort"])
    raise ValueError("port %r matches no containerPort" % port)


def run_handler(handler: Obj, target: ProbeTarget, timeout: float, what: str = "probe") -> Tuple[bool, str]:
    """Run one probe or lifecycle handler; (success, message for events)."""
    try:
        if "httpGet" in handler:
            return _http(handler["httpGet"] or {}, target, timeout, what)
        if "tcpSocket" in handler:
            h = handler["tcpSocket"] or {}
            port = resolve_port(h.get("port"), target.ports)
            with socket.create_connection((h.get("host") or target.ip, port), timeout=timeout):
                return True, ""
        if "exec" in handler:
            return _exec((handler["exec"] or {}).get("command") or [], target, timeout, what)
        if "grpc" in handler:
            return _grpc(handler["grpc"] or {}, target, timeout)
        if "sleep" in handler:
            time.sleep(max(0.0, min(float((handler["sleep"] or {}).get("seconds", 0)), timeout)))
            return True, ""
    except (OSError, ValueError, http.client.HTTPException) as e:
        return False, _describe(e, timeout)
    return False, "unsupported handler %s" % sorted(handler)


def _describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "context deadline exceeded (timeout %gs)" % timeout
    return str(e) or type(e).__name__


def _http(h: Obj, target: ProbeTarget, timeout: float, what: str) -> Tuple[bool, str]:
    host = h.get("host") or target.ip
    port = resolve_port(h.get("port"), target.ports)
    path = h.get("path") or "/"
    conn: http.client.HTTPConnection
    if str(h.get("scheme", "HTTP")).upper() == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates either
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for item in h.get("httpHeaders") or []:
        headers[str(item.get("name"))] = str(item.get("value", ""))
    url = "%s://%s:%d%s" % (str(h.get("scheme", "HTTP")).lower(), host, port, path)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read(10 * 1024)
    except ConnectionRefusedError:
        return False, 'Get "%s": dial tcp %s:%d: connect: connection refused' % (url, host, port)
    except (socket.timeout, TimeoutError):
        return (
            False,
            'Get "%s": context deadline exceeded (Client.Timeout exceeded while awaiting headers)' % url,
        )
    finally:
        conn.close()
    if 200 <= resp.status < 400:
        return True, ""
    message = "HTTP probe failed with statuscode: %d" % resp.status
    if what != "probe":
        message = "HTTP lifecycle hook (%s) for Container in Pod failed - error: %s" % (path, message)
    return False, message


def _exec(command: List[str], target: ProbeTarget, timeout: float, what: str) -> Tuple[bool, str]:
    if not command:
        return False, "exec: no command"
    if target.pid is None:
        return False, "exec: the container is not running"
    argv = nsenter_argv(target, command)
    try:
        proc = subprocess.run(
            argv, env=target.env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return False, "command %r timed out after %gs" % (command, timeout)
    if proc.returncode == 0:
        return True, ""
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()[-300:]
    return False, "command %r exited with %d: %s" % (command, proc.returncode, output)


def nsenter_argv(target: ProbeTarget, command: List[str]) -> List[str]:
    """Run ``command`` in the container's mount (and, unless hostNetwork, network) namespace."""
    assert target.pid is not None
    argv = ["nsenter", "-t", str(target.pid), "-m"]
    if target.own_netns:
        argv.append("-n")
    # --wdns: the directory as the container sees it (--wd would resolve it on the host).
    return [*argv, "--wdns=" + (target.cwd or "/"), "--", *[str(c) for c in command]]


def _grpc(h: Obj, target: ProbeTarget, timeout: float) -> Tuple[bool, str]:
    import grpc  # the dev venv has grpcio; only grpc probes need it

    port = resolve_port(h.get("port"), target.ports)
    service = str(h.get("service") or "").encode()
    request = (b"\x0a" + _varint(len(service)) + service) if service else b""
    channel = grpc.insecure_channel("%s:%d" % (target.ip, port))
    try:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            reply = check(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, "timeout: health rpc did not complete within %gs" % timeout
            return False, "error: health rpc probe failed: %s" % (code,)
    finally:
        channel.close()
    status = _status_of(reply)
    if status == 1:
        return True, ""
    names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
    return False, "service unhealthy (responded with %s)" % names.get(status, str(status))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _status_of(reply: bytes) -> int:
    """HealthCheckResponse.status (field 1, varint); 0 (UNKNOWN) when absent."""
    i = 0
    while i < len(reply):
        tag = reply[i]
        i += 1
        if tag == 0x08:
            value, shift = 0, 0
            while i < len(reply):
                b = reply[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    return value
        break
    return 0
