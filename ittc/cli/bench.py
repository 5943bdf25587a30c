"""``ittc bench NAME [options]``: the benchmarks, from an installed ittc.

The wheel ships the ``benchmarks`` package beside ``ittc`` and ``ittc_node``; this command
runs one of them exactly as ``python -m benchmarks.NAME`` does in the source tree, with
the options after NAME (``ittc bench micro --help`` lists them). Reports go to
``benchmarks/results`` and benchmark clusters to ``benchmarks/.clusters``, both under the
current directory unless ``--out`` / ``--cache`` say otherwise. The chart and the profile
need the ``bench`` extra (``pip install 'ittc[bench]'``: matplotlib, py-spy).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import cast

from ittc.cli.command import EXIT_ERROR, Command
from ittc.errors import IttcError

__all__ = ["BENCH", "BENCHMARKS"]

#: NAME: (module whose ``main(argv)`` runs it, what it measures).
BENCHMARKS: dict[str, tuple[str, str]] = {
    "micro": ("benchmarks.micro", "the scheme's operations one at a time, in one process"),
    "cluster": (
        "benchmarks.cluster.cli",
        "a five-node cluster of real node processes under closed-loop load",
    ),
    "flood": (
        "benchmarks.flood",
        "an allowed client's latency while a caller that is not allowed floods a node",
    ),
    "reshare": ("benchmarks.reshare", "what epochs cost: share cost and size, a refresh"),
    "dodge": ("benchmarks.dodge", "signing while a node lies, then dodges its proof"),
    "profile": ("benchmarks.profile", "where a lone signature's CPU goes (needs py-spy)"),
}


def _setup(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "Run one of ittc's benchmarks, as python -m benchmarks.NAME does in the source tree, "
        "with the options after NAME (ittc bench micro --help lists them). Reports go to "
        "benchmarks/results and benchmark clusters to benchmarks/.clusters under the current "
        "folder unless --out / --cache say otherwise. The chart and the profile need the "
        "bench extra (pip install 'ittc[bench]': matplotlib, py-spy)."
    )
    p.add_argument(
        "benchmark",
        choices=sorted(BENCHMARKS),
        help="which benchmark: "
        + "; ".join(f"{name}: {what}" for name, (_, what) in BENCHMARKS.items()),
    )
    p.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="the benchmark's own options (ittc bench NAME --help lists them)",
    )


def _entry(name: str) -> Callable[[Sequence[str]], int]:
    module_name = BENCHMARKS[name][0]
    try:
        package = importlib.import_module("benchmarks")
    except ImportError as exc:
        raise IttcError(
            f"the benchmarks are not installed with this ittc ({exc}); "
            "install ittc from its wheel or source tree"
        ) from None
    if not getattr(package, "ITTC_BENCHMARKS", False):
        where = getattr(package, "__file__", None) or "a namespace package"
        raise IttcError(
            f"the module named benchmarks found first is not ittc's ({where}); "
            "run ittc bench from another folder or environment"
        )
    module = importlib.import_module(module_name)
    return cast(Callable[[Sequence[str]], int], module.main)


def _run(args: argparse.Namespace) -> int:
    main = _entry(args.benchmark)
    try:
        code = main(list(args.options))
    except SystemExit as exc:  # the benchmark's own argparse: --help, or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
    return int(code or 0)


BENCH = Command(
    "bench",
    "run a benchmark (micro, cluster, flood, reshare, dodge, profile) and write its report",
    _setup,
    _run,
)
