"""The ``ittc`` command line (the ``ittc`` console script and ``python -m ittc``).

gRPC's C core logs its own view of every failed connection to stderr (thirty lines for
one bad client key); the command line says what is wrong itself, in one line. So it
silences the C core unless the user asked for its logs: ``GRPC_VERBOSITY`` and
``GRPC_TRACE`` are given defaults before anything imports gRPC, and a value the user set
is left alone (``GRPC_VERBOSITY=debug ittc ...`` shows everything).
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
os.environ.setdefault("GRPC_TRACE", "")

from ittc.cli.main import COMMANDS, build_parser, main  # noqa: E402 - after the defaults

__all__ = ["COMMANDS", "build_parser", "main"]
