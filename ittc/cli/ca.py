"""``ittc ca ...``: a certificate authority's daily work, signed through the cluster.

Every object is checked under the cluster's public key before it is written, and written
atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from ittc import ca
from ittc.ca import ThresholdRSAPrivateKey
from ittc.ca.operations import MAX_CERT_DAYS, MAX_CRL_DAYS, MAX_CRL_NUMBER, MAX_OCSP_HOURS
from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command
from ittc.errors import ConfigError, ParameterError
from ittc.scheme.encoding import HASHES
from ittc.storage.files import write_file_atomically

__all__ = ["CA"]

_DAYS = argtypes.integer(1, MAX_CERT_DAYS)


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    write_file_atomically(path.expanduser(), data, mode=0o644, overwrite=True)


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None


def _load_cert(path: pathlib.Path) -> x509.Certificate:
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_der_x509_certificate(data)
        except ValueError:
            raise ConfigError(f"{path}: not a PEM or DER certificate") from None


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
    p.add_argument("--hash", default="sha256", choices=sorted(HASHES))


def _setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ca_command", metavar="ACTION", required=True)

    s = sub.add_parser("selfsign", help="the self-signed root certificate of the cluster key")
    _common(s, ca_cert=False)
    s.add_argument("--subject", required=True, help='RFC 4514 name, e.g. "CN=Example Root,O=Ex"')
    s.add_argument("--days", type=_DAYS, default=3650, help=f"validity, 1..{MAX_CERT_DAYS} (3650)")
    s.add_argument("--padding", default="pkcs1v15", choices=["pkcs1v15", "pss"])
    s.set_defaults(_ca=_run_selfsign)

    s = sub.add_parser("issue", help="a certificate from a CSR (its signature checked first)")
    _common(s)
    s.add_argument("--csr", required=True, type=pathlib.Path, help="PKCS#10 request (PEM/DER)")
    s.add_argument("--days", type=_DAYS, default=397, help=f"validity, 1..{MAX_CERT_DAYS} (397)")
    s.add_argument("--profile", default="server", choices=["server", "client", "ca"])
    s.add_argument("--padding", default="pkcs1v15", choices=["pkcs1v15", "pss"])
    s.set_defaults(_ca=_run_issue)

    s = sub.add_parser("crl", help="a certificate revocation list")
    _common(s)
    s.add_argument(
        "--revoke",
        nargs="*",
        type=_serial,
        default=[],
        metavar="SERIAL",
        help="serial numbers to list as revoked (decimal or 0x hex)",
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
        help="CRL number, 0..2^159-1, decimal or 0x hex (default: the time)",
    )
    s.add_argument("--padding", default="pkcs1v15", choices=["pkcs1v15", "pss"])
    s.set_defaults(_ca=_run_crl)

    s = sub.add_parser("ocsp", help="a signed OCSP response to one OCSP request")
    _common(s)
    s.add_argument("--request", required=True, type=pathlib.Path, help="OCSP request (DER)")
    s.add_argument("--status", required=True, choices=["good", "revoked", "unknown"])
    s.add_argument(
        "--hours",
        type=argtypes.integer(1, MAX_OCSP_HOURS),
        default=24,
        help=f"until the next update, 1..{MAX_OCSP_HOURS} (24)",
    )
    s.set_defaults(_ca=_run_ocsp)


def _run(args: argparse.Namespace) -> int:
    with ThresholdRSAPrivateKey.open(args.cluster) as key:
        result: int = args._ca(args, key)
        return result


def _done(args: argparse.Namespace, what: str) -> int:
    print(f"wrote {what} to {args.out} (signature checked under the cluster key)", file=sys.stderr)
    return EXIT_OK


def _run_selfsign(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    cert = ca.selfsign(key, args.subject, args.days, hash_name=args.hash, pad=args.padding)
    _write_atomically(args.out, cert.public_bytes(serialization.Encoding.PEM))
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
    cert = ca.issue(
        key,
        _load_cert(args.ca_cert),
        csr,
        args.days,
        profile=args.profile,
        hash_name=args.hash,
        pad=args.padding,
    )
    _write_atomically(args.out, cert.public_bytes(serialization.Encoding.PEM))
    return _done(
        args, f"certificate serial {cert.serial_number:#x} for {cert.subject.rfc4514_string()}"
    )


def _run_crl(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    result = ca.crl(
        key,
        _load_cert(args.ca_cert),
        args.revoke,
        days=args.days,
        number=args.number,
        hash_name=args.hash,
        pad=args.padding,
    )
    _write_atomically(args.out, result.public_bytes(serialization.Encoding.PEM))
    return _done(args, f"CRL with {len(args.revoke)} revoked serial(s)")


def _run_ocsp(args: argparse.Namespace, key: ThresholdRSAPrivateKey) -> int:
    try:
        request = ocsp.load_der_ocsp_request(_read(args.request, "OCSP request"))
    except ValueError:
        raise ParameterError(f"{args.request}: not a DER OCSP request") from None
    response = ca.ocsp_response(
        key, _load_cert(args.ca_cert), request, args.status, hours=args.hours, hash_name=args.hash
    )
    _write_atomically(args.out, response.public_bytes(serialization.Encoding.DER))
    return _done(args, f"OCSP response ({args.status}) for serial {request.serial_number:#x}")


CA = Command(
    "ca",
    "certificate authority work signed by the cluster (selfsign, issue, crl, ocsp)",
    _setup,
    _run,
)
