"""Mutual TLS on the wire: credentials for nodes and combiners, and who the peer is.

The certificates themselves are made and stored by :mod:`ittc.storage.pki`; this module
turns them into gRPC credentials and reads the authenticated client's identity from
gRPC's auth context, the only reliable source (never a field in a message).
"""

from __future__ import annotations

import datetime
import functools
import os
import pathlib
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ittc.config import parse_address
from ittc.errors import ClientIdentityError, ConfigError

__all__ = [
    "ReloadableServerCredentials",
    "channel_credentials",
    "channel_options",
    "client_credentials",
    "peer_identity",
    "server_certificate",
    "server_credentials",
]

PathLike = str | os.PathLike[str]


def _read(path: PathLike) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None


# -- gRPC ------------------------------------------------------------------------------


def server_credentials(
    cert_path: PathLike, key_path: PathLike, ca_path: PathLike
) -> grpc.ServerCredentials:
    """A node's TLS: its own certificate, and only clients with a certificate from the CA."""
    return grpc.ssl_server_credentials(
        [(_read(key_path), _read(cert_path))],
        root_certificates=_read(ca_path),
        require_client_auth=True,
    )


class ReloadableServerCredentials:
    """A node's TLS that can change while it serves: gRPC asks for the current
    certificate, key and client CAs at every new handshake (``dynamic_ssl_server_credentials``),
    and :meth:`replace` sets what the next handshakes get. Connections already open keep
    theirs. Clients always need a certificate from one of the CAs in ``ca_pem`` (a bundle
    during a CA rotation)."""

    def __init__(self, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.credentials: grpc.ServerCredentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(key_pem, cert_pem, ca_pem),
            self._fetch,
            require_client_authentication=True,
        )

    @staticmethod
    def _configuration(
        key_pem: bytes, cert_pem: bytes, ca_pem: bytes
    ) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], ca_pem)

    def replace(self, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        """Serve this identity and trust these CAs from the next handshake on."""
        configuration = self._configuration(key_pem, cert_pem, ca_pem)
        with self._lock:
            self._pending = configuration

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC (from its own threads) before each handshake; None: no change.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


def channel_credentials(
    cert_path: PathLike, key_path: PathLike, ca_path: PathLike
) -> grpc.ChannelCredentials:
    """A combiner's TLS: trust only the cluster CA, present the client certificate.

    Nothing is checked here (tests use it to present identities nodes must refuse); the
    combiner uses :func:`client_credentials`, which checks the identity first."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_path),
        private_key=_read(key_path),
        certificate_chain=_read(cert_path),
    )


def client_credentials(
    cert_path: PathLike, key_path: PathLike, ca_path: PathLike, *, now: float
) -> grpc.ChannelCredentials:
    """:func:`channel_credentials` for an identity checked first, so that a problem of
    the client's own is one clear :class:`ClientIdentityError` before any node is dialled
    (gRPC would only report ``Socket closed`` or a failed handshake, once per node).

    Checks, with ``cryptography``: both files are readable PEM, the key is unencrypted
    and is the certificate's, the certificate is valid at ``now`` (seconds since the
    epoch, the caller's clock), was issued by the CA in ``ca_path`` and is meant for
    client authentication. Builds the credentials from the bytes it checked.
    """
    cert_pem = _read_identity(cert_path, "client certificate")
    key_pem = _read_identity(key_path, "client key")
    ca_pem = _read_identity(ca_path, "cluster CA certificate")
    cert = _pem_cert(cert_pem, cert_path, "client certificate")
    cas = _pem_certs(ca_pem, ca_path, "cluster CA certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ClientIdentityError(
            f"client key {os.fspath(key_path)}: encrypted; the client key must be stored "
            "unencrypted (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        label = _pem_label(key_pem)
        held = f"holds a PEM {label!r} block" if label else "holds no PEM data"
        raise ClientIdentityError(
            f"client key {os.fspath(key_path)}: not a private key ({held})"
        ) from None
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise ClientIdentityError(
            f"client key {os.fspath(key_path)} is not the key of the client certificate "
            f"{os.fspath(cert_path)} (files from two different identities?)"
        )
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if moment < cert.not_valid_before_utc:
        raise ClientIdentityError(
            f"client certificate {os.fspath(cert_path)} is not valid before "
            f"{_when(cert.not_valid_before_utc)} (this machine's clock says {_when(moment)})"
        )
    if moment > cert.not_valid_after_utc:
        raise ClientIdentityError(
            f"client certificate {os.fspath(cert_path)} expired on "
            f"{_when(cert.not_valid_after_utc)} (now {_when(moment)}): issue a new one "
            "from the cluster CA"
        )
    if not any(_issued_by(cert, ca) for ca in cas):
        trusted = "', '".join(ca.subject.rfc4514_string() for ca in cas)
        raise ClientIdentityError(
            f"client certificate {os.fspath(cert_path)} was not issued by the cluster CA in "
            f"{os.fspath(ca_path)} (its issuer is '{cert.issuer.rfc4514_string()}', the "
            f"cluster CA is '{trusted}'): a certificate of another cluster?"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        names = ", ".join(getattr(u, "_name", u.dotted_string) for u in usage)
        raise ClientIdentityError(
            f"client certificate {os.fspath(cert_path)} is not for client authentication "
            f"(extended key usage: {names}): a node's certificate?"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _pem_label(data: bytes) -> str | None:
    start = data.find(b"-----BEGIN ")
    end = data.find(b"-----", start + 11) if start >= 0 else -1
    return data[start + 11 : end].decode("ascii", "replace") if end > 0 else None


def _read_identity(path: PathLike, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        raise ClientIdentityError(f"{what} {os.fspath(path)}: no such file") from None
    except OSError as exc:
        raise ClientIdentityError(
            f"{what} {os.fspath(path)}: cannot be read: {exc.strerror or exc}"
        ) from None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _pem_certs(data: bytes, path: PathLike, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA bundle during a CA rotation)."""
    _pem_cert(data, path, what)  # the first one, with a clear error if there is none
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ClientIdentityError(
            f"{what} {os.fspath(path)}: a certificate after the first one is damaged"
        ) from None


def _pem_cert(data: bytes, path: PathLike, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        label = _pem_label(data)
        if label is None:
            try:
                x509.load_der_x509_certificate(data)
                held = "is in DER; gRPC needs PEM (openssl x509 -inform der -in FILE)"
            except ValueError:
                held = "holds no PEM data"
        else:
            held = f"holds a PEM {label!r} block"
        raise ClientIdentityError(f"{what} {os.fspath(path)}: not a certificate ({held})") from None


def channel_options(tls_name: str, max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options for a channel to one node: check its certificate against ``tls_name``
    (the address it is dialled at may be an IP or another name) and bound message sizes."""
    if not tls_name:
        raise ValueError("tls_name must not be empty")
    if max_message_bytes < 1:
        raise ValueError("max_message_bytes must be positive")
    return [
        ("grpc.ssl_target_name_override", tls_name),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def peer_identity(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """The authenticated client's name (its certificate's CN), or None.

    Pass ``context.auth_context()``. None when the connection is not TLS, the peer
    presented no certificate, or the certificate has no single UTF-8 common name. The
    name is read from the certificate itself (gRPC's ``x509_common_name`` shows only the
    first of several). With :func:`server_credentials` the handshake has already checked
    the chain to the CA.
    """
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    pems = list(auth_context.get("x509_pem_cert", ()))
    if len(pems) != 1:
        return None
    return _single_common_name(bytes(pems[0]))


@functools.lru_cache(maxsize=1024)
def _single_common_name(pem: bytes) -> str | None:
    """The one common name of a certificate's subject, or None (cached: a client
    presents the same certificate on every call)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    name = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return name or None


def server_certificate(
    address: str,
    tls_name: str,
    *,
    ca_path: PathLike,
    cert_path: PathLike,
    key_path: PathLike,
    timeout: float,
) -> x509.Certificate:
    """The certificate the node at ``address`` presents, by a TLS handshake of our own
    (gRPC does not show a client the server's certificate): checked against the CA in
    ``ca_path`` and ``tls_name``, presenting the client identity ``cert_path``/``key_path``
    as the node requires. Blocking; raises ``OSError`` (``ssl.SSLError`` included) when
    the node cannot be reached or the handshake fails."""
    host, port = parse_address(address)
    host = host[1:-1] if host.startswith("[") else host
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=os.fspath(ca_path))
    context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=tls_name) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    if der is None:  # pragma: no cover - a verified handshake always has one
        raise ssl.SSLError("the node presented no certificate")
    return x509.load_der_x509_certificate(der)
