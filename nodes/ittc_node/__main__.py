"""``python -m ittc_node --config node.toml``: run one node until SIGTERM or Ctrl-C.

The passphrase is never taken from the command line (it would show in ``ps`` and shell
history): the config names a file or an environment variable, or the node asks on its
terminal.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from ittc.version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ittc_node",
        description="Run one ittc node daemon (one key share, one site).",
    )
    parser.add_argument("--config", required=True, type=pathlib.Path, help="the node's node.toml")
    parser.add_argument("--version", action="version", version=f"ittc-node {__version__}")
    args = parser.parse_args(argv)
    from ittc_node.daemon import run  # imported late: --help stays fast

    return run(args.config)


if __name__ == "__main__":  # spawned worker processes import this module without running it
    sys.exit(main())
