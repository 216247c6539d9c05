"""In-cluster TLS against a stand-in API server serving recorded Kubernetes API objects.

No Kubernetes API server can run here, so ``KubeAPIStandIn`` serves the objects in
``recorded/`` (hand-written in the API's wire format, see recorded/README.md) over real
HTTP, with the API server's semantics that matter: 404 for a missing object, 409 for a
create that lost a race or a replace with a stale ``resourceVersion``, JSON-patch with
``test`` operations. The code under test is the real one, including
:class:`pilotfish_webhook.kube.KubeAPI` over the official ``kubernetes`` client.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from pilotfish_webhook.kube import KubeAPI
from pilotfish_webhook.tls import make_ca, make_serving_cert, publish, rotation
from pilotfish_webhook.tls import secret as shared_secret
from pilotfish_webhook.tls.keeper import CertKeeper, service_hosts
from pilotfish_webhook.tls.secret import Material
from support.ports import free_port
from support.wait import GiveUp, eventually

RECORDED = Path(__file__).parent / "recorded"
NAMESPACE = "pilotfish-system"
SECRET = "pilotfish-webhook-tls"
HOSTS = service_hosts("pilotfish", NAMESPACE)

Key = Tuple[str, str, str]  # (resource, namespace, name)


class KubeAPIStandIn:
    """Just enough of kube-apiserver, over HTTP, for secrets, configmaps, namespaces and webhook configs."""

    def __init__(self) -> None:
        self.objects: Dict[Key, Dict[str, Any]] = {}
        self.version = 50000
        self.log: List[Tuple[str, str]] = []
        self.before_create: Optional[Callable[[Key], None]] = None
        mwc = json.loads((RECORDED / "mutatingwebhookconfiguration-pilotfish.json").read_text())
        self.objects[("mutatingwebhookconfigurations", "", "pilotfish")] = mwc
        self.namespaces = json.loads((RECORDED / "namespaces.json").read_text())
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def put(self, key: Key, obj: Dict[str, Any]) -> Dict[str, Any]:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        return obj

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p in self.log if m == method and fragment in p)

    @staticmethod
    def _key(path: str) -> Tuple[Key, bool]:
        parts = path.strip("/").split("/")
        if parts[:3] == ["apis", "admissionregistration.k8s.io", "v1"]:
            return (parts[3], "", parts[4] if len(parts) > 4 else ""), len(parts) == 4
        # /api/v1/namespaces/{ns}/{resource}[/{name}]
        if len(parts) >= 5:
            return (parts[4], parts[3], parts[5] if len(parts) > 5 else ""), len(parts) == 5
        return ("namespaces", "", ""), True

    def _handler(self) -> Any:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
                self._send(code, {**body, "message": message, "reason": reason, "code": code})

            def _body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def _serve(self) -> None:
                path = self.path.split("?")[0]
                api.log.append((self.command, path))
                key, collection = api._key(path)
                with api.lock:
                    if self.command == "GET" and key[0] == "namespaces":
                        return self._send(200, api.namespaces)
                    if self.command == "GET":
                        if key not in api.objects:
                            return self._status(404, "NotFound", '%s "%s" not found' % (key[0], key[2]))
                        return self._send(200, api.objects[key])
                    if self.command == "POST" and collection:
                        body = self._body()
                        key = (key[0], key[1], body["metadata"]["name"])
                        if api.before_create:
                            api.before_create(key)
                        if key in api.objects:
                            return self._status(
                                409, "AlreadyExists", '%s "%s" already exists' % (key[0], key[2])
                            )
                        body["metadata"]["namespace"] = key[1]
                        return self._send(201, api.put(key, body))
                    if self.command == "PUT":
                        body = self._body()
                        current = api.objects.get(key)
                        if current is None:
                            return self._status(404, "NotFound", "not found")
                        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                            return self._status(409, "Conflict", "the object has been modified")
                        return self._send(200, api.put(key, body))
                    if self.command == "PATCH":
                        if self.headers.get("Content-Type") != "application/json-patch+json":
                            return self._status(
                                415, "UnsupportedMediaType", self.headers.get("Content-Type", "")
                            )
                        try:
                            patched = jsonpatch.apply_patch(api.objects[key], self._body())
                        except jsonpatch.JsonPatchException as exc:
                            return self._status(422, "Invalid", str(exc))
                        return self._send(200, api.put(key, patched))
                return self._status(405, "MethodNotAllowed", self.command)

            do_GET = do_POST = do_PUT = do_PATCH = _serve

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def apiserver() -> Iterator[KubeAPIStandIn]:
    server = KubeAPIStandIn()
    yield server
    server.close()


def kube(apiserver: KubeAPIStandIn) -> KubeAPI:
    configuration = client.Configuration()
    configuration.host = apiserver.url
    return KubeAPI(client.ApiClient(configuration))


def keeper(apiserver: KubeAPIStandIn, directory: Path) -> CertKeeper:
    return CertKeeper(
        kube(apiserver), NAMESPACE, SECRET, "pilotfish", HOSTS, directory, interval_seconds=0.05
    )


def secret_data(apiserver: KubeAPIStandIn) -> Dict[str, bytes]:
    data = apiserver.objects[("secrets", NAMESPACE, SECRET)]["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def ca_bundles(apiserver: KubeAPIStandIn) -> List[bytes]:
    mwc = apiserver.objects[("mutatingwebhookconfigurations", "", "pilotfish")]
    return [base64.b64decode(w["clientConfig"]["caBundle"]) for w in mwc["webhooks"]]


def not_after(pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def test_first_replica_creates_the_secret_patches_ca_bundle_and_publishes_the_ca(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    assert keeper(apiserver, tmp_path).sync() is True
    data = secret_data(apiserver)
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"}
    assert (tmp_path / "tls.crt").read_bytes() == data["tls.crt"]
    assert (tmp_path / "ca.crt").read_bytes() == data["ca-bundle.crt"]
    assert ca_bundles(apiserver) == [data["ca-bundle.crt"]] * 2, "both webhooks, the stale one replaced"
    san = x509.load_pem_x509_certificate(data["tls.crt"]).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "pilotfish.pilotfish-system.svc" in san.value.get_values_for_type(x509.DNSName)
    published = {k[1] for k in apiserver.objects if k[0] == "configmaps"}
    assert published == {"default", "pilotfish-system", "shop"}, "no kube-* and no Terminating namespace"
    cm = apiserver.objects[("configmaps", "shop", "pilotfish-ca")]
    assert cm["data"]["ca.crt"] == data["ca-bundle.crt"].decode()


def test_a_namespace_created_after_start_gets_the_ca_within_one_short_round(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    # The README's order: install pilotfish, then create the app's namespace. Its injected pods
    # mount pilotfish-ca to trust the config service: waiting for the hourly round is too late.
    keeper_ = keeper(apiserver, tmp_path)
    keeper_.sync()
    apiserver.namespaces["items"].append({"metadata": {"name": "late"}, "status": {"phase": "Active"}})
    reads_before = apiserver.count("GET", "/configmaps/")
    assert keeper_.publish_new_namespaces() == 1
    assert "pilotfish-ca" in {k[2] for k in apiserver.objects if k[:2] == ("configmaps", "late")}
    assert apiserver.count("GET", "/configmaps/") == reads_before + 1, "only the new namespace is read"
    assert keeper_.publish_new_namespaces() == 0


def test_admitting_a_pod_publishes_the_ca_into_its_namespace_at_once_not_at_the_next_round(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    """Why: a namespace labelled and deployed at once had its first pods started ~10 s before
    pilotfish-ca reached it; their agents ran without the config service until the kubelet
    synced the volume (up to a minute on a real cluster)."""
    from pilotfish_webhook.admission.config import InjectionConfig
    from pilotfish_webhook.admission.router import MutateEndpoint

    keeper_ = CertKeeper(
        kube(apiserver), NAMESPACE, SECRET, "pilotfish", HOSTS, tmp_path, namespace_check_seconds=3600
    )
    keeper_.start()
    try:
        apiserver.namespaces["items"].append({"metadata": {"name": "fresh"}, "status": {"phase": "Active"}})
        endpoint = MutateEndpoint(InjectionConfig(namespace_seen=keeper_.namespace_seen))
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "fresh",
                "object": {"metadata": {"name": "web-1", "namespace": "fresh"}, "spec": {"containers": []}},
            },
        }
        status, _ = endpoint.review_body(json.dumps(review).encode())
        assert status == 200
        published = threading.Event()
        for _ in range(100):  # the publisher runs on its own thread: wait for its result, 5 s at most
            if ("configmaps", "fresh", "pilotfish-ca") in apiserver.objects:
                published.set()
                break
            threading.Event().wait(0.05)
        assert published.is_set(), "pilotfish-ca not published into 'fresh' after a pod was admitted"
    finally:
        keeper_.stop()


def test_the_ca_bundle_patch_is_guarded_by_the_recorded_resource_version(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    api = kube(apiserver)
    mwc = apiserver.objects[("mutatingwebhookconfigurations", "", "pilotfish")]
    mwc["metadata"]["resourceVersion"] = "48211"
    original_read = api.read_webhook_configuration

    def stale_read(name: str) -> Any:
        seen = original_read(name)
        apiserver.put(("mutatingwebhookconfigurations", "", "pilotfish"), mwc)  # someone edits it meanwhile
        return seen

    api.read_webhook_configuration = stale_read  # type: ignore[method-assign]
    with pytest.raises(client.exceptions.ApiException) as failure:
        publish.patch_ca_bundle(api, "pilotfish", b"pem")
    assert failure.value.status == 422


def test_a_second_replica_reuses_the_secret_and_changes_nothing(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    keeper(apiserver, tmp_path / "a").sync()
    writes = apiserver.count("PUT") + apiserver.count("PATCH") + apiserver.count("POST")
    keeper(apiserver, tmp_path / "b").sync()
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()
    assert (tmp_path / "a" / "ca.crt").read_bytes() == (tmp_path / "b" / "ca.crt").read_bytes()
    assert apiserver.count("PUT") + apiserver.count("PATCH") + apiserver.count("POST") == writes


def test_losing_the_create_race_adopts_the_winners_certificate(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    winner = shared_secret.fresh(HOSTS)

    def other_replica_wins(key: Tuple[str, str, str]) -> None:
        if key == ("secrets", NAMESPACE, SECRET) and key not in apiserver.objects:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
            }
            apiserver.put(key, {**body, "type": "Opaque", "data": winner.secret_data()})

    apiserver.before_create = other_replica_wins
    keeper(apiserver, tmp_path).sync()
    assert (tmp_path / "tls.crt").read_bytes() == winner.cert
    assert ca_bundles(apiserver)[0] == winner.ca_bundle


def seed_secret(apiserver: KubeAPIStandIn, material: Material) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}}
    apiserver.put(("secrets", NAMESPACE, SECRET), {**body, "type": "Opaque", "data": material.secret_data()})


def test_a_serving_certificate_near_expiry_is_rotated_under_the_same_ca(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, HOSTS, dt.timedelta(days=10))
    seed_secret(apiserver, Material(ca_cert, ca_key, cert, key, ca_cert))
    keeper(apiserver, tmp_path).sync()
    data = secret_data(apiserver)
    assert data["ca.crt"] == ca_cert and data["tls.crt"] != cert
    assert not_after(data["tls.crt"]) - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=80)
    assert apiserver.count("PUT", "/secrets/") == 1


def test_a_ca_near_expiry_is_rotated_and_the_old_ca_stays_trusted_meanwhile(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, HOSTS)
    seed_secret(apiserver, Material(ca_cert, ca_key, cert, key, ca_cert))
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3650 - 200)  # CA has 200 days left
    keeper(apiserver, tmp_path).sync(now=later)
    data = secret_data(apiserver)
    assert data["ca.crt"] != ca_cert
    assert data["ca-bundle.crt"].startswith(data["ca.crt"]) and ca_cert in data["ca-bundle.crt"]
    assert ca_bundles(apiserver) == [data["ca-bundle.crt"]] * 2


def test_a_replace_that_lost_to_another_replica_rereads_and_converges(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, HOSTS, dt.timedelta(days=1))
    seed_secret(apiserver, Material(ca_cert, ca_key, cert, key, ca_cert))
    api = kube(apiserver)
    original_replace = api.replace_secret
    rotated_by_other = shared_secret.renewed(
        Material(ca_cert, ca_key, cert, key, ca_cert), HOSTS, dt.datetime.now(dt.timezone.utc)
    )
    assert rotated_by_other is not None

    def race(namespace: str, name: str, body: Dict[str, Any]) -> Any:
        api.replace_secret = original_replace  # type: ignore[method-assign]
        seed_secret(apiserver, rotated_by_other)  # the other replica's rotation lands first
        return original_replace(namespace, name, body)

    api.replace_secret = race  # type: ignore[method-assign]
    material = shared_secret.load_or_create(api, NAMESPACE, SECRET, HOSTS)
    assert material.cert == rotated_by_other.cert


def test_the_background_loop_reports_rotations_to_the_tls_listener(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    keeper_ = keeper(apiserver, tmp_path)
    keeper_.start()
    rotated = threading.Event()
    keeper_.on_rotate(lambda paths: rotated.set())
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, HOSTS, dt.timedelta(days=2))
    seed_secret(apiserver, Material(ca_cert, ca_key, cert, key, ca_cert))  # e.g. an admin replaced it
    try:
        assert rotated.wait(10), "the loop did not pick up the rotated Secret"
    finally:
        keeper_.stop()
    assert (tmp_path / "tls.crt").read_bytes() == secret_data(apiserver)["tls.crt"]


def test_recorded_webhook_configuration_matches_the_deploy_manifest() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    manifest = yaml.safe_load((root / "deploy/base/mutatingwebhookconfiguration.yaml").read_text())
    recorded = json.loads((RECORDED / "mutatingwebhookconfiguration-pilotfish.json").read_text())
    for mine, theirs in zip(manifest["webhooks"], recorded["webhooks"]):
        for field in (
            "name",
            "namespaceSelector",
            "objectSelector",
            "failurePolicy",
            "sideEffects",
            "timeoutSeconds",
        ):
            assert mine[field] == theirs[field], field
        assert mine["clientConfig"]["service"] == theirs["clientConfig"]["service"]


def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(tmp_path: Path) -> None:
    """The reload path of ``pilotfish-webhook serve --in-cluster``: same SSLContext, new chain."""
    import socket
    import ssl
    from types import SimpleNamespace

    from pilotfish_webhook.tls import CertPaths, write_atomically

    ca_cert, ca_key = make_ca()
    paths = CertPaths(tmp_path)
    (tmp_path / "ca.crt").write_bytes(ca_cert)

    def issue(days: int) -> bytes:
        cert, key = make_serving_cert(ca_cert, ca_key, ["127.0.0.1"], dt.timedelta(days=days))
        write_atomically(paths.cert, cert)
        write_atomically(paths.key, key, secret=True)
        return cert

    first = issue(5)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(paths.cert), str(paths.key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))

    def presented() -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
        assert der is not None
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)

    assert presented() == first
    second = issue(90)
    rotation.ssl_reloader(SimpleNamespace(ssl=server_ctx))(paths)
    assert presented() == second
    thread.join(5)
    listener.close()


def test_serve_in_cluster_end_to_end_uses_the_shared_secret_and_patches_the_webhook(
    apiserver: KubeAPIStandIn, tmp_path: Path
) -> None:
    """``pilotfish-webhook serve --in-cluster`` as a subprocess, talking to the stand-in API
    server through a kubeconfig: it serves HTTPS with the Secret's chain and sets caBundle."""
    import ssl
    import subprocess
    import sys

    import httpx
    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": apiserver.url}}],
                "users": [{"name": "pilotfish", "user": {"token": "recorded"}}],
                "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "pilotfish"}}],
                "current-context": "standin",
            }
        )
    )
    port = free_port()  # `serve --listen` refuses port 0
    exe = Path(sys.executable).parent / "pilotfish-webhook"
    args = [str(exe), "serve", "--listen", "127.0.0.1:%d" % port, "--certs-dir", str(tmp_path / "certs")]
    args += ["--in-cluster", "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE]
    proc = subprocess.Popen(args)
    try:

        def secret_created() -> bool:
            if proc.poll() is not None:
                raise GiveUp("server exited")
            return ("secrets", NAMESPACE, SECRET) in apiserver.objects and (
                tmp_path / "certs" / "tls.crt"
            ).exists()

        eventually(secret_created, 30, "the Secret created", interval=0.1)
        bundle = secret_data(apiserver)["ca-bundle.crt"]
        context = ssl.create_default_context(cadata=bundle.decode())
        answer = eventually(
            lambda: httpx.get("https://127.0.0.1:%d/healthz" % port, verify=context, timeout=2),
            30,
            "the server answering",
            interval=0.1,
        )
        assert answer.status_code == 200
        assert ca_bundles(apiserver) == [bundle, bundle]
    finally:
        proc.terminate()
        proc.wait(10)
