"""One local cluster: the store, the API server, the controllers, and (when available) the node.

:class:`Cluster` is what the node side (network, kubelet) receives: the store, the address
pods reach the API server at, its CA, and the state directory.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, List, Optional

from .apiserver.server import ApiServer
from .pki import Pki
from .store import LOG_SIZE, Store

log = logging.getLogger("cluster")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE = ROOT / "build" / "cluster"


class Cluster:
    """Build with :meth:`start`; :meth:`stop` undoes everything (processes, network, files kept)."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE,
        node: bool = True,
        propagation_delay: float = 0.0,
        log_size: int = LOG_SIZE,
        backoff_base: float = 10.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.want_node = node
        self.log_size = log_size
        self.propagation_delay = propagation_delay
        self.backoff_base = backoff_base  # the kubelet's first restart back-off (doubling to 5 min)
        self.network: Any = None
        self.kubelet: Any = None
        self.store: Store
        self.api: ApiServer
        self.api_url_for_pods = ""
        self.ca_pem = b""
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._controllers: List[Any] = []

    def start(self) -> Cluster:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("pods", "logs"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        service_cidr = "10.96.0.0/16"
        addresses: List[str] = []
        if self.want_node:
            from .network import Network

            self.network = Network(self.state_dir, propagation_delay=self.propagation_delay)
            self.network.start()
            service_cidr = self.network.service_cidr
            addresses = [self.network.host_address, self.network.kubernetes_ip]
        self.store = Store(service_cidr=service_cidr, log_size=self.log_size)
        pki = Pki(self.state_dir / "pki", addresses)
        self.ca_pem = pki.ca_pem
        bind = addresses[0] if addresses else "127.0.0.1"
        self.api = ApiServer(
            self.store, "0.0.0.0" if addresses else "127.0.0.1", 0, pki.cert, pki.key, pki.token
        )
        self.api.start()
        self.api_url_for_pods = "https://%s:%d" % (bind, self.api.port)
        self.server_url = "https://127.0.0.1:%d" % self.api.port
        pki.write_kubeconfig(self.kubeconfig, self.server_url)
        from . import admission, bootstrap
        from .controllers import start_all

        admission.install(self)
        bootstrap.seed(self)
        self._controllers = start_all(self)
        if self.want_node:
            from .kubelet import Kubelet

            self.kubelet = Kubelet(
                self, self.network, ROOT / "hack" / "cluster" / "images.yaml", backoff_base=self.backoff_base
            )
            self.kubelet.start()
            self.api.logs = self.kubelet.log_path
        log.info("cluster up in %.1f s", time.monotonic() - started)
        return self

    def stop(self) -> None:
        for controller in reversed(self._controllers):
            try:
                controller.stop()
            except Exception:
                log.exception("stopping %r", controller)
        if self.kubelet is not None:
            self.kubelet.stop()
        try:
            self.api.stop()
        except Exception:
            log.exception("stopping the API server")
        if self.network is not None:
            self.network.stop()
        self.store.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: Optional[object]) -> None:
        self.stop()
