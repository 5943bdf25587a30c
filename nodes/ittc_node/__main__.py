"""``python -m ittc_node --config node.toml``: run one node until SIGTERM or Ctrl-C.

The passphrase is never taken from the command line (it would show in ``ps`` and shell
history): the config names a file or an environment variable, or the node asks on its
terminal.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from ittc.logs import FORMATS, LEVELS
from ittc.version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ittc_node",
        description="Run one ittc node daemon (one key share, one site).",
    )
    parser.add_argument("--config", required=True, type=pathlib.Path, help="the node's node.toml")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="log records as text lines or as one JSON object per line (text)",
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, default="info", help="the least severe records logged"
    )
    parser.add_argument("--version", action="version", version=f"ittc-node {__version__}")
    args = parser.parse_args(argv)
    # gRPC's C core logs every failed handshake its own way; the node says what matters
    # itself. Silenced unless asked for (a value set in the environment is kept).
    os.environ.setdefault("GRPC_VERBOSITY", "DEBUG" if args.log_level == "debug" else "NONE")
    os.environ.setdefault("GRPC_TRACE", "")
    from ittc_node.daemon import run  # imported late: --help stays fast, gRPC configured

    return run(args.config, log_format=args.log_format, log_level=args.log_level)


if __name__ == "__main__":  # spawned worker processes import this module without running it
    sys.exit(main())
