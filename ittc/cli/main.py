"""The ``ittc`` command line: every subcommand, in one table.

Errors that ittc raises on purpose (:class:`~ittc.errors.IttcError`) and missing files
print one line, ``ittc: error: ...``, and exit 2, as argparse does for bad arguments;
no traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ittc import logs
from ittc.cli import (
    audit,
    bench,
    ca,
    ceremony,
    completion,
    demo,
    keys,
    network,
    reshare,
    share,
    tls,
    verify,
)
from ittc.cli.command import EXIT_ERROR, EXIT_INTERRUPTED, Command, add_log_options
from ittc.errors import IttcError
from ittc.version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

#: Every subcommand, in the order ``ittc --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    keys.KEYGEN,
    keys.SPLIT,
    keys.INFO,
    ceremony.CEREMONY,
    tls.TLS,
    share.SHARE,
    network.NODE,
    network.CLUSTER,
    network.SIGN,
    network.STATUS,
    verify.VERIFY,
    ca.CA,
    reshare.SITE,
    reshare.RESHARE,
    audit.AUDIT,
    demo.DEMO,
    bench.BENCH,
    completion.COMPLETION,
)


class _Parser(argparse.ArgumentParser):
    """Every usage error reads ``ittc: error: ...``, subcommands included."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        where = self.prog.removeprefix("ittc").strip()
        self.exit(EXIT_ERROR, f"ittc: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one subparser per registered command."""
    parser = _Parser(
        prog="ittc",
        description="Threshold RSA signing network (Shoup, Practical Threshold Signatures).",
    )
    parser.add_argument("--version", action="version", version=f"ittc {__version__}")
    add_log_options(parser, default=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.setup(p)
        p.set_defaults(_run=command.run, _parser=parser)
    return parser


def _error(message: str) -> int:
    print(f"ittc: error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def _configure_logging(fmt: str = "text", level: str | None = None) -> None:
    """The library's warnings (a node failed, a node was blamed) as one line each, or one
    JSON object each (``--log-format json``); more with ``--log-level``."""
    logs.configure(
        fmt=fmt,
        level=level or "warning",
        text="ittc: %(levelname)s: %(message)s",
        loggers=("ittc",),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    _configure_logging()
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(None if argv is None else list(argv))
        except SystemExit as exc:  # argparse has printed usage and "ittc: error: ..."
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
        _configure_logging(args.log_format, args.log_level)
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
