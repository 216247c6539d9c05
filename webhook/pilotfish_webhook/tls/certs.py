"""Certificates on disk: a private CA, serving certificates it signs, and the PEM helpers.

The API server only talks to admission webhooks over HTTPS and checks the
certificate against the ``caBundle`` of the MutatingWebhookConfiguration. Outside a
cluster (:func:`ensure_certs`) we create both with ``cryptography`` when a certificate
directory is empty, and reuse what is there otherwise, so restarts keep the same CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertPaths:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def cert(self) -> Path:
        return self.directory / TLS_CERT

    @property
    def key(self) -> Path:
        return self.directory / TLS_KEY


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(common_name: str = "pilotfish-webhook-ca") -> tuple[bytes, bytes]:
    """A new self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(names: Iterable[str]) -> List[x509.GeneralName]:
    entries: List[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def make_serving_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, hosts: Sequence[str], validity: dt.timedelta = SERVING_VALIDITY
) -> tuple[bytes, bytes]:
    """A serving certificate for ``hosts`` (DNS names or IPs) signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_certs(directory: Path, hosts: Sequence[str]) -> CertPaths:
    """Create the CA and serving certificate in ``directory`` unless they are already there."""
    paths = CertPaths(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not (paths.ca_cert.exists() and paths.ca_key.exists()):
        ca_pem, ca_key_pem = make_ca()
        write_atomically(paths.ca_key, ca_key_pem, secret=True)
        write_atomically(paths.ca_cert, ca_pem)
    if not (paths.cert.exists() and paths.key.exists()):
        cert_pem, key_pem = make_serving_cert(paths.ca_cert.read_bytes(), paths.ca_key.read_bytes(), hosts)
        write_atomically(paths.key, key_pem, secret=True)
        write_atomically(paths.cert, cert_pem)
    return paths


def write_atomically(path: Path, data: bytes, secret: bool = False) -> None:
    """Replace ``path`` with ``data`` in one rename, so readers never see half a file.

    ``secret``: mode 0600 (keys).
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if secret:
        tmp.chmod(0o600)
    tmp.replace(path)


def not_after(pem: bytes) -> dt.datetime:
    """When the (first) certificate of ``pem`` expires."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def covers(pem: bytes, hosts: Sequence[str]) -> bool:
    """True when the certificate's subject alternative names include every one of ``hosts``."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    return all(h in names for h in hosts)


def split_bundle(bundle: bytes) -> List[bytes]:
    """The certificates of a PEM bundle, one PEM each."""
    marker = b"-----END CERTIFICATE-----"
    return [part.strip() + b"\n" + marker + b"\n" for part in bundle.split(marker) if part.strip()]
