"""The node's TLS identity: its certificate and key, and the CAs its clients come from.

:func:`load_identity` reads and checks the three files the config names (the key's
mode, that the key is the certificate's, that one of the CAs issued the certificate and
that both are valid now) and returns them as :class:`TlsIdentity`; the daemon serves them
through :class:`~ittc.wire.tls.ReloadableServerCredentials`, so a renewed certificate or
a new CA bundle is loaded the same way at start and on SIGHUP (:mod:`ittc_node.reload`).

``ca.pem`` may hold several CA certificates: during a rotation of the cluster CA it holds
the old one and the new one, so clients of either are accepted. A CA of the bundle that
did not issue the node's certificate and has expired (the old CA, late in a rotation) is
only warned about.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ittc.config import NodeConfig
from ittc.errors import ConfigError
from ittc.storage import pki
from ittc_node.certwatch import CertificateError, check_certificate

__all__ = ["TlsIdentity", "load_identity"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class TlsIdentity:
    """A node's TLS material, checked, with the bytes gRPC is given."""

    cert_path: pathlib.Path
    ca_path: pathlib.Path
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    cert: x509.Certificate
    cas: tuple[x509.Certificate, ...]
    #: The CA of the bundle that issued :attr:`cert`.
    issuer: x509.Certificate

    def __repr__(self) -> str:  # never the key
        return f"TlsIdentity({self.cert_path}, serial {self.cert.serial_number:#x})"

    @property
    def watched(self) -> list[tuple[pathlib.Path, x509.Certificate]]:
        """What must stay valid for clients to connect: the node's certificate and its CA."""
        return [(self.cert_path, self.cert), (self.ca_path, self.issuer)]

    def describe(self) -> dict[str, Any]:
        """For the audit log and the node's log: which certificate and which CAs (public)."""
        return {
            "cert_serial": f"{self.cert.serial_number:x}",
            "cert_not_after": self.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cert_sha256": _fingerprint(self.cert),
            "cas": [
                {"subject": ca.subject.rfc4514_string(), "sha256": _fingerprint(ca)}
                for ca in self.cas
            ],
        }


def load_identity(config: NodeConfig, now: float) -> tuple[TlsIdentity, list[str]]:
    """The node's TLS identity from the files ``config`` names, and warnings to log (a
    certificate that expires within 30 days; a CA of the bundle that is not valid but
    issued nothing of this node's).

    Raises :class:`~ittc.errors.ConfigError` (a file missing, unreadable or readable by
    others, a key that is not the certificate's, a certificate no CA of the bundle
    issued) or :class:`~ittc_node.certwatch.CertificateError` (the certificate or its CA
    not valid at ``now``), each naming the file.
    """
    key = pki.load_private_key(config.tls_key)  # refuses a key others can read
    key_pem = _read(config.tls_key)
    cert_pem = _read(config.tls_cert)
    ca_pem = _read(config.tls_ca)
    cert = pki.load_cert(config.tls_cert)
    cas = tuple(pki.load_certs(config.tls_ca))
    if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise ConfigError(f"{config.tls_cert}: is not the certificate of the key {config.tls_key}")
    issuer = pki.issued_by(cert, cas)
    if issuer is None:
        names = "', '".join(ca.subject.rfc4514_string() for ca in cas)
        raise ConfigError(
            f"{config.tls_cert}: was not issued by the CA in {config.tls_ca} ('{names}'); "
            "combiners would refuse it"
        )
    identity = TlsIdentity(
        config.tls_cert, config.tls_ca, key_pem, cert_pem, ca_pem, cert, cas, issuer
    )
    warnings = []
    for path, certificate in identity.watched:
        warning = check_certificate(path, certificate, now)
        if warning is not None:
            warnings.append(warning)
    warnings += _other_cas(config.tls_ca, cas, issuer, now)
    return identity, warnings


def _other_cas(
    path: pathlib.Path, cas: Sequence[x509.Certificate], issuer: x509.Certificate, now: float
) -> list[str]:
    warnings = []
    for ca in cas:
        if ca is issuer:
            continue
        what = f"{path} (CA '{ca.subject.rfc4514_string()}')"
        try:
            warning = check_certificate(pathlib.Path(what), ca, now)
        except CertificateError as exc:
            warning = f"{exc}; it issued nothing of this node's: drop it from the bundle"
        if warning is not None:
            warnings.append(warning)
    return warnings
