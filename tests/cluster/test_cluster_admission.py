"""Admission on the local cluster: MutatingWebhookConfigurations called as the real API server does.

A small HTTPS webhook on loopback stands behind a Service (no selector; its EndpointSlice points
at 127.0.0.1), so the service reference, the caBundle check against ``<svc>.<ns>.svc``, the
selectors, ``failurePolicy``, ``timeoutSeconds``, the JSON patch, ``warnings`` and dry runs are
all exercised through kubectl.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from pilotfish_webhook.tls import make_ca, make_serving_cert
from support.cluster import Api

Obj = Dict[str, Any]


class Hook:
    """Answers /patch (label + warning), /deny, /slow (3 s); records every review it got."""

    def __init__(self, directory: Path) -> None:
        self.ca, ca_key = make_ca("test-webhook-ca")
        cert, key = make_serving_cert(self.ca, ca_key, ["hook.hooks.svc"])
        (directory / "tls.crt").write_bytes(cert)
        (directory / "tls.key").write_bytes(key)
        self.reviews: List[Obj] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.reviews.append(review)
                request = review["request"]
                response: Obj = {"uid": request["uid"], "allowed": True}
                if self.path.startswith("/slow"):
                    time.sleep(3)
                if self.path.startswith("/deny"):
                    response = {
                        "uid": request["uid"],
                        "allowed": False,
                        "status": {"code": 403, "message": "no pods today"},
                    }
                if self.path.startswith("/patch"):
                    ops = [{"op": "add", "path": "/metadata/labels/hooked", "value": "yes"}]
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
                    response["warnings"] = ["hooked: a label was added"]
                body = json.dumps(
                    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
                )
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(directory / "tls.crt"), str(directory / "tls.key"))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def hook(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hook]:
    server = Hook(tmp_path_factory.mktemp("hook"))
    store = api.store
    for ns, labels in (("hooks", {}), ("inject-me", {"hooked": "enabled"}), ("leave-me", {})):
        store.create("namespaces", {"metadata": {"name": ns, "labels": labels}})
    store.create(
        "services",
        {
            "metadata": {"name": "hook", "namespace": "hooks"},
            "spec": {"ports": [{"name": "https", "port": 443}]},
        },
    )
    store.create(
        "endpointslices",
        {
            "metadata": {
                "name": "hook-1",
                "namespace": "hooks",
                "labels": {"kubernetes.io/service-name": "hook"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": server.port, "protocol": "TCP"}],
        },
    )
    yield server
    server.close()


def configure(api: Api, path: str, ca: bytes, failure: str = "Fail", timeout: int = 5) -> None:
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "test-hook"},
        "webhooks": [
            {
                "name": "test.hook.example",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": {
                    "service": {"name": "hook", "namespace": "hooks", "path": path, "port": 443},
                    "caBundle": base64.b64encode(ca).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"hooked": "enabled"}},
                "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
                "failurePolicy": failure,
                "timeoutSeconds": timeout,
            }
        ],
    }
    api.kubectl("apply", "-f", "-", input=json.dumps(config))


def pod(name: str, namespace: str, **labels: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels, app="x")},
            "spec": {"containers": [{"name": "c", "image": "python:3.11"}]},
        }
    )


def test_matching_pods_are_patched_and_kubectl_prints_the_warning(api: Api, hook: Hook) -> None:
    configure(api, "/patch", hook.ca)
    done = api.kubectl("apply", "-f", "-", input=pod("a", "inject-me"))
    assert "Warning: hooked: a label was added" in done.stderr
    assert api.store.get("pods", "inject-me", "a")["metadata"]["labels"]["hooked"] == "yes"
    review = hook.reviews[-1]["request"]
    assert (review["operation"], review["namespace"], review["dryRun"]) == ("CREATE", "inject-me", False)
    calls = len(hook.reviews)
    api.kubectl("apply", "-f", "-", input=pod("b", "leave-me"))  # namespaceSelector does not match
    api.kubectl("apply", "-f", "-", input=pod("c", "inject-me", skip="yes"))  # objectSelector does not
    assert len(hook.reviews) == calls
    assert "hooked" not in api.store.get("pods", "inject-me", "c")["metadata"]["labels"]


def test_dry_run_is_admitted_like_a_real_create_and_stores_nothing(api: Api, hook: Hook) -> None:
    configure(api, "/patch", hook.ca)
    done = api.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=pod("dry", "inject-me"))
    assert json.loads(done.stdout)["metadata"]["labels"]["hooked"] == "yes"
    assert hook.reviews[-1]["request"]["dryRun"] is True
    assert api.store.get("pods", "inject-me", "dry") is None


def test_a_denial_is_returned_with_the_webhooks_code_and_message(api: Api, hook: Hook) -> None:
    configure(api, "/deny", hook.ca)
    done = api.kubectl("apply", "-f", "-", input=pod("denied", "inject-me"), check=False)
    assert done.returncode != 0
    assert 'admission webhook "test.hook.example" denied the request: no pods today' in done.stderr
    assert api.store.get("pods", "inject-me", "denied") is None


def test_an_untrusted_certificate_fails_closed_or_open_by_failure_policy(api: Api, hook: Hook) -> None:
    other_ca, _ = make_ca("someone-else")
    configure(api, "/patch", other_ca, failure="Fail")
    done = api.kubectl("apply", "-f", "-", input=pod("closed", "inject-me"), check=False)
    assert (
        'failed calling webhook "test.hook.example"' in done.stderr
        and "CERTIFICATE_VERIFY_FAILED" in done.stderr
    )
    assert api.store.get("pods", "inject-me", "closed") is None
    configure(api, "/patch", other_ca, failure="Ignore")
    api.kubectl("apply", "-f", "-", input=pod("open", "inject-me"))
    assert "hooked" not in api.store.get("pods", "inject-me", "open")["metadata"]["labels"]


def test_timeout_seconds_bounds_the_call(api: Api, hook: Hook) -> None:
    configure(api, "/slow", hook.ca, failure="Fail", timeout=1)
    started = time.monotonic()
    done = api.kubectl("apply", "-f", "-", input=pod("slow", "inject-me"), check=False)
    assert done.returncode != 0 and "timed out" in done.stderr
    assert time.monotonic() - started < 2.9  # the webhook answers after 3 s
