"""What every signing round of one client shares, and what the repair steps see of a round."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ittc.combiner.batcher import Pending
from ittc.combiner.combining import Combiner, Outcome
from ittc.combiner.options import Settings
from ittc.combiner.pool import NodePool
from ittc.combiner.transport import NodeLink
from ittc.errors import NodeError
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare

__all__ = ["Answers", "ClientStats", "Round", "RoundContext"]


@dataclass
class ClientStats:
    """Counters a pipeline can export: what the client did and whom it blamed."""

    signatures: int = 0
    batches: int = 0
    rpcs: int = 0
    #: Items sent to nodes in those RPCs: each a share a node computes if it answers.
    shares_asked: int = 0
    hedges: int = 0
    proof_rounds: int = 0
    node_failures: collections.Counter[int] = field(default_factory=collections.Counter)
    #: Node index -> times its shares were proven wrong.
    blamed: collections.Counter[int] = field(default_factory=collections.Counter)
    #: Node index -> times it did not prove a share that failed to combine.
    suspected: collections.Counter[int] = field(default_factory=collections.Counter)


@dataclass
class RoundContext:
    """What every round of one client shares."""

    params: PublicParams
    settings: Settings
    pool: NodePool
    links: Mapping[int, NodeLink]
    combiner: Combiner
    stats: ClientStats


Answers = dict[int, list[SignatureShare]]


class Round(Protocol):
    """A signing round as the repair steps use it (:class:`~ittc.combiner.round.SigningRound`)."""

    ctx: RoundContext
    end: float
    k: int
    named: dict[int, NodeError]

    async def ask(
        self, index: int, items: Sequence[Pending], with_proofs: bool
    ) -> list[SignatureShare]: ...

    def clear(self, outcomes: Sequence[Outcome]) -> None: ...
