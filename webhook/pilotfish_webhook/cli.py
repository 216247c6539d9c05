"""``pilotfish-webhook``: the command line of the cluster-side server."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from pilotfish_webhook import bodies, kube
from pilotfish_webhook.admission import options as admission_options
from pilotfish_webhook.admission import router as admission_router
from pilotfish_webhook.app import create_app
from pilotfish_webhook.asgi import ASGIApp
from pilotfish_webhook.config.sources import DEFAULT_SETTLE_SECONDS
from pilotfish_webhook.tls.certs import CertPaths, ensure_certs
from pilotfish_webhook.tls.keeper import CertKeeper, service_hosts
from pilotfish_webhook.tls.rotation import RotatingCerts, ssl_reloader
from pilotfish_webhook.tls.watch import FileWatcher, externally_issued

if TYPE_CHECKING:
    from pilotfish_webhook.config.router import ConfigService


def parse_listen(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 0.0.0.0:8443 (got %r)" % value)
    return host.strip("[]") or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilotfish-webhook", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the webhook and config service over HTTPS")
    serve.add_argument("--listen", type=parse_listen, default=("0.0.0.0", 8443), metavar="HOST:PORT")
    serve.add_argument(
        "--certs-dir",
        type=Path,
        default=Path("certs"),
        metavar="DIR",
        help="CA and serving certificate; created here when absent",
    )
    serve.add_argument(
        "--host-name",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP for the serving certificate (repeatable)",
    )
    serve.add_argument(
        "--read-timeout-seconds",
        type=float,
        default=bodies.DEFAULT_DEADLINE_SECONDS,
        metavar="S",
        help="a connection must complete a request's headers, and then its body, each within this "
        "long; else it is answered 408 and closed",
    )
    add_config_flags(serve)
    admission_options.add_arguments(serve)
    add_tls_flags(serve)
    return parser


def add_config_flags(serve: argparse.ArgumentParser) -> None:
    """Flags of the central config service (docs/policies.md)."""
    source = serve.add_mutually_exclusive_group()
    source.add_argument(
        "--policies",
        type=Path,
        metavar="FILE",
        help="embedded config service: GovernancePolicy objects from this multi-document YAML "
        "file, watched (changes apply within 1 s); registry kept in memory",
    )
    source.add_argument(
        "--in-cluster",
        action="store_true",
        help="run against the cluster: config service on GovernancePolicy objects, registry "
        "on Pods/EndpointSlices, callers authenticated by TokenReview; TLS kept in a Secret, "
        "caBundle patched into the webhook configuration, rotated",
    )
    serve.add_argument(
        "--system-namespace",
        default=None,
        metavar="NS",
        help="namespace whose policies are cluster scope (default: this pod's namespace in "
        "cluster, else pilotfish-system)",
    )
    serve.add_argument(
        "--policies-settle-seconds",
        type=float,
        default=DEFAULT_SETTLE_SECONDS,
        metavar="S",
        help="--policies where inotify is unavailable: apply a new file content only once it has "
        "stayed unchanged this long (a file rewritten in place is never applied half-written)",
    )
    serve.add_argument(
        "--lease-seconds",
        type=float,
        default=15.0,
        metavar="S",
        help="embedded registry: drop an instance that has not renewed for this long",
    )


def add_tls_flags(serve: argparse.ArgumentParser) -> None:
    """Flags of the serving certificate; ``--in-cluster`` (add_config_flags) switches the keeper on."""
    group = serve.add_argument_group("in-cluster TLS")
    group.add_argument(
        "--kubeconfig",
        default=None,
        metavar="FILE",
        help="reach the API server through this kubeconfig instead of the pod's service account",
    )
    group.add_argument("--secret-name", default="pilotfish-webhook-tls")
    group.add_argument("--webhook-config-name", default="pilotfish")
    group.add_argument(
        "--service-name", default="pilotfish", help="Service in front of the webhook (for SANs)"
    )
    group.add_argument(
        "--rotation-check-seconds",
        type=float,
        default=3600.0,
        help="how often to check the Secret (--in-cluster) or an externally issued tls.crt for rotation",
    )


def cert_keeper(args: argparse.Namespace, extra_hosts: Sequence[str]) -> Optional[CertKeeper]:
    """``--in-cluster``: the keeper of the shared Secret; else None."""
    if not args.in_cluster:
        return None
    namespace = args.namespace or os.environ.get("POD_NAMESPACE", "pilotfish-system")
    hosts = [*service_hosts(args.service_name, namespace), *extra_hosts]
    return CertKeeper(
        kube.KubeAPI(kubeconfig=args.kubeconfig),
        namespace,
        args.secret_name,
        args.webhook_config_name,
        hosts,
        args.certs_dir,
        args.rotation_check_seconds,
    )


def config_service(args: argparse.Namespace) -> Optional[ConfigService]:
    from pilotfish_webhook.config.router import ConfigService

    namespace = args.system_namespace or _own_namespace() or "pilotfish-system"
    if args.in_cluster:
        return ConfigService.in_cluster(namespace, kube.make_api_client(args.kubeconfig))
    return ConfigService.embedded(
        args.policies,
        namespace,
        lease_seconds=args.lease_seconds,
        settle_seconds=args.policies_settle_seconds,
    )


def _own_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    host, port = args.listen
    names = [*args.host_name, "localhost", "127.0.0.1"]
    in_cluster = cert_keeper(args, names)
    keeper: Optional[RotatingCerts] = in_cluster
    if keeper is None and externally_issued(args.certs_dir):
        keeper = FileWatcher(CertPaths(args.certs_dir), args.rotation_check_seconds)  # cert-manager
    certs = keeper.start() if keeper is not None else ensure_certs(args.certs_dir, names)
    admission = None if args.no_admission else admission_options.config_from_args(args)
    if admission is not None and in_cluster is not None:
        admission = dataclasses.replace(admission, namespace_seen=in_cluster.namespace_seen)
    fastapi_app = create_app(admission=admission)
    service = config_service(args)
    if service is not None:
        from pilotfish_webhook.config.router import attach

        attach(fastapi_app, service)
    app: ASGIApp = fastapi_app
    if admission is not None:
        app = admission_router.with_fast_path(app, admission)
    app = bodies.with_body_limits(
        app,
        deadline=args.read_timeout_seconds,
        max_bytes_by_path={"/mutate": admission_router.DEFAULT_MAX_BODY_BYTES},
    )
    if service is not None:  # the config long-polls skip every layer: 1,000 answers per change
        from pilotfish_webhook.config.router import in_front

        app = in_front(app, service)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certs.cert),
        ssl_keyfile=str(certs.key),
        log_level="warning",
        access_log=False,
        # httptools and uvloop (pinned with the webhook extra) when installed: admission latency.
        http=bodies.with_header_deadline(AutoHTTPProtocol, args.read_timeout_seconds),
        loop="auto",
        # Parked config long-polls would hold a graceful shutdown for up to 60 s;
        # agents retry against another replica instead.
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    # Everything imported so far lives as long as the process: move it out of the collector's
    # sight, so a full collection walks only per-request garbage (a full pass over the app's
    # ~60k start-up objects took 10-35 ms here, straight into the admission p99).
    gc.collect()
    gc.freeze()
    if keeper is not None:
        keeper.on_rotate(ssl_reloader(config))
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
