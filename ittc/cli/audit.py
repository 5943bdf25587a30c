"""``ittc audit verify FILE``: check a node's hash-chained audit log."""

from __future__ import annotations

import argparse
import pathlib
import sys

from ittc.cli.command import EXIT_OK, Command

__all__ = ["AUDIT"]


def _setup_audit(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser(
        "verify",
        help="check an audit log's hash chain (exit 0 intact, 1 empty, 3 altered or damaged)",
    )
    v.add_argument("file", type=pathlib.Path, help="the audit log (a node's var/audit.log)")


#: The file holds no record: nothing was verified.
EXIT_EMPTY = 1
#: The log fails verification (a line edited, inserted, deleted, moved or cut short, or
#: not an audit record): evidence of tampering or damage, not a usage error (that is 2).
EXIT_BROKEN = 3


def _run_audit(args: argparse.Namespace) -> int:
    from ittc_node.audit import AuditChainBroken, verify_audit_log

    try:
        lines = verify_audit_log(args.file)
    except AuditChainBroken as exc:
        print(f"ittc: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BROKEN
    if lines == 0:
        print(f"{args.file}: empty: no records, nothing to verify")
        return EXIT_EMPTY
    print(f"{args.file}: {lines} records, hash chain intact")
    return EXIT_OK


AUDIT = Command("audit", "audit log tools (audit verify FILE)", _setup_audit, _run_audit)
