"""The ``ittc`` command line (the ``ittc`` console script and ``python -m ittc``)."""

from ittc.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
