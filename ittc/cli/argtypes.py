"""Argument types: each number or address the command line takes is checked by argparse,
so a bad value is refused before anything runs, by a message that names the flag
(``ittc: error: sign: argument --deadline: '0' is not a positive number of seconds``).

Each function takes the text as typed and returns the value or raises
``argparse.ArgumentTypeError``; argparse prefixes the flag.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ittc.config import parse_address

__all__ = [
    "address",
    "integer",
    "port",
    "seconds",
]

#: The longest wait any command takes (a day): longer is a typo, not a plan.
MAX_SECONDS = 86400.0


def seconds(text: str) -> float:
    """A finite number of seconds above 0 (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_SECONDS:g} seconds")
    return value


def integer(lo: int, hi: int, shown: str = "") -> Callable[[str], int]:
    """An integer in ``lo..hi`` (decimal, or hexadecimal with 0x); ``shown`` is how the
    message writes ``hi`` (``2^159-1`` reads better than its 48 digits)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not in {lo}..{shown or hi}")
        return value

    parse.__name__ = "integer"
    return parse


port = integer(1, 65535)
port.__doc__ = "A TCP port, 1..65535."


def address(text: str) -> str:
    """``host:port`` or ``[v6]:port``, the port in 1..65535."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
