"""A certificate authority's daily work, signed by the cluster.

Each function takes any ``rsa.RSAPrivateKey`` (in practice a
:class:`~ittc.ca.key.ThresholdRSAPrivateKey`), builds the object with ``cryptography``'s
builders, and checks the result's signature under the CA's public key once more before
returning it: nothing unverified is ever written.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ittc.errors import CAError, InvalidSignature, ParameterError
from ittc.scheme.encoding import HASHES
from ittc.storage.pki import key_usage

__all__ = [
    "MAX_CERT_DAYS",
    "MAX_CRL_DAYS",
    "MAX_CRL_NUMBER",
    "MAX_OCSP_HOURS",
    "CAError",
    "Padding",
    "Revocation",
    "crl",
    "issue",
    "ocsp_response",
    "selfsign",
    "signing_padding",
]

#: Longest validity of a certificate, of a CRL and of an OCSP response this CA makes.
MAX_CERT_DAYS = 36500
MAX_CRL_DAYS = 3650
MAX_OCSP_HOURS = 24 * 30
#: A CRL number is a non-negative integer of at most 20 octets (RFC 5280, 5.2.3).
MAX_CRL_NUMBER = 2**159 - 1


@dataclass(frozen=True)
class Revocation:
    """One entry of a CRL: the serial, when it was revoked, and why (if said)."""

    serial: int
    revoked_at: datetime.datetime
    reason: x509.ReasonFlags | None = None


Padding = Literal["pkcs1v15", "pss"]
Profile = Literal["server", "client", "ca"]
_Hash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
_BACKDATE = datetime.timedelta(minutes=5)


def _hash(name: str) -> _Hash:
    if name not in HASHES:
        raise ParameterError(f"hash must be one of {sorted(HASHES)}, not {name!r}")
    return HASHES[name].algorithm()


def signing_padding(
    kind: Padding, algorithm: hashes.HashAlgorithm
) -> padding.PSS | padding.PKCS1v15:
    if kind == "pkcs1v15":
        return padding.PKCS1v15()
    if kind == "pss":
        return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH)
    raise ParameterError("padding must be pkcs1v15 or pss")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _serial() -> int:
    return secrets.randbits(159) | 1  # positive, at most 20 octets, never zero


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    if not 1 <= days <= MAX_CERT_DAYS:
        raise ParameterError(f"validity must be 1..{MAX_CERT_DAYS} days")
    now = _now()
    return now - _BACKDATE, now + datetime.timedelta(days=days)


def _check_issued(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (CryptoInvalidSignature, ValueError, TypeError) as exc:
        raise InvalidSignature(f"the new certificate does not verify under the CA: {exc}") from None


def _ca_key_matches(key: rsa.RSAPrivateKey, ca_cert: x509.Certificate) -> None:
    if ca_cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise CAError("the CA certificate is not for the cluster's key")


def selfsign(
    key: rsa.RSAPrivateKey,
    subject: str,
    days: int,
    *,
    hash_name: str = "sha256",
    pad: Padding = "pkcs1v15",
    path_length: int | None = None,
) -> x509.Certificate:
    """The self-signed root certificate of ``key``."""
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError as exc:
        raise ParameterError(f"subject {subject!r} is not an RFC 4514 name: {exc}") from None
    if not list(name):
        raise ParameterError("the subject must not be empty")
    not_before, not_after = _validity(days)
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    algorithm = _hash(hash_name)
    cert = builder.sign(key, algorithm, rsa_padding=signing_padding(pad, algorithm))
    _check_issued(cert, cert)
    return cert


def _key_usage_for(public: object, profile: Profile) -> x509.KeyUsage:
    ca = profile == "ca"
    encipher = isinstance(public, rsa.RSAPublicKey) and not ca
    usages = ["digital_signature"] + (["key_encipherment"] if encipher else [])
    return key_usage(*usages, *(["key_cert_sign", "crl_sign"] if ca else []))


def issue(
    key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    days: int,
    *,
    profile: Profile = "server",
    hash_name: str = "sha256",
    pad: Padding = "pkcs1v15",
    san: Sequence[x509.GeneralName] = (),
    ocsp_urls: Sequence[str] = (),
    ca_issuer_urls: Sequence[str] = (),
    crl_urls: Sequence[str] = (),
    path_length: int | None = 0,
) -> x509.Certificate:
    """A certificate for ``csr``, whose own signature is checked first.

    Extensions: basic constraints (``path_length`` for the ``ca`` profile; ``None`` for
    no limit), key usage, extended key usage (by ``profile``), subject and authority key
    identifiers, subject alternative names (the CSR's plus ``san``), and where given the
    authority information access (``ocsp_urls``, ``ca_issuer_urls``) and CRL distribution
    points (``crl_urls``).
    """
    if not csr.is_signature_valid:
        raise CAError("the CSR's signature does not verify: refusing to issue")
    _ca_key_matches(key, ca_cert)
    public = csr.public_key()
    if not isinstance(
        public,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise CAError("the CSR's key type is not supported")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise CAError("the CSR's RSA key is shorter than 2048 bits")
    if profile not in ("server", "client", "ca"):
        raise ParameterError("profile must be server, client or ca")
    not_before, not_after = _validity(days)
    ca_ski = (
        ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if _has(ca_cert, x509.SubjectKeyIdentifier)
        else x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(
            x509.BasicConstraints(
                ca=profile == "ca", path_length=path_length if profile == "ca" else None
            ),
            critical=True,
        )
        .add_extension(_key_usage_for(public, profile), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if profile != "ca":
        usage = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if profile == "server"
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if path_length is not None and not 0 <= path_length <= 16:
        raise ParameterError("path length must be in 0..16")
    names: list[x509.GeneralName] = []
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = list(requested.value)
    except x509.ExtensionNotFound:
        pass
    names += [name for name in san if name not in names]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    elif profile == "server":
        raise CAError("a server certificate needs a subject alternative name (in the CSR or --san)")
    builder = _add_urls(builder, ocsp_urls, ca_issuer_urls, crl_urls)
    algorithm = _hash(hash_name)
    cert = builder.sign(key, algorithm, rsa_padding=signing_padding(pad, algorithm))
    _check_issued(cert, ca_cert)
    return cert


def _add_urls(
    builder: x509.CertificateBuilder,
    ocsp_urls: Sequence[str],
    ca_issuer_urls: Sequence[str],
    crl_urls: Sequence[str],
) -> x509.CertificateBuilder:
    """Authority information access and CRL distribution points, if any URL is given."""
    for url in (*ocsp_urls, *ca_issuer_urls, *crl_urls):
        if not url.startswith(("http://", "https://", "ldap://")) or any(c.isspace() for c in url):
            raise ParameterError(f"{url!r} is not an http(s) or ldap URL")
    access = [
        x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u)
        )
        for u in ocsp_urls
    ] + [
        x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(u)
        )
        for u in ca_issuer_urls
    ]
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if crl_urls:
        points = [
            x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, None, None)
            for u in crl_urls
        ]
        builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    return builder


def _has(cert: x509.Certificate, ext: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(ext)
        return True
    except x509.ExtensionNotFound:
        return False


def crl(
    key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    revoked: Sequence[int | Revocation],
    *,
    days: int = 7,
    number: int | None = None,
    hash_name: str = "sha256",
    pad: Padding = "pkcs1v15",
    reason: x509.ReasonFlags | None = None,
) -> x509.CertificateRevocationList:
    """A CRL listing ``revoked`` (serial numbers, or :class:`Revocation` entries with their
    date and reason), valid for ``days``. ``reason`` applies to bare serial numbers."""
    _ca_key_matches(key, ca_cert)
    now = _now()
    entries = [
        r if isinstance(r, Revocation) else Revocation(r, now - _BACKDATE, reason) for r in revoked
    ]
    if len({e.serial for e in entries}) != len(entries):
        raise ParameterError("a serial number is listed twice")
    if not 1 <= days <= MAX_CRL_DAYS:
        raise ParameterError(f"CRL validity must be 1..{MAX_CRL_DAYS} days")
    if number is not None and not 0 <= number <= MAX_CRL_NUMBER:
        raise ParameterError("a CRL number is an integer in 0..2^159-1 (at most 20 octets)")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + datetime.timedelta(days=days))
        .add_extension(
            x509.CRLNumber(number if number is not None else int(now.timestamp())), critical=False
        )
    )
    if _has(ca_cert, x509.SubjectKeyIdentifier):
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    for revocation in entries:
        if not 0 < revocation.serial < 1 << 160:
            raise ParameterError(f"serial {revocation.serial} out of range")
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revocation.serial)
            .revocation_date(revocation.revoked_at)
        )
        if revocation.reason is not None:
            entry = entry.add_extension(x509.CRLReason(revocation.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    algorithm = _hash(hash_name)
    result = builder.sign(key, algorithm, rsa_padding=signing_padding(pad, algorithm))
    if not result.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise InvalidSignature("the new CRL does not verify under the CA")
    return result


def ocsp_response(
    key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    request: ocsp.OCSPRequest,
    status: Literal["good", "revoked", "unknown"],
    *,
    hours: int = 24,
    revoked_at: datetime.datetime | None = None,
    reason: x509.ReasonFlags | None = None,
    hash_name: str = "sha256",
    pad: Padding = "pkcs1v15",
) -> ocsp.OCSPResponse:
    """A signed OCSP response for the one certificate ``request`` asks about.

    The CA signs its own responses (no delegated responder), with the responder named by
    its key hash. The request's issuer hashes must match ``ca_cert``.
    """
    _ca_key_matches(key, ca_cert)
    algorithm_for_id = request.hash_algorithm
    expected = _issuer_hashes(ca_cert, algorithm_for_id)
    if (request.issuer_name_hash, request.issuer_key_hash) != expected:
        raise CAError("the OCSP request is about a certificate of another issuer")
    now = _now()
    cert_status = {
        "good": ocsp.OCSPCertStatus.GOOD,
        "revoked": ocsp.OCSPCertStatus.REVOKED,
        "unknown": ocsp.OCSPCertStatus.UNKNOWN,
    }.get(status)
    if cert_status is None:
        raise ParameterError("status must be good, revoked or unknown")
    if not 1 <= hours <= MAX_OCSP_HOURS:
        raise ParameterError(f"OCSP validity must be 1..{MAX_OCSP_HOURS} hours")
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=algorithm_for_id,
            cert_status=cert_status,
            this_update=now - _BACKDATE,
            next_update=now + datetime.timedelta(hours=hours),
            revocation_time=(revoked_at or now - _BACKDATE) if status == "revoked" else None,
            revocation_reason=reason if status == "revoked" else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
    )
    for ext in request.extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            builder = builder.add_extension(ext.value, critical=False)
    algorithm = _hash(hash_name)
    if pad != "pkcs1v15":
        raise ParameterError("cryptography signs OCSP responses with PKCS#1 v1.5 only")
    response = builder.sign(key, algorithm)
    try:
        key.public_key().verify(
            response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
        )
    except CryptoInvalidSignature:
        raise InvalidSignature("the new OCSP response does not verify under the CA") from None
    return response


def _issuer_hashes(
    ca_cert: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    """The (issuer name hash, issuer key hash) of an OCSP CertID for ``ca_cert`` (RFC 6960)."""
    name = hashes.Hash(algorithm)
    name.update(ca_cert.subject.public_bytes())
    key = hashes.Hash(algorithm)
    key.update(ca_cert.public_key().public_bytes(Encoding.DER, PublicFormat.PKCS1))
    return name.finalize(), key.finalize()
