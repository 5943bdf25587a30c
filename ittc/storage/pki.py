"""The cluster's own small PKI, made at the key ceremony, for mutual TLS.

One CA (ECDSA P-256, path length 0) issues a server certificate to every node and a
client certificate to every combiner identity. Nodes accept only clients whose
certificate chains to this CA, and the combiner checks each node's certificate against
the node's name (``ittc-node-<i>``), not its address. A client's identity is the common
name of its certificate, read from gRPC's auth context by
:func:`ittc.wire.tls.peer_identity` and from nowhere else (never from a field in a message).

The CA key is the one thing here that can mint identities: the ceremony writes it apart
from the node folders and tells the operator to move it offline.

During a CA rotation a ``ca.pem`` holds two CA certificates (the old and the new: a
bundle); :func:`load_certs` reads them all and :func:`issued_by` finds which one issued a
certificate. :func:`recertify` issues a new certificate for a key that already has one
(renewal, or moving an identity to a new CA) without the private key leaving its host.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ittc.errors import CertificateNotValid, ConfigError
from ittc.storage.files import write_file_atomically

__all__ = [
    "EXPIRY_WARNING",
    "CertificateNotValid",
    "expiry_warning",
    "issued_by",
    "key_usage",
    "issue_client_cert",
    "issue_server_cert",
    "load_cert",
    "load_certs",
    "load_private_key",
    "make_ca",
    "recertify",
    "write_cert",
    "write_certs",
    "write_private_key",
]

PathLike = str | os.PathLike[str]

#: Certificates start this long before "now", so a node whose clock lags still accepts them.
_BACKDATE = datetime.timedelta(minutes=5)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise ValueError("certificate lifetime must be at least one day")


_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension with exactly the named usages (``"key_cert_sign"``...)."""
    unknown = set(allowed) - set(_USAGES)
    if unknown:
        raise ValueError(f"unknown key usages {sorted(unknown)}")
    return x509.KeyUsage(**{name: name in allowed for name in _USAGES})


def make_ca(
    common_name: str = "ittc cluster CA", days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    _check_days(days)
    key = _new_key()
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage("key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san_entries(name: str, hosts: Sequence[str]) -> list[x509.GeneralName]:
    """DNS entries for names, IPAddress entries for literal addresses; no duplicates."""
    entries: list[x509.GeneralName] = []
    for host in [name, "localhost", *hosts]:
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):  # "[::1]" as in host:port
            host = host[1:-1]
        if not host:
            raise ValueError("empty host name in certificate request")
        entry: x509.GeneralName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host.lower())
        if entry not in entries:
            entries.append(entry)
    return entries


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    san: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    _check_days(days)
    key = _new_key()
    return _build(ca_cert, ca_key, name, key.public_key(), san, [usage], days), key


def _build(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    public_key: ec.EllipticCurvePublicKey,
    san: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
) -> x509.Certificate:
    if not name or "\n" in name:
        raise ValueError("certificate name must be a non-empty single line")
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage("digital_signature"),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    hosts: Sequence[str],
    days: int = 825,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A node's certificate: CN and SAN carry its name (checked by the combiner), plus
    ``localhost`` and every host it is reached at; good for serverAuth only."""
    return _issue(
        ca_cert, ca_key, name, _san_entries(name, hosts), ExtendedKeyUsageOID.SERVER_AUTH, days
    )


def recertify(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int = 825,
) -> x509.Certificate:
    """A new certificate for ``cert``'s key, name, alternative names and extended key
    usage, issued by ``ca_cert`` (the same CA or a new one) for ``days`` from now.

    Only public inputs: the private key of ``cert`` stays where it is. ``cert`` must be
    one of this PKI's end-entity certificates (a node's or a client's)."""
    _check_days(days)
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or constraints.ca:
        raise ConfigError(
            f"'{cert.subject.rfc4514_string()}' is a CA certificate, not a node's or a client's"
        )
    usage = _extension(cert, x509.ExtendedKeyUsage)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if usage is None or len(names) != 1 or not isinstance(names[0].value, str):
        raise ConfigError(
            f"'{cert.subject.rfc4514_string()}' is not a node or client certificate of an "
            "ittc cluster (one common name and an extended key usage)"
        )
    san = _extension(cert, x509.SubjectAlternativeName)
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"'{cert.subject.rfc4514_string()}' does not hold an EC key")
    return _build(ca_cert, ca_key, names[0].value, public_key, list(san or []), list(usage), days)


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def issue_client_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, days: int = 825
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A combiner identity: the CN is the name nodes list in ``allowed_clients``."""
    return _issue(
        ca_cert, ca_key, name, [x509.DNSName(name.lower())], ExtendedKeyUsageOID.CLIENT_AUTH, days
    )


# -- files -----------------------------------------------------------------------------


def write_cert(path: PathLike, cert: x509.Certificate, *, overwrite: bool = False) -> None:
    """Write a certificate as PEM (mode 0644: certificates are public)."""
    write_file_atomically(
        path,
        cert.public_bytes(serialization.Encoding.PEM),
        mode=0o644,
        overwrite=overwrite,
        what="certificate",
    )


def write_private_key(
    path: PathLike, key: ec.EllipticCurvePrivateKey, *, overwrite: bool = False
) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, mode 0600 from the moment it exists."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_file_atomically(path, data, mode=0o600, overwrite=overwrite, what="private key")


def write_certs(
    path: PathLike, certs: Sequence[x509.Certificate], *, overwrite: bool = False
) -> None:
    """Write certificates as one PEM bundle (a CA file that trusts several CAs)."""
    write_file_atomically(
        path,
        b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs),
        mode=0o644,
        overwrite=overwrite,
        what="certificate",
    )


def load_cert(path: PathLike) -> x509.Certificate:
    """Read a certificate (PEM or DER); a bad file raises :class:`ConfigError` naming it."""
    try:
        data = pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a certificate") from None
    for load in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        try:
            return load(data)
        except ValueError:
            continue
    raise ConfigError(f"{path}: not a certificate (PEM or DER)")


def load_certs(path: PathLike) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA bundle: one or more), in order."""
    try:
        data = pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate (or bundle of them)") from None
    return certs


def issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The CA of ``cas`` whose key signed ``cert``, or None."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


# -- validity --------------------------------------------------------------------------

#: Nodes and combiners warn this long before a certificate expires (daily from then on).
EXPIRY_WARNING = datetime.timedelta(days=30)


def _day(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def expiry_warning(
    what: str,
    cert: x509.Certificate,
    now: float,
    *,
    advice: str = "issue a new one from the cluster CA",
    within: datetime.timedelta = EXPIRY_WARNING,
) -> str | None:
    """None if ``cert`` is valid at ``now`` (seconds since the epoch) for longer than
    ``within``; a warning naming ``what`` if it expires sooner. Raises
    :class:`CertificateNotValid` if it is not valid at ``now``."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if moment < cert.not_valid_before_utc:
        raise CertificateNotValid(
            f"{what}: the certificate is not valid before {_day(cert.not_valid_before_utc)} "
            f"(this host's clock says {_day(moment)}): check the clock, or issue a "
            "certificate valid now"
        )
    if moment > cert.not_valid_after_utc:
        raise CertificateNotValid(
            f"{what}: the certificate expired on {_day(cert.not_valid_after_utc)}: {advice}"
        )
    left = cert.not_valid_after_utc - moment
    if left <= within:
        return (
            f"{what}: the certificate expires on {_day(cert.not_valid_after_utc)} (in "
            f"{left.days} days {left.seconds // 3600} hours): {advice} before then"
        )
    return None


def load_private_key(path: PathLike) -> ec.EllipticCurvePrivateKey:
    """Read a key written by :func:`write_private_key`, refusing one others can read."""
    p = pathlib.Path(path)
    try:
        if p.stat().st_mode & 0o077:
            raise ConfigError(f"{p}: private key is accessible to other users (chmod 600)")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{p}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{p}: not an EC private key")
    return key
