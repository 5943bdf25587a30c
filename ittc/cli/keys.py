"""The key ceremony's commands: ``ittc keygen``, ``ittc split`` and ``ittc info``."""

from __future__ import annotations

import argparse
import getpass
import pathlib
import sys

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ittc import storage
from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command, say, warn_loudly
from ittc.config import ClusterFile
from ittc.deploy.ceremony import check_monitoring, create_cluster, describe, plan_sites
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ConfigError, ParameterError
from ittc.scheme import dealer
from ittc.scheme.params import _ABSOLUTE_MIN_BITS, MAX_NODES

__all__ = ["INFO", "KEYGEN", "SPLIT"]


# -- arguments shared by keygen and split ----------------------------------------------

_KDF_CHOICES = ("moderate", "sensitive", "fast-insecure-for-tests")


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, type=pathlib.Path, help="new (or empty) folder for the output"
    )
    p.add_argument(
        "--nodes",
        type=argtypes.integer(1, MAX_NODES),
        default=5,
        metavar="N",
        help=f"number of nodes, 1..{MAX_NODES} (5)",
    )
    p.add_argument(
        "--threshold",
        type=argtypes.integer(1, MAX_NODES),
        default=3,
        metavar="K",
        help="nodes needed to sign, 1..N (3)",
    )
    p.add_argument(
        "--insecure-one-node-signs-alone",
        action="store_true",
        help="allow --threshold 1 (every node can sign alone: no threshold protection)",
    )
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
        "--base-port",
        type=argtypes.port,
        default=7001,
        help="port of node 1; node i gets base+i-1 (7001)",
    )
    p.add_argument(
        "--address",
        action="append",
        dest="addresses",
        type=argtypes.address,
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
        "an IPv6 address; a loopback IP: itself) at that port",
    )
    p.add_argument(
        "--health-listen",
        action="append",
        type=argtypes.address,
        metavar="HOST:PORT",
        help="every node also answers plain-HTTP health checks (/healthz, /livez) here, "
        "without TLS: for a load balancer or a kubelet. Once for every node, or N times "
        "(nodes on one host need a port each) (default: off)",
    )
    p.add_argument(
        "--metrics-listen",
        action="append",
        type=argtypes.address,
        metavar="HOST:PORT",
        help="every node also serves Prometheus metrics (/metrics) here, plain HTTP; bind "
        "it to loopback or a management network. Once for every node, or N times "
        "(default: off)",
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


def _check_early(args: argparse.Namespace, e: int | None = None) -> None:
    """Fail before key generation (seconds to minutes) rather than after it, naming the
    flag at fault."""
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not empty; choose a new folder")
    if args.threshold == 1 and not args.insecure_one_node_signs_alone:
        # A threshold of one is not a threshold: every site holds the whole signing power.
        raise ConfigError(
            f"--threshold 1: any one of the {args.nodes} nodes could sign alone, so each "
            "site (its host, or its share file and passphrase) holds the whole signing "
            "power; use a threshold of 2 or more, or pass --insecure-one-node-signs-alone "
            "if that is really what you want"
        )
    if args.threshold > args.nodes:
        raise ConfigError(
            f"--threshold {args.threshold} is more than --nodes {args.nodes}: k of n nodes "
            "sign, so k <= n"
        )
    if e is not None:
        try:
            dealer.check_exponent(e, args.nodes)
        except ParameterError as exc:
            raise ConfigError(f"--e {e}: {exc}") from None
    if args.addresses is not None and len(args.addresses) != args.nodes:
        raise ConfigError(
            f"--address given {len(args.addresses)} times: give it once per node, "
            f"--nodes {args.nodes} times, in order"
        )
    if args.listen is not None and len(args.listen) not in (1, args.nodes):
        raise ConfigError(
            f"--listen given {len(args.listen)} times: give it once for every node, "
            f"or once per node ({args.nodes} times)"
        )
    for flag, given in (
        ("--health-listen", args.health_listen),
        ("--metrics-listen", args.metrics_listen),
    ):
        if given is not None and len(given) not in (1, args.nodes):
            raise ConfigError(
                f"{flag} given {len(given)} times: give it once for every node, "
                f"or once per node ({args.nodes} times)"
            )
    if args.addresses is None and args.base_port + args.nodes - 1 > 65535:
        raise ConfigError(
            f"--base-port {args.base_port}: the last of {args.nodes} nodes would need port "
            f"{args.base_port + args.nodes - 1}, above 65535"
        )
    try:
        sites = plan_sites(
            args.nodes, args.addresses, args.listen, host=args.host, base_port=args.base_port
        )
    except ParameterError as exc:
        flag = "--listen" if "listen" in str(exc) else ("--address" if args.addresses else "--host")
        raise ConfigError(f"{flag}: {exc}") from None
    try:
        check_monitoring(sites, args.metrics_listen, args.health_listen)
    except ParameterError as exc:
        flag = "--health-listen" if "health" in str(exc) else "--metrics-listen"
        raise ConfigError(f"{flag}: {exc}") from None


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
        metrics_listen=args.metrics_listen,
        health_listen=args.health_listen,
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
    p.add_argument(
        "--bits",
        type=argtypes.integer(_ABSOLUTE_MIN_BITS, 16384),
        default=2048,
        help="modulus size: 2048, 3072, 4096 (others only with --insecure-small-key-for-tests)",
    )
    p.add_argument(
        "--e",
        type=argtypes.integer(3, 2**256, "2^256"),
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
    if args.bits not in dealer.SUPPORTED_BITS:
        if not args.insecure_small_key_for_tests:
            raise ConfigError(
                f"--bits {args.bits}: use 2048, 3072 or 4096 (other sizes only with "
                "--insecure-small-key-for-tests, for tests: they protect nothing)"
            )
        if args.bits % 2:
            raise ConfigError(f"--bits {args.bits}: the modulus size must be even")
    _check_early(args, args.e)
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
        metavar="FILE",
        help="the existing RSA private key: PEM (PKCS#8, PKCS#1, OpenSSH) or DER, may be encrypted",
    )
    p.add_argument(
        "--key-passphrase-file",
        type=pathlib.Path,
        metavar="FILE",
        help="file (mode 0600) with the passphrase of an encrypted --key",
    )
    _add_cluster_args(p)


#: What a PEM block's label says its file is, for the labels that are not a private key.
_NOT_A_KEY = {
    "CERTIFICATE": "an X.509 certificate",
    "TRUSTED CERTIFICATE": "an X.509 certificate",
    "CERTIFICATE REQUEST": "a certificate request (CSR)",
    "NEW CERTIFICATE REQUEST": "a certificate request (CSR)",
    "PUBLIC KEY": "a public key",
    "RSA PUBLIC KEY": "an RSA public key",
    "X509 CRL": "a certificate revocation list",
    "PKCS7": "a PKCS#7 bundle",
}
_PRIVATE = ("PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY")


def _pem_label(data: bytes) -> str | None:
    """The label of the first PEM block (``CERTIFICATE``...), or None if not PEM."""
    start = data.find(b"-----BEGIN ")
    if start < 0:
        return None
    end = data.find(b"-----", start + 11)
    return data[start + 11 : end].decode("ascii", "replace") if end > 0 else None


def _what_der_is(data: bytes) -> str | None:
    """What a DER file that is not a private key holds, if it is something we know."""
    for what, load in (
        ("an X.509 certificate (DER)", x509.load_der_x509_certificate),
        ("a public key (DER)", serialization.load_der_public_key),
        ("a certificate request (DER)", x509.load_der_x509_csr),
    ):
        try:
            load(data)
        except ValueError:
            continue
        return what
    return None


def _load_rsa_key(path: pathlib.Path, passphrase_file: pathlib.Path | None) -> rsa.RSAPrivateKey:
    """The RSA private key in ``path``: PEM (PKCS#8, PKCS#1 or OpenSSH) or DER, encrypted
    or not. A file that holds something else is named for what it holds."""
    password = storage.read_passphrase_file(passphrase_file) if passphrase_file else None
    data = path.read_bytes()
    label = _pem_label(data)
    if label is not None and label not in _PRIVATE:
        what = _NOT_A_KEY.get(label, f"a PEM {label!r} block")
        raise ConfigError(
            f"--key {path}: this is {what}, not a private key: split needs the RSA private "
            "key itself"
        )
    try:
        if label == "OPENSSH PRIVATE KEY":
            key: object = serialization.load_ssh_private_key(data, password=password)
        elif label is not None:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except TypeError:
        if password is None:
            raise ConfigError(
                f"--key {path}: the key is encrypted; give --key-passphrase-file"
            ) from None
        raise ConfigError(
            f"--key {path}: the key is not encrypted; drop --key-passphrase-file"
        ) from None
    except ValueError:
        if label is None:
            der = _what_der_is(data)
            if der is not None:
                raise ConfigError(
                    f"--key {path}: this is {der}, not a private key: split needs the RSA "
                    "private key itself"
                ) from None
            if password is None:
                raise ConfigError(
                    f"--key {path}: not a private key (neither PEM nor DER)"
                ) from None
            raise ConfigError(
                f"--key {path}: not a DER private key, or --key-passphrase-file does not open it"
            ) from None
        if password is not None:
            raise ConfigError(
                f"--key {path}: the passphrase in {passphrase_file} does not open this "
                "key (or the file is damaged)"
            ) from None
        raise ConfigError(
            f"--key {path}: a PEM private key that cannot be read (damaged?)"
        ) from None
    except UnsupportedAlgorithm:
        raise ConfigError(f"--key {path}: a private key of a kind this ittc cannot read") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = "an EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "a non-RSA"
        raise ConfigError(f"--key {path}: {kind} private key, not an RSA one")
    return key


def _run_split(args: argparse.Namespace) -> int:
    _check_early(args)
    key = _load_rsa_key(args.key, args.key_passphrase_file)
    e = key.public_key().public_numbers().e
    try:
        dealer.check_exponent(e, args.nodes)
    except ParameterError as exc:
        raise ConfigError(f"--key {args.key}: this key's {exc}") from None
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
