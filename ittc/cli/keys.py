"""The key ceremony's commands: ``ittc keygen``, ``ittc split`` and ``ittc info``."""

from __future__ import annotations

import argparse
import getpass
import pathlib
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ittc import storage
from ittc.cli.command import EXIT_OK, Command, say, warn_loudly
from ittc.config import ClusterFile
from ittc.deploy.ceremony import create_cluster, describe, plan_sites
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ConfigError, ParameterError
from ittc.scheme import dealer

__all__ = ["INFO", "KEYGEN", "SPLIT"]


# -- arguments shared by keygen and split ----------------------------------------------

_KDF_CHOICES = ("moderate", "sensitive", "fast-insecure-for-tests")


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, type=pathlib.Path, help="new (or empty) folder for the output"
    )
    p.add_argument("--nodes", type=int, default=5, metavar="N", help="number of nodes (5)")
    p.add_argument("--threshold", type=int, default=3, metavar="K", help="nodes needed to sign (3)")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--passphrase-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="bring your own passphrases: DIR/site-<i> (mode 0600) encrypts site i's share. "
        "Default: a fresh random passphrase per site, written into that site's folder",
    )
    source.add_argument(
        "--passphrase-file",
        type=pathlib.Path,
        metavar="FILE",
        help="one passphrase (file mode 0600) for EVERY site's share file: any site can "
        "then open every other site's share file and backup. Prefer the default",
    )
    source.add_argument(
        "--ask-passphrases",
        "--per-node-passphrases",
        dest="ask_passphrases",
        action="store_true",
        help="ask for each site's passphrase on the terminal",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="without --address: host every node listens on and is dialled at (127.0.0.1)",
    )
    p.add_argument(
        "--base-port", type=int, default=7001, help="port of node 1; node i gets base+i-1 (7001)"
    )
    p.add_argument(
        "--address",
        action="append",
        dest="addresses",
        metavar="HOST:PORT",
        help="address combiners dial node i at, a DNS name or an IP (give it N times, in "
        "order); its certificate names that host. Overrides --host/--base-port",
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST[:PORT]",
        help="what the nodes bind, once for every node or N times: HOST:PORT, or a HOST "
        "bound at the node's --address port. Default with --address: 0.0.0.0 ([::] for "
        "an IPv6 address) at that port",
    )
    p.add_argument(
        "--client",
        action="append",
        dest="clients",
        metavar="NAME",
        help="client identity to issue and allow (repeatable; ittc-client). The first goes "
        "into combiner/, the others into clients/NAME/",
    )
    p.add_argument(
        "--kdf",
        choices=_KDF_CHOICES,
        default="moderate",
        help="cost of the share files' passphrase hashing (moderate); "
        "fast-insecure-for-tests is for automated tests only",
    )


def _kdf(name: str) -> storage.KdfLimits:
    return {
        "moderate": storage.KdfLimits.moderate,
        "sensitive": storage.KdfLimits.sensitive,
        "fast-insecure-for-tests": storage.KdfLimits.fast_for_tests,
    }[name]()


def _ask_passphrase(prompt: str) -> bytes:
    try:
        first = getpass.getpass(f"{prompt}: ")
        if not first:
            raise ConfigError("empty passphrase refused")
        again = getpass.getpass(f"{prompt} (again): ")
    except EOFError:
        raise ConfigError("no passphrase given") from None
    if again != first:
        raise ConfigError("the passphrases do not match")
    return first.encode("utf-8")


def _passphrases(args: argparse.Namespace) -> list[bytes] | None:
    """Read or ask for the share-file passphrases before any long computation; None means
    a fresh random one per site (made by the ceremony)."""
    if args.passphrase_file is not None:
        return [storage.read_passphrase_file(args.passphrase_file)]
    if args.passphrase_dir is not None:
        folder = args.passphrase_dir
        if not folder.is_dir():
            raise ConfigError(f"--passphrase-dir {folder}: no such folder")
        return [
            storage.read_passphrase_file(folder / f"site-{i}") for i in range(1, args.nodes + 1)
        ]
    if args.ask_passphrases:
        if not sys.stdin.isatty():
            raise ConfigError(
                "--ask-passphrases: stdin is not a terminal, so the passphrases cannot be "
                "asked for (the default makes a random one per site)"
            )
        return [
            _ask_passphrase(f"Passphrase for site {i}'s share file")
            for i in range(1, args.nodes + 1)
        ]
    return None


def _brought_files(args: argparse.Namespace) -> list[pathlib.Path]:
    """The secret files the operator gave this ceremony: leftovers to destroy too."""
    files = []
    if args.passphrase_file is not None:
        files.append(args.passphrase_file)
    if args.passphrase_dir is not None:
        files += [args.passphrase_dir / f"site-{i}" for i in range(1, args.nodes + 1)]
    return files


def _check_early(args: argparse.Namespace) -> None:
    """Fail before key generation (seconds to minutes) rather than after it."""
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not empty; choose a new folder")
    try:
        plan_sites(
            args.nodes, args.addresses, args.listen, host=args.host, base_port=args.base_port
        )
    except ParameterError as exc:
        raise ConfigError(f"--address/--listen/--host/--base-port: {exc}") from None


def _write_cluster(
    args: argparse.Namespace,
    dealt: dealer.DealtKey,
    passphrases: list[bytes] | None,
    leftovers: list[pathlib.Path],
) -> None:
    cluster = create_cluster(
        args.out,
        dealt,
        passphrases=passphrases,
        addresses=args.addresses,
        listen=args.listen,
        host=args.host,
        base_port=args.base_port,
        client_names=tuple(args.clients or ("ittc-client",)),
        kdf=_kdf(args.kdf),
        leftovers=leftovers,
        progress=say,
    )
    warnings = list(dealt.warnings)
    if dealt.params.bits < 2048:
        warnings.append(f"this is a {dealt.params.bits}-bit test key: it protects nothing")
    if args.kdf == "fast-insecure-for-tests":
        warnings.append(
            "share files were encrypted with the test-only KDF limits: a stolen "
            "share file's passphrase can be guessed almost for free"
        )
    if passphrases is not None and dealt.params.n > 1:
        repeated = len(passphrases) == 1 or len(set(passphrases)) < len(passphrases)
        if repeated:
            warnings.append(
                "several sites' share files open with the same passphrase: each such "
                "site, and whoever breaks into one, holds the passphrase of the others' "
                "share files and backups. The default makes one per site"
            )
    warn_loudly(warnings)
    print(describe(cluster))
    print()
    print(CeremonyFolder(cluster.root.parent).readme.read_text(), end="")


# -- keygen ----------------------------------------------------------------------------


def _setup_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=2048, help="modulus size: 2048, 3072, 4096")
    p.add_argument(
        "--e",
        type=int,
        default=65537,
        help="public exponent, a prime larger than the number of nodes (65537)",
    )
    p.add_argument(
        "--insecure-small-key-for-tests",
        action="store_true",
        help="allow moduli below 2048 bits; such keys protect nothing",
    )
    _add_cluster_args(p)


def _run_keygen(args: argparse.Namespace) -> int:
    _check_early(args)
    passphrases = _passphrases(args)
    dealt = dealer.generate(
        args.bits,
        args.nodes,
        args.threshold,
        args.e,
        progress=say,
        insecure_allow_small_modulus_for_tests=args.insecure_small_key_for_tests,
    )
    _write_cluster(args, dealt, passphrases, _brought_files(args))
    return EXIT_OK


# -- split -----------------------------------------------------------------------------


def _setup_split(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        required=True,
        type=pathlib.Path,
        metavar="PEM",
        help="the existing RSA private key (PEM, may be encrypted)",
    )
    p.add_argument(
        "--key-passphrase-file",
        type=pathlib.Path,
        metavar="FILE",
        help="file (mode 0600) with the passphrase of an encrypted --key",
    )
    _add_cluster_args(p)


def _load_rsa_key(path: pathlib.Path, passphrase_file: pathlib.Path | None) -> rsa.RSAPrivateKey:
    password = storage.read_passphrase_file(passphrase_file) if passphrase_file else None
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        if password is None:
            raise ConfigError(f"{path}: the key is encrypted; give --key-passphrase-file") from None
        raise ConfigError(f"{path}: the key is not encrypted; drop --key-passphrase-file") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM private key, or the passphrase is wrong") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path}: not an RSA private key")
    return key


def _run_split(args: argparse.Namespace) -> int:
    _check_early(args)
    key = _load_rsa_key(args.key, args.key_passphrase_file)
    passphrases = _passphrases(args)
    dealt = dealer.split(key, args.nodes, args.threshold, progress=say)
    brought = [args.key] + ([args.key_passphrase_file] if args.key_passphrase_file else [])
    _write_cluster(args, dealt, passphrases, brought + _brought_files(args))
    print(f"""
The original key file {args.key} still holds the whole key: anyone who reads it can
sign without the cluster. Destroy it (ittc ceremony finish --also {args.key}), or keep
it offline under the same protection as before; the cluster does not need it.""")
    return EXIT_OK


# -- info ------------------------------------------------------------------------------


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster",
        required=True,
        type=pathlib.Path,
        metavar="DIR",
        help="cluster folder (or its cluster.toml)",
    )


def _run_info(args: argparse.Namespace) -> int:
    print(describe(ClusterFile.load(args.cluster)))
    return EXIT_OK


KEYGEN = Command(
    "keygen",
    "generate a new key from safe primes and write a cluster folder",
    _setup_keygen,
    _run_keygen,
)
SPLIT = Command(
    "split", "split an existing RSA key into a cluster folder", _setup_split, _run_split
)
INFO = Command("info", "describe a cluster folder", _setup_info, _run_info)
