"""``python -m hack.cluster`` (``make cluster``): run a local cluster in the foreground.

Prints the ``export KUBECONFIG=...`` line once the API server answers; Ctrl-C or SIGTERM
stops everything the cluster started. ``--no-node`` runs the API side alone (no pods run);
``--seconds N`` stops after N seconds (tests).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

from .cluster import DEFAULT_STATE, Cluster


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.cluster", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument(
        "--no-node", action="store_true", help="API server and controllers only; pods never run"
    )
    parser.add_argument(
        "--propagation-delay", type=float, default=0.0, help="seconds before endpoint changes reach Services"
    )
    parser.add_argument(
        "--backoff-base",
        type=float,
        default=10.0,
        help="the kubelet's first restart back-off in seconds (doubling up to 5 min; 10 like Kubernetes)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    started = time.monotonic()
    cluster = Cluster(
        args.state_dir,
        node=not args.no_node,
        propagation_delay=args.propagation_delay,
        backoff_base=args.backoff_base,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
    except Exception as exc:  # e.g. the node's requirements are missing: say exactly what
        print("local cluster: cannot start: %s" % exc, file=sys.stderr)
        try:
            cluster.stop()
        except Exception:
            pass
        return 1
    print(
        "local cluster up in %.1f s (API server %s)" % (time.monotonic() - started, cluster.server_url),
        flush=True,
    )
    print("export KUBECONFIG=%s" % cluster.kubeconfig.resolve(), flush=True)
    try:
        stop.wait(args.seconds)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
