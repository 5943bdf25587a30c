"""``ittc share passphrase`` and ``ittc share check``: a site's share file over the years.

Passphrases are read from files (mode 0600) or typed at the terminal, never taken from
the command line (they would show in ``ps`` and in shell history).
"""

from __future__ import annotations

import argparse
import getpass
import pathlib
import sys

from ittc import storage
from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command
from ittc.config import NodeConfig
from ittc.errors import ConfigError, ParameterError
from ittc.scheme.params import MAX_NODES, PublicParams

__all__ = ["SHARE"]


def _setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="share_command", metavar="ACTION", required=True)

    s = sub.add_parser(
        "passphrase",
        help="encrypt a site's share file under a new passphrase (the old file kept until "
        "the new one is verified)",
        description="Encrypt the share file a node.toml names (and its site-key file, if "
        "it names one) under a new passphrase. The new file is written beside the old one, "
        "read back with the new passphrase and checked, and only then renamed over it. "
        "Then move the new passphrase where the node reads it (systemd credential, file) "
        "before the node next starts: a running node keeps its share in memory.",
    )
    s.add_argument("--config", required=True, type=pathlib.Path, help="the site's node.toml")
    s.add_argument(
        "--old-passphrase-file",
        type=pathlib.Path,
        metavar="FILE",
        help="the current passphrase (default: the config's passphrase_file, else asked)",
    )
    new = s.add_mutually_exclusive_group(required=True)
    new.add_argument(
        "--new-passphrase-file",
        type=pathlib.Path,
        metavar="FILE",
        help="the new passphrase, from this file (mode 0600)",
    )
    new.add_argument(
        "--generate",
        type=pathlib.Path,
        metavar="FILE",
        help="make a new random passphrase (256 bits) and write it to this new file (0600)",
    )
    new.add_argument(
        "--ask", action="store_true", help="type the new passphrase at the terminal (twice)"
    )
    s.set_defaults(_share=_run_passphrase)

    s = sub.add_parser(
        "check",
        help="check a share file (a backup) offline: decrypt it and self-test the share "
        "against the key's verification key; nothing is written",
    )
    s.add_argument("file", type=pathlib.Path, help="the share file")
    s.add_argument(
        "--params",
        required=True,
        type=pathlib.Path,
        help="the key's public parameters (params.json, from the site's etc/ or a combiner)",
    )
    s.add_argument(
        "--index",
        type=argtypes.integer(1, MAX_NODES),
        default=None,
        help="the node index (default: the one the file names)",
    )
    s.add_argument(
        "--passphrase-file",
        type=pathlib.Path,
        metavar="FILE",
        help="the file's passphrase (default: asked at the terminal)",
    )
    s.set_defaults(_share=_run_check)


def _run(args: argparse.Namespace) -> int:
    result: int = args._share(args)
    return result


def _ask(prompt: str, flag: str) -> bytes:
    if sys.stdin is None or not sys.stdin.isatty():
        raise ParameterError(f"no terminal to ask for the {prompt}: give it with {flag}")
    entered = getpass.getpass(f"{prompt}: ")
    if not entered:
        raise ParameterError(f"no {prompt} entered")
    return entered.encode("utf-8")


def _run_passphrase(args: argparse.Namespace) -> int:
    from ittc.deploy.sharefiles import change_passphrase

    config = NodeConfig.load(args.config)
    old_file = args.old_passphrase_file or config.passphrase_file
    old = (
        storage.read_passphrase_file(old_file)
        if old_file
        else _ask("current passphrase", "--old-passphrase-file FILE")
    )
    if args.new_passphrase_file is not None:
        new = storage.read_passphrase_file(args.new_passphrase_file)
    elif args.generate is not None:
        new = storage.new_passphrase()
    else:
        flag = "--generate FILE or --new-passphrase-file FILE"
        new = _ask("new passphrase", flag)
        if _ask("new passphrase again", flag) != new:
            raise ParameterError("the two new passphrases differ; nothing changed")
    if args.generate is not None:  # written first: never a share file without its passphrase
        storage.write_passphrase_file(args.generate, new)
    try:
        changed = change_passphrase(config, old, new)
    except BaseException:
        if args.generate is not None:
            args.generate.unlink()
        raise
    for path in changed:
        print(f"{path}: now encrypted under the new passphrase", file=sys.stderr)
    where = f" (in {args.generate})" if args.generate is not None else ""
    print(
        f"Put the new passphrase{where} where node {config.index} reads it (the systemd "
        "credential, or the file its config names) before it next starts, then destroy the "
        "old one and every copy of the old share file: the old passphrase still opens them.",
        file=sys.stderr,
    )
    return EXIT_OK


def _run_check(args: argparse.Namespace) -> int:
    from ittc.deploy.sharefiles import check_share_file

    try:
        params = PublicParams.from_json(args.params.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{args.params}: no such file") from None
    except ParameterError as exc:
        raise ConfigError(f"{args.params}: not the key's public parameters: {exc}") from None
    header = storage.read_share_header(args.file)
    if header.key_id != params.key_id:
        raise ConfigError(
            f"share file {args.file} holds a share of key {header.short_id}, not of key "
            f"{params.short_id} ({args.params})"
        )
    passphrase = (
        storage.read_passphrase_file(args.passphrase_file)
        if args.passphrase_file is not None
        else _ask(f"passphrase of {args.file}", "--passphrase-file FILE")
    )
    checked = check_share_file(args.file, params, passphrase, args.index)
    print(
        f"{checked.path}: OK: node {checked.index}'s share of key {params.short_id} "
        f"(epoch {checked.epoch}, file format {checked.format_version}); the passphrase "
        "opens it and the share matches its verification key"
    )
    return EXIT_OK


SHARE = Command(
    "share",
    "a site's share file: change its passphrase, check a backup offline",
    _setup,
    _run,
)
