"""``ittc audit verify FILE``: check a node's hash-chained audit log."""

from __future__ import annotations

import argparse
import pathlib

from ittc.cli.command import EXIT_OK, Command

__all__ = ["AUDIT"]


def _setup_audit(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check an audit log's hash chain")
    v.add_argument("file", type=pathlib.Path)


def _run_audit(args: argparse.Namespace) -> int:
    from ittc_node.audit import verify_audit_log

    lines = verify_audit_log(args.file)
    print(f"{args.file}: {lines} records, hash chain intact")
    return EXIT_OK


AUDIT = Command("audit", "audit log tools (audit verify FILE)", _setup_audit, _run_audit)
