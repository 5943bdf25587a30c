"""The combiner's options: one declaration for :class:`~ittc.combiner.ClusterClient` and
:class:`~ittc.combiner.SyncClusterClient`.

Both take these as keyword arguments (typed with ``Unpack[ClientOptions]``, so a type
checker catches ``deadlin=5``); :class:`Settings` holds them checked, with defaults.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypedDict

from ittc.errors import ParameterError

__all__ = ["ClientOptions", "Mode", "Proofs", "Settings"]

Mode = Literal["exact", "all"]
Proofs = Literal["on-failure", "always"]

#: Largest batch the combiner sends in one RPC (nodes cap it too).
MAX_BATCH = 4096


class ClientOptions(TypedDict, total=False):
    """Keyword options of the combiner clients (every one optional).

    ``cert``, ``key``: the client identity (default: the cluster file's ``[client]``).
    ``mode``: ``"exact"`` (default) asks exactly ``k`` nodes per batch, the least busy,
    rotating over all ``n``, hedging to another when one is slow or fails; ``"all"`` asks
    all ``n`` and uses the first ``k`` answers (lowest latency, ``n/k`` times the work).
    ``proofs``: ``"on-failure"`` (default) combines without proofs and asks for them only
    when a signature fails its check; ``"always"`` asks every node to prove every share.
    ``deadline``: seconds a call may take in all (10). ``node_timeout``: seconds one RPC
    may take (5). ``hedge_after``: seconds before asking another node (default: adaptive,
    four median round trips). ``max_batch``: items per RPC (64).
    ``max_inflight_batches``: batches in flight at once (default ``max(4, 2n)``).
    ``clock``: wall clock for request timestamps (``time.time``; tests inject one).
    """

    cert: Path | str | None
    key: Path | str | None
    mode: Mode
    proofs: Proofs
    deadline: float
    node_timeout: float
    hedge_after: float | None
    max_batch: int
    max_inflight_batches: int | None
    clock: Callable[[], float]


@dataclass(frozen=True)
class Settings:
    """:class:`ClientOptions` checked, with every default filled in."""

    cert: Path | None = None
    key: Path | None = None
    mode: Mode = "exact"
    proofs: Proofs = "on-failure"
    deadline: float = 10.0
    node_timeout: float = 5.0
    hedge_after: float | None = None
    max_batch: int = 64
    max_inflight_batches: int | None = None
    clock: Callable[[], float] = time.time

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; the options are {sorted(known)}")
        values = dict(options)
        for name in ("cert", "key"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "all"):
            raise ParameterError(f"mode must be 'exact' or 'all', not {self.mode!r}")
        if self.proofs not in ("on-failure", "always"):
            raise ParameterError(f"proofs must be 'on-failure' or 'always', not {self.proofs!r}")
        _seconds("deadline", self.deadline)
        _seconds("node_timeout", self.node_timeout)
        if self.hedge_after is not None:
            _seconds("hedge_after", self.hedge_after)
        _count("max_batch", self.max_batch, MAX_BATCH)
        if self.max_inflight_batches is not None:
            _count("max_inflight_batches", self.max_inflight_batches, 1 << 16)
        if not callable(self.clock):
            raise ParameterError("clock must be a callable returning seconds")


def _seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"{name} must be a number of seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(f"{name} must be a finite number of seconds above 0, not {value!r}")


def _count(name: str, value: object, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ParameterError(f"{name} must be an integer in 1..{most}, not {value!r}")


def check_options_match() -> None:
    """The TypedDict and the dataclass name the same options (tests call this)."""
    declared = set(ClientOptions.__annotations__)
    settings = {f.name for f in fields(Settings)}
    if declared != settings:
        raise AssertionError(f"ClientOptions and Settings differ: {sorted(declared ^ settings)}")
