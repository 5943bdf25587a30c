"""``ittc ceremony finish DIR``: destroy what the key ceremony left on its machine."""

from __future__ import annotations

import argparse
import pathlib
import sys

from ittc.cli.command import EXIT_ERROR, EXIT_OK, Command

__all__ = ["CEREMONY"]

_CONFIRM = "destroy"


def _setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ceremony_command", metavar="ACTION", required=True)
    f = sub.add_parser(
        "finish",
        help="destroy the ceremony's leftovers (shares, passphrases, client keys; the CA "
        "key once it is offline), after listing them and asking",
        description="Once every site folder, the combiner bundle and the CA have arrived "
        "where they belong, destroy what is left in the ceremony folder: every file is "
        "overwritten with random bytes, flushed and unlinked. Lists everything first and "
        "asks for confirmation (or takes --yes). On SSDs, copy-on-write or journaling "
        "file systems the old bytes may survive: see the folder's README.txt.",
    )
    f.add_argument("dir", type=pathlib.Path, help="the folder ittc keygen/split wrote (--out)")
    f.add_argument(
        "--ca-key-offline",
        action="store_true",
        help="a copy of ca/ is offline: destroy ca/ca.key here too (kept otherwise)",
    )
    f.add_argument(
        "--also",
        action="append",
        default=[],
        type=pathlib.Path,
        metavar="FILE",
        help="destroy this file too: the key ittc split read, the passphrase files you "
        "gave (repeatable)",
    )
    f.add_argument("--yes", action="store_true", help="do not ask; destroy what is listed")


def _run(args: argparse.Namespace) -> int:
    from ittc.deploy.leftovers import destroy, plan

    doomed, kept = plan(args.dir, ca_key_offline=args.ca_key_offline, also=args.also)
    print(f"In {args.dir.absolute()}, to destroy (overwrite, then delete):")
    for item in doomed:
        print(f"  {item.path}\n      {item.what}")
    for item in kept:
        print(f"Kept: {item.path}\n      {item.what}")
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "ittc: error: nothing destroyed: give --yes, or run at a terminal to confirm",
                file=sys.stderr,
            )
            return EXIT_ERROR
        answer = input(f"Type '{_CONFIRM}' to destroy the {len(doomed)} items above: ")
        if answer.strip() != _CONFIRM:
            print("nothing destroyed", file=sys.stderr)
            return EXIT_ERROR
    destroy(doomed, args.dir)
    print(f"destroyed {len(doomed)} items" + ("" if not kept else f"; kept {len(kept)}"))
    return EXIT_OK


CEREMONY = Command(
    "ceremony",
    "after the key ceremony: destroy its leftovers (ceremony finish DIR)",
    _setup,
    _run,
)
