"""``ittc ca ...``: a certificate authority's daily work, signed through the cluster.

Every object is checked under the cluster's public key before it is written, and written
atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from ittc import ca
from ittc.ca import ThresholdRSAPrivateKey
from ittc.ca.operations import (
    MAX_CERT_DAYS,
    MAX_CRL_DAYS,
    MAX_CRL_NUMBER,
    MAX_OCSP_HOURS,
    Revocation,
)
from ittc.ca.registry import REASONS, Registry
from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command
from ittc.config import ClusterFile
from ittc.errors import ConfigError, ParameterError
from ittc.scheme.encoding import HASHES
from ittc.storage import pki
from ittc.storage.files import write_file_atomically

__all__ = ["CA"]

_DAYS = argtypes.integer(1, MAX_CERT_DAYS)


def _write(args: argparse.Namespace, data: bytes) -> None:
    """Write an output; an existing file is replaced only with ``--force``."""
    try:
        write_file_atomically(args.out.expanduser(), data, mode=0o644, overwrite=args.force)
    except FileExistsError:
        raise ConfigError(f"{args.out}: exists; give --force to replace it") from None


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None


def _serial(text: str) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a serial number (decimal or 0x hex)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("serial numbers are positive")
    return value


def _common(p: argparse.ArgumentParser, *, ca_cert: bool = True) -> None:
    p.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    if ca_cert:
        p.add_argument(
            "--ca-cert",
            required=True,
            type=pathlib.Path,
            help="the CA certificate of the cluster's key (PEM)",
        )
    p.add_argument("--out", required=True, type=pathlib.Path, help="where to write the result")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--hash", default="sha256", choices=sorted(HASHES), help="signature hash (sha256)"
    )
    _state(p)


def _state(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state",
        type=pathlib.Path,
        metavar="DIR",
        help="the CA's record of what it issued and revoked (default: ca-state/ beside the "
        "cluster file)",
    )
    p.add_argument(
        "--no-record",
        action="store_true",
        help="do not read or write the record (CRL and OCSP from the command line alone)",
    )


def _registry(args: argparse.Namespace, ca_cert: x509.Certificate) -> Registry | None:
    if args.no_record:
        return None
    state = args.state or ClusterFile.load(args.cluster).path.parent / "ca-state"
    return Registry(state, ca_cert)


def _setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ca_command", metavar="ACTION", required=True)

    s = sub.add_parser("selfsign", help="the self-signed root certificate of the cluster key")
    _common(s, ca_cert=False)
    s.add_argument("--subject", required=True, help='RFC 4514 name, e.g. "CN=Example Root,O=Ex"')
    s.add_argument("--days", type=_DAYS, default=3650, help=f"validity, 1..{MAX_CERT_DAYS} (3650)")
    s.add_argument("--padding", default="pkcs1v15", choices=PADDINGS, help="(pkcs1v15)")
    s.set_defaults(_ca=_run_selfsign)

    s = sub.add_parser("issue", help="a certificate from a CSR (its signature checked first)")
    _common(s)
    s.add_argument("--csr", required=True, type=pathlib.Path, help="PKCS#10 request (PEM/DER)")
    s.add_argument("--days", type=_DAYS, default=397, help=f"validity, 1..{MAX_CERT_DAYS} (397)")
    s.add_argument(
        "--profile",
        default="server",
        choices=["server", "client", "ca"],
        help="server (serverAuth), client (clientAuth) or ca (an intermediate CA) (server)",
    )
    s.add_argument("--padding", default="pkcs1v15", choices=PADDINGS, help="(pkcs1v15)")
    s.add_argument(
        "--san",
        action="append",
        default=[],
        type=_general_name,
        metavar="TYPE:VALUE",
        help="subject alternative name to add to the CSR's (DNS:, IP:, URI: or email:; repeatable)",
    )
    s.add_argument(
        "--ocsp-url",
        action="append",
        default=[],
        metavar="URL",
        help="OCSP responder in authority information access (repeatable)",
    )
    s.add_argument(
        "--ca-issuers-url",
        action="append",
        default=[],
        metavar="URL",
        help="where the issuer's certificate is published (AIA; repeatable)",
    )
    s.add_argument(
        "--crl-url",
        action="append",
        default=[],
        metavar="URL",
        help="CRL distribution point (repeatable)",
    )
    s.add_argument(
        "--path-length",
        type=argtypes.integer(0, 16),
        default=0,
        help="for --profile ca: how many CAs may follow below it, 0..16 (0)",
    )
    s.set_defaults(_ca=_run_issue)

    s = sub.add_parser("revoke", help="record a certificate as revoked (nothing is signed)")
    s.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    s.add_argument("--ca-cert", required=True, type=pathlib.Path, help="the CA certificate")
    s.add_argument("serial", type=_serial, help="serial number (decimal or 0x hex)")
    s.add_argument(
        "--reason",
        default="unspecified",
        choices=sorted(REASONS),
        help="RFC 5280 reason (unspecified)",
    )
    _state(s)
    s.set_defaults(_ca=_run_revoke, _signs=False)

    s = sub.add_parser("list", help="what the CA issued and revoked, from its record")
    s.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    s.add_argument("--ca-cert", required=True, type=pathlib.Path, help="the CA certificate")
    s.add_argument(
        "--status",
        choices=["all", "good", "revoked", "expired"],
        default="all",
        help="show only these (all)",
    )
    s.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    _state(s)
    s.set_defaults(_ca=_run_list, _signs=False)

    s = sub.add_parser("crl", help="a certificate revocation list (revocations from the record)")
    _common(s)
    s.add_argument(
        "--revoke",
        nargs="*",
        type=_serial,
        default=[],
        metavar="SERIAL",
        help="further serial numbers to list as revoked (decimal or 0x hex)",
    )
    s.add_argument(
        "--days",
        type=argtypes.integer(1, MAX_CRL_DAYS),
        default=7,
        help=f"until the next update, 1..{MAX_CRL_DAYS} (7)",
    )
    s.add_argument(
        "--number",
        type=argtypes.integer(0, MAX_CRL_NUMBER, "2^159-1 (at most 20 octets)"),
        default=None,
        help="CRL number, 0..2^159-1, decimal or 0x hex (default: the next one the record "
        "allows, at least the time)",
    )
    s.add_argument("--padding", default="pkcs1v15", choices=PADDINGS, help="(pkcs1v15)")
    s.set_defaults(_ca=_run_crl)

    s = sub.add_parser("ocsp", help="a signed OCSP response to one OCSP request")
    _common(s)
    s.add_argument("--request", required=True, type=pathlib.Path, help="OCSP request (DER)")
    s.add_argument(
        "--status",
        choices=["good", "revoked", "unknown"],
        help="the answer (default: from the record: good, revoked, or unknown for a serial "
        "the CA did not issue)",
    )
    s.add_argument(
        "--hours",
        type=argtypes.integer(1, MAX_OCSP_HOURS),
        default=24,
        help=f"until the next update, 1..{MAX_OCSP_HOURS} (24)",
    )
    s.set_defaults(_ca=_run_ocsp)


PADDINGS = ["pkcs1v15", "pss"]


def _general_name(text: str) -> x509.GeneralName:
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE:VALUE (DNS:, IP:, URI:, email:)")
    kind = kind.lower()
    try:
        if kind == "dns":
            return x509.DNSName(value)
        if kind == "ip":
            return x509.IPAddress(ipaddress.ip_address(value))
        if kind == "uri":
            return x509.UniformResourceIdentifier(value)
        if kind == "email":
            return x509.RFC822Name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    raise argparse.ArgumentTypeError(f"{text!r}: the type is DNS, IP, URI or email")


def _run(args: argparse.Namespace) -> int:
    if not getattr(args, "_signs", True):
        result: int = args._ca(args, None)
        return result
    with ThresholdRSAPrivateKey.open(args.cluster) as key:
        result = args._ca(args, key)
        return result


def _done(args: argparse.Namespace, what: str) -> int:
    print(f"wrote {what} to {args.out} (signature checked under the cluster key)", file=sys.stderr)
    return EXIT_OK


def _run_selfsign(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    cert = ca.selfsign(key, args.subject, args.days, hash_name=args.hash, pad=args.padding)
    _write(args, cert.public_bytes(serialization.Encoding.PEM))
    registry = _registry(args, cert)
    if registry is not None:
        registry.record_issued(cert, "root")
    return _done(args, f"root certificate {cert.subject.rfc4514_string()}")


def _run_issue(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    data = _read(args.csr, "CSR")
    try:
        csr = (
            x509.load_pem_x509_csr(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_csr(data)
        )
    except ValueError:
        raise ParameterError(f"{args.csr}: not a PEM or DER certificate request") from None
    ca_cert = pki.load_cert(args.ca_cert)
    registry = _registry(args, ca_cert)
    if args.out.exists() and not args.force:  # before the cluster signs anything
        raise ConfigError(f"{args.out}: exists; give --force to replace it")
    cert = ca.issue(
        key,
        ca_cert,
        csr,
        args.days,
        profile=args.profile,
        hash_name=args.hash,
        pad=args.padding,
        san=args.san,
        ocsp_urls=args.ocsp_url,
        ca_issuer_urls=args.ca_issuers_url,
        crl_urls=args.crl_url,
        path_length=args.path_length,
    )
    if registry is not None:
        registry.record_issued(cert, args.profile)
    _write(args, cert.public_bytes(serialization.Encoding.PEM))
    return _done(
        args, f"certificate serial {cert.serial_number:#x} for {cert.subject.rfc4514_string()}"
    )


def _run_revoke(args: argparse.Namespace, key: None) -> int:
    registry = _registry(args, pki.load_cert(args.ca_cert))
    if registry is None:
        raise ConfigError("revoke records the revocation: it cannot run with --no-record")
    entry = registry.revoke(args.serial, args.reason)
    print(
        f"revoked serial {entry.serial:#x} ({entry.subject}): {args.reason}, at "
        f"{entry.revoked_at:%Y-%m-%d %H:%M:%S}Z; the next `ittc ca crl` lists it",
        file=sys.stderr,
    )
    return EXIT_OK


def _run_list(args: argparse.Namespace, key: None) -> int:
    registry = _registry(args, pki.load_cert(args.ca_cert))
    if registry is None:
        raise ConfigError("list reads the record: it cannot run with --no-record")
    now = datetime.datetime.now(datetime.UTC)
    rows = [c for c in registry.certificates() if args.status in ("all", c.status(now))]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "serial": f"{c.serial:#x}",
                        "subject": c.subject,
                        "profile": c.profile,
                        "not_before": c.not_before.isoformat(),
                        "not_after": c.not_after.isoformat(),
                        "status": c.status(now),
                        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                        "reason": c.reason,
                    }
                    for c in rows
                ],
                indent=2,
            )
        )
        return EXIT_OK
    for c in rows:
        status = c.status(now) + (f" ({c.reason})" if c.reason else "")
        print(f"{c.serial:#042x}  {c.not_after:%Y-%m-%d}  {c.profile:<6} {status:<28} {c.subject}")
    print(f"{len(rows)} certificate(s)", file=sys.stderr)
    return EXIT_OK


def _run_crl(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    ca_cert = pki.load_cert(args.ca_cert)
    registry = _registry(args, ca_cert)
    revoked: list[int | Revocation] = []
    number = args.number
    if registry is not None:
        revoked += [
            Revocation(c.serial, c.revoked_at, REASONS.get(c.reason or ""))
            for c in registry.revoked()
            if c.revoked_at is not None
        ]
        if number is None:
            number = registry.next_crl_number()
    listed = {r.serial if isinstance(r, Revocation) else r for r in revoked}
    revoked += [serial for serial in args.revoke if serial not in listed]
    if args.out.exists() and not args.force:
        raise ConfigError(f"{args.out}: exists; give --force to replace it")
    result = ca.crl(
        key,
        ca_cert,
        revoked,
        days=args.days,
        number=number,
        hash_name=args.hash,
        pad=args.padding,
    )
    _write(args, result.public_bytes(serialization.Encoding.PEM))
    return _done(args, f"CRL with {len(revoked)} revoked serial(s)")


def _run_ocsp(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    try:
        request = ocsp.load_der_ocsp_request(_read(args.request, "OCSP request"))
    except ValueError:
        raise ParameterError(f"{args.request}: not a DER OCSP request") from None
    ca_cert = pki.load_cert(args.ca_cert)
    status, revoked_at, reason = args.status, None, None
    registry = _registry(args, ca_cert)
    if status is None:
        if registry is None:
            raise ConfigError("with --no-record, give the answer with --status")
        entry = registry.get(request.serial_number)
        if entry is None:
            status = "unknown"
        elif entry.revoked_at is not None:
            status, revoked_at, reason = (
                "revoked",
                entry.revoked_at,
                REASONS.get(entry.reason or ""),
            )
        else:
            status = "good"
    if args.out.exists() and not args.force:
        raise ConfigError(f"{args.out}: exists; give --force to replace it")
    response = ca.ocsp_response(
        key,
        ca_cert,
        request,
        status,
        hours=args.hours,
        revoked_at=revoked_at,
        reason=reason,
        hash_name=args.hash,
    )
    _write(args, response.public_bytes(serialization.Encoding.DER))
    return _done(args, f"OCSP response ({status}) for serial {request.serial_number:#x}")


CA = Command(
    "ca",
    "certificate authority work signed by the cluster (selfsign, issue, revoke, list, crl, ocsp)",
    _setup,
    _run,
)
