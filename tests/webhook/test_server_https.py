"""The real server: ``pilotfish-webhook serve`` in a subprocess, HTTPS only, on 127.0.0.1.

The client trusts only the ``ca.crt`` the server generated in its ``--certs-dir``, so these
tests also prove the generated CA and serving certificate chain and name 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import httpx
import jsonpatch
import pytest
from support.pods import admission_review, validate_pod
from support.ports import free_port
from support.wait import GiveUp, eventually

EXE = Path(sys.executable).parent / "pilotfish-webhook"

POD: Dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "shop-", "namespace": "shop", "labels": {"app": "shop"}},
    "spec": {
        "containers": [
            {
                "name": "shop",
                "image": "shop:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
            }
        ]
    },
}


def trusting(certs: Path) -> ssl.SSLContext:
    """A client context that trusts only the CA the server generated."""
    return ssl.create_default_context(cafile=str(certs / "ca.crt"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    port = free_port()
    proc = subprocess.Popen(
        [str(EXE), "serve", "--listen", "127.0.0.1:%d" % port, "--certs-dir", str(certs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = "https://127.0.0.1:%d" % port
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise GiveUp("server exited: %s" % proc.stdout.read().decode() if proc.stdout else "")
            return httpx.get(url + "/healthz", verify=trusting(certs), timeout=2).status_code == 200

        eventually(healthy, 30, "the server answering /healthz", interval=0.1)
        yield url, certs
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def client(server: Tuple[str, Path]) -> Iterator[httpx.Client]:
    url, certs = server
    with httpx.Client(base_url=url, verify=trusting(certs), timeout=10) as c:
        yield c


def test_healthz_answers_over_https_verified_by_the_generated_ca(client: httpx.Client) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_the_server_speaks_only_tls(server: Tuple[str, Path]) -> None:
    url, _ = server
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=3)


def test_a_client_without_the_ca_refuses_the_certificate(server: Tuple[str, Path]) -> None:
    url, _ = server
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/healthz", verify=ssl.create_default_context(), timeout=3)


def test_mutate_returns_a_patch_that_yields_a_valid_injected_pod(client: httpx.Client) -> None:
    doc = admission_review(POD, uid="uid-1")
    answer = client.post("/mutate", json=doc)
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["uid"] == "uid-1" and response["allowed"] is True
    patched = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(response["patch"])))
    validate_pod(patched)
    app = patched["spec"]["containers"][0]
    assert app["readinessProbe"]["httpGet"]["port"] == 55199
    assert patched["spec"]["initContainers"][0]["name"] == "pilotfish-init"


def test_a_second_pass_through_the_server_adds_nothing(client: httpx.Client) -> None:
    first = client.post("/mutate", json=admission_review(POD)).json()["response"]
    patched = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(first["patch"])))
    second = client.post("/mutate", json=admission_review(patched)).json()["response"]
    assert second["allowed"] is True and "patch" not in second


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{not json", "not JSON"),
        (b"", "empty request body"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request: missing"),
        (b'{"apiVersion": "v1", "kind": "AdmissionReview", "request": {}}', "apiVersion"),
    ],
)
def test_malformed_requests_get_400_saying_what_is_wrong(
    client: httpx.Client, body: bytes, message: str
) -> None:
    answer = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_oversize_bodies_are_refused_with_413(client: httpx.Client) -> None:
    answer = client.post(
        "/mutate", content=b"x" * (4 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413 and "exceeds" in answer.json()["error"]


def test_oversize_chunked_bodies_without_length_are_refused_too(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"y" * (64 * 1024)

    answer = client.post("/mutate", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_the_server_reuses_its_certificates_after_a_restart(server: Tuple[str, Path]) -> None:
    _, certs = server
    before = (certs / "ca.crt").read_bytes()
    port = free_port()
    proc = subprocess.Popen([str(EXE), "serve", "--listen", "127.0.0.1:%d" % port, "--certs-dir", str(certs)])
    try:
        url = "https://127.0.0.1:%d/healthz" % port
        eventually(
            lambda: httpx.get(url, verify=trusting(certs), timeout=2).status_code == 200, 30, "/healthz"
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert (certs / "ca.crt").read_bytes() == before


def test_an_externally_issued_certificate_is_used_as_is_and_followed_when_rotated(tmp_path: Path) -> None:
    """cert-manager mode: tls.crt/tls.key without ca.key are never overwritten, and a rotated
    pair on disk is served to new connections without a restart."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from pilotfish_webhook.tls import make_ca, make_serving_cert

    ca_cert, ca_key = make_ca("external-ca")
    (tmp_path / "ca.crt").write_bytes(ca_cert)

    def issue(days: int) -> bytes:
        cert, key = make_serving_cert(ca_cert, ca_key, ["127.0.0.1"], dt.timedelta(days=days))
        (tmp_path / "tls.key").write_bytes(key)
        (tmp_path / "tls.crt").write_bytes(cert)
        return cert

    first = issue(30)
    port = free_port()
    args = [
        "serve",
        "--listen",
        "127.0.0.1:%d" % port,
        "--certs-dir",
        str(tmp_path),
        "--rotation-check-seconds",
        "0.2",
    ]
    proc = subprocess.Popen([str(EXE), *args])

    def presented() -> bytes:
        context = trusting(tmp_path)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            der = tls.getpeercert(binary_form=True)
            tls.close()
        assert der is not None
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)

    try:
        assert eventually(presented, 30, "the server presenting a certificate", interval=0.1) == first
        assert not (tmp_path / "ca.key").exists(), "the server must not mint its own CA here"
        second = issue(90)
        eventually(lambda: presented() == second, 15, "the rotated certificate picked up", interval=0.2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_internal_error_is_answered_allowed_and_unmodified_with_a_warning(client: httpx.Client) -> None:
    pod = json.loads(json.dumps(POD))
    pod["spec"]["containers"][0]["env"] = "not-a-list"  # makes the mutation raise inside
    answer = client.post("/mutate", json=admission_review(pod, uid="uid-err"))
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response == {
        "uid": "uid-err",
        "allowed": True,
        "warnings": [response["warnings"][0]],
    }
    assert "internal error" in response["warnings"][0] and "admitted unchanged" in response["warnings"][0]


def test_other_methods_and_paths_still_reach_the_fastapi_app_behind_the_fast_path(
    client: httpx.Client,
) -> None:
    assert client.get("/mutate").status_code == 405
    assert client.post("/mutate/").status_code in (307, 404, 405)
    assert client.get("/nope").status_code == 404
