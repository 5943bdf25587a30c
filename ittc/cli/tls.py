"""``ittc tls ...``: the cluster's own TLS identities over the years (mutual TLS between
combiners and nodes; not the CA the cluster's key signs for, which is ``ittc ca``).

Issuing and renewing need the cluster CA's folder (``ca.pem`` and ``ca.key``), brought
back from offline storage and named with ``--ca``: nothing here finds it by itself.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command
from ittc.deploy import identities
from ittc.storage import pki

__all__ = ["TLS"]

_DAYS = argtypes.integer(1, 36600)


def _ca_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca",
        required=True,
        type=pathlib.Path,
        metavar="DIR",
        help="the cluster CA's folder (ca.pem and ca.key), brought back from offline storage",
    )


def _setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tls_command", metavar="ACTION", required=True)

    s = sub.add_parser(
        "client",
        help="a new client identity (a second combiner, a monitoring probe) as a complete "
        "combiner bundle",
        description="Issue a client certificate from the cluster CA and write a complete "
        "combiner bundle for it (cluster.toml, params, public key, CA, client.pem, "
        "client.key), copied from an existing bundle. Nodes sign for it once its name is "
        "in their allowed_clients (then reload them); a health probe needs no such entry.",
    )
    s.add_argument("name", help="the identity (the certificate's common name)")
    _ca_arg(s)
    s.add_argument(
        "--bundle",
        required=True,
        type=pathlib.Path,
        metavar="DIR",
        help="an existing combiner bundle of the cluster (the ceremony's combiner/)",
    )
    s.add_argument("--out", required=True, type=pathlib.Path, help="the new bundle's folder")
    s.add_argument("--days", type=_DAYS, default=identities.DEFAULT_DAYS, help="validity (825)")
    s.set_defaults(_tls=_run_client)

    s = sub.add_parser(
        "renew",
        help="a new certificate for an existing node or client key (renewal, or moving it "
        "to a new CA)",
        description="Issue a new certificate for the key of a node's or client's "
        "certificate: same name, addresses and usage, valid for --days from now. Only the "
        "certificate is read and written: the private key stays where it is. Install it "
        "and reload the node (systemctl reload, or SIGHUP); combiners pick up a renewed "
        "client.pem by themselves.",
    )
    s.add_argument("cert", type=pathlib.Path, help="the current certificate (PEM)")
    _ca_arg(s)
    s.add_argument(
        "--out", type=pathlib.Path, help="where to write the new certificate (default: over CERT)"
    )
    s.add_argument("--days", type=_DAYS, default=identities.DEFAULT_DAYS, help="validity (825)")
    s.set_defaults(_tls=_run_renew)

    s = sub.add_parser(
        "new-ca",
        help="a new cluster CA (to rotate the old one out)",
        description="Make a new cluster CA in a new folder. A rotation: trust old and new "
        "everywhere (ittc tls trust), renew every identity under the new CA, then trust the "
        "new one alone (nodes/README.md).",
    )
    s.add_argument("--out", required=True, type=pathlib.Path, help="the new CA's folder")
    s.add_argument("--name", default=None, help="its common name (default: dated)")
    s.add_argument("--days", type=_DAYS, default=identities.DEFAULT_CA_DAYS, help="validity (3650)")
    s.set_defaults(_tls=_run_new_ca)

    s = sub.add_parser(
        "trust",
        help="one CA file that trusts several CAs (old and new, during a rotation)",
    )
    s.add_argument("certs", nargs="+", type=pathlib.Path, help="CA certificate files (PEM)")
    s.add_argument("--out", required=True, type=pathlib.Path, help="the CA file to write")
    s.set_defaults(_tls=_run_trust)

    s = sub.add_parser(
        "show",
        help="subject, issuer and expiry of certificates; exit 1 if one expires soon",
    )
    s.add_argument("certs", nargs="+", type=pathlib.Path, help="certificate files (PEM)")
    s.add_argument(
        "--warn-days",
        type=argtypes.integer(0, 36600),
        default=30,
        help="exit 1 if a certificate expires within this many days (30)",
    )
    s.set_defaults(_tls=_run_show)


def _run(args: argparse.Namespace) -> int:
    result: int = args._tls(args)
    return result


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _when(cert: x509.Certificate) -> str:
    return cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")


def _run_client(args: argparse.Namespace) -> int:
    ca = identities.CAFolder.open(args.ca)
    bundle = identities.issue_client_bundle(ca, args.bundle, args.name, args.out, days=args.days)
    assert bundle.client_cert is not None
    cert = pki.load_cert(bundle.client_cert)
    _say(
        f"wrote the combiner bundle {args.out} for client {args.name!r} "
        f"(serial {cert.serial_number:#x}, expires {_when(cert)})\n"
        f"To let it sign: add {args.name!r} to [access] allowed_clients in every node's "
        "node.toml and reload the nodes (systemctl reload ittc-node@I, or kill -HUP). A "
        "monitoring probe that only checks health needs no such entry."
    )
    return EXIT_OK


def _run_renew(args: argparse.Namespace) -> int:
    ca = identities.CAFolder.open(args.ca)
    old = pki.load_cert(args.cert)
    new = identities.renew(ca, args.cert, args.out, days=args.days)
    _say(
        f"wrote {args.out or args.cert}: {new.subject.rfc4514_string()}, serial "
        f"{new.serial_number:#x}, issued by '{new.issuer.rfc4514_string()}', expires "
        f"{_when(new)} (was {_when(old)}). Install it and reload the node (SIGHUP); "
        "combiners use a new client.pem for their next connections by themselves."
    )
    return EXIT_OK


def _run_new_ca(args: argparse.Namespace) -> int:
    ca = identities.new_ca(args.out, name=args.name, days=args.days)
    _say(
        f"wrote the new cluster CA '{ca.cert.subject.rfc4514_string()}' to {args.out} "
        f"(expires {_when(ca.cert)}); keep {args.out}/ca.key offline like the old one"
    )
    return EXIT_OK


def _run_trust(args: argparse.Namespace) -> int:
    certs = identities.trust_bundle(args.certs, args.out)
    names = ", ".join(f"'{c.subject.rfc4514_string()}'" for c in certs)
    _say(f"wrote {args.out}: trusts {names}")
    return EXIT_OK


def _kind(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "CA"
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "certificate"
    if ExtendedKeyUsageOID.SERVER_AUTH in usage:
        return "node (server)"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usage:
        return "client"
    return "certificate"


def _run_show(args: argparse.Namespace) -> int:
    now = datetime.datetime.now(datetime.UTC)
    soon = False
    for path in args.certs:
        for cert in pki.load_certs(path):
            left = cert.not_valid_after_utc - now
            if now < cert.not_valid_before_utc:
                state = f"NOT VALID YET (from {cert.not_valid_before_utc:%Y-%m-%d %H:%M UTC})"
                soon = True
            elif left.total_seconds() < 0:
                state = "EXPIRED"
                soon = True
            else:
                state = f"{left.days} days left"
                soon |= left <= datetime.timedelta(days=args.warn_days)
            print(
                f"{path}: {_kind(cert)} {cert.subject.rfc4514_string()}\n"
                f"    issuer {cert.issuer.rfc4514_string()}, serial {cert.serial_number:#x}\n"
                f"    expires {_when(cert)}: {state}"
            )
    return 1 if soon else EXIT_OK


TLS = Command(
    "tls",
    "the cluster's TLS identities: issue a client, renew a certificate, rotate the CA",
    _setup,
    _run,
)
