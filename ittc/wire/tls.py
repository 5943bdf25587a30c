"""Mutual TLS on the wire: credentials for nodes and combiners, and who the peer is.

The certificates themselves are made and stored by :mod:`ittc.storage.pki`; this module
turns them into gRPC credentials and reads the authenticated client's identity from
gRPC's auth context, the only reliable source (never a field in a message).
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from ittc.errors import ConfigError

__all__ = ["channel_credentials", "channel_options", "peer_identity", "server_credentials"]

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
    """A combiner's TLS: trust only the cluster CA, present the client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_path),
        private_key=_read(key_path),
        certificate_chain=_read(cert_path),
    )


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
