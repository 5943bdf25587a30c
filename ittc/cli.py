"""The ``ittc`` command line.

Each subcommand is a :class:`Command`: a name, a one-line help, a function that adds its
arguments to an ``argparse`` parser and a function that runs it and returns the exit
code. :func:`register` adds one; modules that bring their own commands (node, cluster,
sign, ...) register them when imported below.

Errors that ittc raises on purpose (:class:`~ittc.errors.IttcError`) and missing files
print one line, ``ittc: error: ...``, and exit 2, as argparse does for bad arguments;
no traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ittc import __version__, storage
from ittc.ceremony import create_cluster, describe
from ittc.config import ClusterFile
from ittc.errors import ConfigError, IttcError
from ittc.scheme import dealer

__all__ = ["Command", "build_parser", "main", "register"]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One subcommand. ``setup`` may add nested subcommands (e.g. ``cluster up``)."""

    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a subcommand; names are unique."""
    if command.name in _COMMANDS:
        raise ValueError(f"subcommand {command.name!r} registered twice")
    _COMMANDS[command.name] = command
    return command


def _say(message: str) -> None:
    print(f"ittc: {message}", file=sys.stderr, flush=True)


def _warn_loudly(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print("\n" + "!" * 78, file=sys.stderr)
        print(f"WARNING: {warning}", file=sys.stderr)
        print("!" * 78 + "\n", file=sys.stderr, flush=True)


# -- arguments shared by keygen and split ----------------------------------------------

_KDF_CHOICES = ("moderate", "sensitive", "fast-insecure-for-tests")


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=pathlib.Path,
                   help="new (or empty) folder for the cluster")
    p.add_argument("--nodes", type=int, default=5, metavar="N", help="number of nodes (5)")
    p.add_argument("--threshold", type=int, default=3, metavar="K",
                   help="nodes needed to sign (3)")
    p.add_argument("--passphrase-file", type=pathlib.Path, metavar="FILE",
                   help="file (mode 0600) holding the passphrase for every share file; "
                        "node configs name it. Without it the passphrase is asked for")
    p.add_argument("--per-node-passphrases", action="store_true",
                   help="ask for a different passphrase for each node (terminal only)")
    p.add_argument("--host", default="127.0.0.1",
                   help="host the nodes listen on, for default addresses (127.0.0.1)")
    p.add_argument("--base-port", type=int, default=7001,
                   help="port of node 1; node i gets base+i-1 (7001)")
    p.add_argument("--address", action="append", dest="addresses", metavar="HOST:PORT",
                   help="address of each node in order (give it N times; "
                        "overrides --host/--base-port)")
    p.add_argument("--client", action="append", dest="clients", metavar="NAME",
                   help="client identity to issue and allow (repeatable; ittc-client)")
    p.add_argument("--kdf", choices=_KDF_CHOICES, default="moderate",
                   help="cost of the share files' passphrase hashing (moderate); "
                        "fast-insecure-for-tests is for automated tests only")


def _kdf(name: str) -> storage.KdfLimits:
    return {"moderate": storage.KdfLimits.moderate, "sensitive": storage.KdfLimits.sensitive,
            "fast-insecure-for-tests": storage.KdfLimits.fast_for_tests}[name]()


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


def _passphrases(args: argparse.Namespace) -> list[bytes]:
    """Read or ask for the share-file passphrase(s) before any long computation."""
    if args.passphrase_file is not None:
        if args.per_node_passphrases:
            raise ConfigError("--per-node-passphrases asks on the terminal; it cannot be "
                              "combined with --passphrase-file")
        return [storage.read_passphrase_file(args.passphrase_file)]
    if not sys.stdin.isatty():
        raise ConfigError("no --passphrase-file given and stdin is not a terminal, so the "
                          "share-file passphrase cannot be asked for")
    if args.per_node_passphrases:
        return [_ask_passphrase(f"Passphrase for node {i}'s share file")
                for i in range(1, args.nodes + 1)]
    return [_ask_passphrase("Passphrase for the share files")]


def _check_out_early(out: pathlib.Path) -> None:
    """Fail before key generation (minutes) rather than after it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not empty; choose a new folder")


def _write_cluster(args: argparse.Namespace, dealt: dealer.DealtKey,
                   passphrases: list[bytes]) -> None:
    cluster = create_cluster(
        args.out, dealt, passphrases=passphrases, passphrase_file=args.passphrase_file,
        addresses=args.addresses, host=args.host, base_port=args.base_port,
        client_names=tuple(args.clients or ("ittc-client",)), kdf=_kdf(args.kdf),
        progress=_say)
    warnings = list(dealt.warnings)
    if dealt.params.bits < 2048:
        warnings.append(f"this is a {dealt.params.bits}-bit test key: it protects nothing")
    if args.kdf == "fast-insecure-for-tests":
        warnings.append("share files were encrypted with the test-only KDF limits: a stolen "
                        "share file's passphrase can be guessed almost for free")
    _warn_loudly(warnings)
    print(describe(cluster))
    print(f"""
Next steps:
  1. Move {cluster.root / 'ca' / 'ca.key'} offline (see ca/README.txt).
  2. Ship each node-<i> folder to its site; start it with
       ittc node --config node-<i>/node.toml
     or run all nodes here for a trial:  ittc cluster up {cluster.root}
  3. Sign:  ittc sign --cluster {cluster.root} ...""")


# -- keygen ----------------------------------------------------------------------------

def _setup_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=2048, help="modulus size: 2048, 3072, 4096")
    p.add_argument("--e", type=int, default=65537,
                   help="public exponent, a prime larger than the number of nodes (65537)")
    p.add_argument("--insecure-small-key-for-tests", action="store_true",
                   help="allow moduli below 2048 bits; such keys protect nothing")
    _add_cluster_args(p)


def _run_keygen(args: argparse.Namespace) -> int:
    _check_out_early(args.out)
    passphrases = _passphrases(args)
    dealt = dealer.generate(args.bits, args.nodes, args.threshold, args.e, progress=_say,
                            insecure_allow_small_modulus_for_tests=args.insecure_small_key_for_tests)
    _write_cluster(args, dealt, passphrases)
    return EXIT_OK


# -- split -----------------------------------------------------------------------------

def _setup_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, type=pathlib.Path, metavar="PEM",
                   help="the existing RSA private key (PEM, may be encrypted)")
    p.add_argument("--key-passphrase-file", type=pathlib.Path, metavar="FILE",
                   help="file (mode 0600) with the passphrase of an encrypted --key")
    _add_cluster_args(p)


def _load_rsa_key(path: pathlib.Path,
                  passphrase_file: pathlib.Path | None) -> rsa.RSAPrivateKey:
    password = storage.read_passphrase_file(passphrase_file) if passphrase_file else None
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        if password is None:
            raise ConfigError(f"{path}: the key is encrypted; give --key-passphrase-file") \
                from None
        raise ConfigError(f"{path}: the key is not encrypted; drop --key-passphrase-file") \
            from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM private key, or the passphrase is wrong") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path}: not an RSA private key")
    return key


def _run_split(args: argparse.Namespace) -> int:
    _check_out_early(args.out)
    key = _load_rsa_key(args.key, args.key_passphrase_file)
    passphrases = _passphrases(args)
    dealt = dealer.split(key, args.nodes, args.threshold, progress=_say)
    _write_cluster(args, dealt, passphrases)
    print(f"""
The original key file {args.key} still holds the whole key: anyone who reads it can
sign without the cluster. Destroy it, or keep it offline under the same protection as
before; the cluster does not need it.""")
    return EXIT_OK


# -- info ------------------------------------------------------------------------------

def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=pathlib.Path, metavar="DIR",
                   help="cluster folder (or its cluster.toml)")


def _run_info(args: argparse.Namespace) -> int:
    print(describe(ClusterFile.load(args.cluster)))
    return EXIT_OK


register(Command("keygen", "generate a new key from safe primes and write a cluster folder",
                 _setup_keygen, _run_keygen))
register(Command("split", "split an existing RSA key into a cluster folder",
                 _setup_split, _run_split))
register(Command("info", "describe a cluster folder", _setup_info, _run_info))
# More commands register themselves when their modules are imported.
from ittc import cli_ca, cli_network  # noqa: E402,F401  (registration side effects)

# -- entry point -----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Every usage error reads ``ittc: error: ...``, subcommands included."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        where = self.prog.removeprefix("ittc").strip()
        self.exit(EXIT_ERROR, f"ittc: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one subparser per registered command."""
    parser = _Parser(
        prog="ittc", description="Threshold RSA signing network (Shoup, Practical Threshold "
                                 "Signatures).")
    parser.add_argument("--version", action="version", version=f"ittc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.setup(p)
        p.set_defaults(_run=command.run)
    return parser


def _error(message: str) -> int:
    print(f"ittc: error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def _configure_logging() -> None:
    """The library's warnings (a node failed, a node was blamed) as one line each."""
    logger = logging.getLogger("ittc")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ittc: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    _configure_logging()
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(None if argv is None else list(argv))
        except SystemExit as exc:  # argparse has printed usage and "ittc: error: ..."
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
        result: int = args._run(args)
        return result
    except IttcError as exc:
        return _error(str(exc))
    except OSError as exc:
        if exc.filename is not None:
            return _error(f"{os.fsdecode(exc.filename)}: {exc.strerror or exc}")
        return _error(exc.strerror or str(exc))
    except KeyboardInterrupt:
        print("\nittc: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
