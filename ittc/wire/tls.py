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
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ittc.errors import ClientIdentityError, ConfigError

__all__ = [
    "channel_credentials",
    "channel_options",
    "client_credentials",
    "peer_identity",
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
    ca = _pem_cert(ca_pem, ca_path, "cluster CA certificate")
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
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ClientIdentityError(
            f"client certificate {os.fspath(cert_path)} was not issued by the cluster CA in "
            f"{os.fspath(ca_path)} (its issuer is '{cert.issuer.rfc4514_string()}', the "
            f"cluster CA is '{ca.subject.rfc4514_string()}'): a certificate of another "
            "cluster?"
        ) from None
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
