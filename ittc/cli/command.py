"""What every subcommand is made of, and the exit codes they share.

A subcommand is a :class:`Command`: a name, a one-line help, a function that adds its
arguments to an ``argparse`` parser, and a function that runs it and returns the exit
code. :mod:`ittc.cli.main` lists every command in one table; nothing registers itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Command",
    "add_log_options",
    "say",
    "warn_loudly",
]

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


def add_log_options(p: argparse.ArgumentParser, *, default: bool) -> None:
    """``--log-format`` and ``--log-level``. On ``ittc`` itself with defaults; repeated on a
    subcommand (``ittc node``) without them, so that either position works."""
    from ittc.logs import FORMATS, LEVELS

    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text" if default else argparse.SUPPRESS,
        help="log records as text lines or as one JSON object per line (text)",
    )
    p.add_argument(
        "--log-level",
        choices=LEVELS,
        default=None if default else argparse.SUPPRESS,
        help="the least severe records logged (warning; a node: info)",
    )


def say(message: str) -> None:
    print(f"ittc: {message}", file=sys.stderr, flush=True)


def warn_loudly(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print("\n" + "!" * 78, file=sys.stderr)
        print(f"WARNING: {warning}", file=sys.stderr)
        print("!" * 78 + "\n", file=sys.stderr, flush=True)
