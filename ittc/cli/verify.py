"""``ittc verify``: check a signature under the cluster's key (or any RSA public key), the
way a relying party would, with PKCS#1 v1.5 or PSS. Exit 0 when it verifies, 1 when it
does not, 2 for bad input."""

from __future__ import annotations

import argparse
import pathlib
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command
from ittc.config import ClusterFile
from ittc.errors import ConfigError, InvalidSignature
from ittc.scheme.encoding import HASHES, MAX_SALT_BYTES

__all__ = ["EXIT_INVALID", "VERIFY", "check_signature"]

#: The signature does not verify (distinct from 2, bad input).
EXIT_INVALID = 1


def check_signature(
    public_key: rsa.RSAPublicKey,
    signature: bytes,
    data: bytes,
    pad: str,
    hash_name: str,
    salt_length: int | None,
) -> None:
    """Raise :class:`~ittc.errors.InvalidSignature` unless ``signature`` verifies.
    ``salt_length`` None means: for PSS, whatever salt length the signature has."""
    algorithm = HASHES[hash_name].algorithm()
    padder: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if pad == "pkcs1v15"
        else padding.PSS(
            padding.MGF1(algorithm),
            salt_length if salt_length is not None else padding.PSS.AUTO,
        )
    )
    try:
        public_key.verify(signature, data, padder, algorithm)
    except CryptoInvalidSignature:
        raise InvalidSignature("the signature does not verify") from None


def load_public_key(path: pathlib.Path) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM or DER public key or certificate."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    loaders = (
        serialization.load_pem_public_key,
        serialization.load_der_public_key,
        lambda d: x509.load_pem_x509_certificate(d).public_key(),
        lambda d: x509.load_der_x509_certificate(d).public_key(),
    )
    for load in loaders:
        try:
            key = load(data)
        except ValueError:
            continue
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError(f"{path}: not an RSA key")
        return key
    raise ConfigError(f"{path}: not a public key or certificate (PEM or DER)")


def _setup(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--cluster", type=pathlib.Path, help="cluster folder or file: its public key"
    )
    source.add_argument(
        "--key",
        type=pathlib.Path,
        help="an RSA public key or a certificate (PEM or DER)",
    )
    p.add_argument(
        "--in",
        dest="input",
        required=True,
        type=pathlib.Path,
        help="the signed file ('-' for standard input)",
    )
    p.add_argument("--sig", required=True, type=pathlib.Path, help="the signature (raw bytes)")
    p.add_argument("--hash", default="sha256", choices=sorted(HASHES), help="(sha256)")
    p.add_argument("--padding", default="pkcs1v15", choices=["pkcs1v15", "pss"], help="(pkcs1v15)")
    p.add_argument(
        "--salt-length",
        type=argtypes.integer(0, MAX_SALT_BYTES),
        default=None,
        help="PSS salt length in bytes (default: accept the signature's own)",
    )


def _run(args: argparse.Namespace) -> int:
    key = (
        ClusterFile.load(args.cluster).params.public_key()
        if args.cluster is not None
        else load_public_key(args.key)
    )
    data = sys.stdin.buffer.read() if str(args.input) == "-" else args.input.read_bytes()
    signature = args.sig.read_bytes()
    try:
        check_signature(key, signature, data, args.padding, args.hash, args.salt_length)
    except InvalidSignature:
        print(f"ittc: {args.sig}: does NOT verify ({args.padding}/{args.hash})", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.sig}: verifies ({args.padding}/{args.hash}, {key.key_size}-bit key)")
    return EXIT_OK


VERIFY = Command(
    "verify", "check a signature (PKCS#1 v1.5 or PSS) under the cluster's key", _setup, _run
)
