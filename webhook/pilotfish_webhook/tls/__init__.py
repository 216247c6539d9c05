"""TLS for the cluster-side server.

- :mod:`.certs`: a private CA and serving certificates on disk (``ensure_certs`` outside a
  cluster), PEM helpers, atomic writes.
- :mod:`.secret`: ``--in-cluster``, the CA and pair every replica shares, in one Secret;
  rotation.
- :mod:`.publish`: ``caBundle`` into the webhook configuration, ``pilotfish-ca`` ConfigMaps
  into namespaces.
- :mod:`.keeper`: ``CertKeeper``, the threads that keep all of that in sync.
- :mod:`.watch`: ``FileWatcher``, a pair issued elsewhere (cert-manager) followed on disk.
- :mod:`.rotation`: what both rotating sources share, and ``ssl_reloader`` (serve a rotated
  pair without a restart).

The certificate-making names are re-exported here (``from pilotfish_webhook.tls import
make_ca``); nothing here imports the Kubernetes client.
"""

from pilotfish_webhook.tls.certs import CertPaths, ensure_certs, make_ca, make_serving_cert, write_atomically

__all__ = ["CertPaths", "ensure_certs", "make_ca", "make_serving_cert", "write_atomically"]
