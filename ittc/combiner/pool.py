"""Which node to ask next, and what the combiner remembers about each node.

A pure policy with an injected clock (monotonic seconds): no sockets, no tasks, so it is
tested on its own. The signing round tells it what happened (asked, answered, failed,
cleared, lied, did not prove) and asks it whom to ask and how long to wait before
asking another (the hedge delay).

* A node that fails (an RPC error, no answer in time) is *backed off*: not asked again
  for 0.25 s, doubling per outage up to :data:`MAX_BACKOFF`, so a node that comes back
  is used again within seconds. Its back-off is reset only when shares it sent were
  found good (:meth:`NodePool.cleared`), never by an answer alone: a liar whose answers
  fail to combine keeps backing off.
* A node that lied (a wrong share proven wrong) is *quarantined*: 5 s, doubling per
  offence, at most :data:`MAX_QUARANTINE`.
* A node that did not prove a share that failed to combine is *suspected*: left out of
  that batch's retry at once, and quarantined when it happens again within
  :data:`SUSPECT_MEMORY`.
* A node whose round trips are markedly slower than the others' lately is asked after
  them, and hedged around (:meth:`NodePool.hedge_delay` follows the median node).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ittc.errors import NodeError, NodeMisbehaved, NodeUnavailable

__all__ = [
    "MAX_BACKOFF",
    "MAX_QUARANTINE",
    "SUSPECT_MEMORY",
    "NodeEvent",
    "NodePool",
    "NodeState",
]

#: A failing or silent node is retried after at most this long (seconds).
MAX_BACKOFF = 5.0
#: First back-off step (seconds).
FIRST_BACKOFF = 0.25
#: Round trips older than this say nothing about a node's speed now (seconds).
LATENCY_MEMORY = 5.0
#: First quarantine of a liar (seconds); doubles per offence.
FIRST_QUARANTINE = 5.0
#: Longest quarantine (seconds).
MAX_QUARANTINE = 600.0
#: Two failures to prove within this long quarantine a node (seconds).
SUSPECT_MEMORY = 60.0
#: Hedge delay when no round trip has been measured yet (seconds).
DEFAULT_LATENCY = 0.25
#: Smallest hedge delay (seconds).
MIN_HEDGE = 0.05


@dataclass(frozen=True)
class NodeEvent:
    """Something the combiner saw a node do, for listeners (logging, metrics, tests).

    ``kind`` is one of ``asked``, ``answered``, ``failed``, ``slow``, ``cleared``,
    ``lied``, ``suspected``; ``items`` counts the items asked or answered.
    """

    kind: str
    node: int
    detail: str = ""
    items: int = 0


@dataclass
class NodeState:
    """What the combiner knows about one node."""

    index: int
    #: Items asked of it and not yet answered.
    inflight: int = 0
    #: Not asked before this time after a failure (0: healthy).
    down_until: float = 0.0
    backoff: float = 0.0
    last_failure: NodeError | None = None
    #: Quarantined for lying (or failing to prove twice) until this time.
    quarantined_until: float = 0.0
    offences: int = 0
    #: When it last failed to prove a share that did not combine.
    suspected_at: float | None = None
    #: EWMA of its well-formed round trips (seconds) and when it was last measured.
    latency: float = 0.0
    latency_at: float = 0.0


Listener = Callable[[NodeEvent], None]


class NodePool:
    """Ranking, back-off, quarantine and hedge delay for the nodes ``indices``."""

    def __init__(
        self,
        indices: Iterable[int],
        *,
        node_timeout: float,
        hedge_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nodes = {index: NodeState(index) for index in sorted(indices)}
        self.node_timeout = node_timeout
        self.hedge_after = hedge_after
        self.clock = clock
        self._rotation = 0
        self._listeners: list[Listener] = []

    # -- observing ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every :class:`NodeEvent` from now on."""
        self._listeners.append(listener)

    def _emit(self, kind: str, node: int, detail: str = "", items: int = 0) -> None:
        event = NodeEvent(kind, node, detail, items)
        for listener in self._listeners:
            listener(event)

    @property
    def indices(self) -> list[int]:
        return list(self._nodes)

    def state(self, index: int) -> NodeState:
        return self._nodes[index]

    # -- choosing ----------------------------------------------------------------------

    def typical_latency(self) -> float:
        """Median round trip of the nodes that answered lately (0 when none has)."""
        now = self.clock()
        known = sorted(
            s.latency
            for s in self._nodes.values()
            if s.latency > 0 and now - s.latency_at <= LATENCY_MEMORY
        )
        return known[len(known) // 2] if known else 0.0

    def hedge_delay(self) -> float:
        """How long to wait for a node before asking another: a few typical round trips
        (the median over all nodes, so one slow node does not set its own timeout)."""
        if self.hedge_after is not None:
            return self.hedge_after
        typical = self.typical_latency() or DEFAULT_LATENCY
        return min(max(4 * typical, MIN_HEDGE), self.node_timeout)

    def rotate(self) -> None:
        """Move the tie-break between equally good nodes one place (once per batch), so
        the work spreads over all ``n`` nodes."""
        self._rotation = (self._rotation + 1) % max(len(self._nodes), 1)

    def ranked(self, exclude: Iterable[int] = ()) -> list[int]:
        """Nodes to ask next, best first: healthy (least busy, rotating; markedly slow
        ones after the others), then backing off, then quarantined."""
        now = self.clock()
        skip = set(exclude)
        n = len(self._nodes)
        slow = 3 * self.typical_latency()

        def rank(s: NodeState) -> tuple[int, int, int]:
            if s.quarantined_until > now:
                state = 3
            elif s.down_until > now:
                state = 2
            else:
                recent = now - s.latency_at <= LATENCY_MEMORY
                state = 1 if slow and recent and s.latency > slow else 0
            return (state, s.inflight, (s.index - self._rotation) % n)

        return [s.index for s in sorted(self._nodes.values(), key=rank) if s.index not in skip]

    def usable(self, index: int) -> bool:
        """Neither backing off nor quarantined."""
        s, now = self._nodes[index], self.clock()
        return s.down_until <= now and s.quarantined_until <= now

    def reasons(self) -> dict[int, NodeError]:
        """Why each node that is backing off or quarantined is not asked now."""
        now = self.clock()
        out: dict[int, NodeError] = {}
        for s in self._nodes.values():
            if s.quarantined_until > now:
                out[s.index] = NodeMisbehaved(s.index, "quarantined after sending bad shares")
            elif s.down_until > now:
                last = s.last_failure
                detail = f": {last.reason}" if last is not None else ""
                out[s.index] = NodeUnavailable(
                    s.index,
                    f"unreachable or failing (backing off){detail}",
                    last.code if last is not None else None,
                )
        return out

    # -- what happened -----------------------------------------------------------------

    def asked(self, index: int, items: int) -> None:
        self._nodes[index].inflight += items
        self._emit("asked", index, items=items)

    def returned(self, index: int, items: int) -> None:
        """The RPC for ``items`` items ended, whatever its outcome."""
        self._nodes[index].inflight -= items

    def answered(self, index: int, elapsed: float, items: int) -> None:
        """A well-formed answer came back after ``elapsed`` seconds (not yet checked)."""
        s, now = self._nodes[index], self.clock()
        stale = now - s.latency_at > LATENCY_MEMORY
        s.latency = elapsed if stale else 0.8 * s.latency + 0.2 * elapsed
        s.latency_at = now
        self._emit("answered", index, items=items)

    def cleared(self, index: int) -> None:
        """Shares from this node made a valid signature (or passed their proofs)."""
        s = self._nodes[index]
        s.down_until = 0.0
        s.backoff = 0.0
        s.last_failure = None
        self._emit("cleared", index)

    def failed(self, error: NodeError) -> float:
        """An RPC failed or timed out: back off (one step per outage). Returns the delay."""
        s = self._nodes[error.node]
        s.last_failure = error
        self._back_off(s)
        self._emit("failed", error.node, error.reason)
        return s.backoff

    def slow(self, index: int) -> float:
        """Hedged around and still not answered when the batch was done."""
        s = self._nodes[index]
        self._back_off(s)
        self._emit("slow", index)
        return s.backoff

    def _back_off(self, s: NodeState) -> None:
        # One step per outage: the many RPCs in flight when a node died (or went silent)
        # fail together and must not push its backoff to the maximum at once.
        now = self.clock()
        if s.down_until <= now:
            s.backoff = min(max(s.backoff * 2, FIRST_BACKOFF), MAX_BACKOFF)
            s.down_until = now + s.backoff

    def lied(self, index: int, reason: str) -> float:
        """The node sent shares proven wrong: quarantine it. Returns the quarantine."""
        s = self._nodes[index]
        s.offences += 1
        quarantine = min(FIRST_QUARANTINE * 2.0 ** (s.offences - 1), MAX_QUARANTINE)
        s.quarantined_until = self.clock() + quarantine
        self._emit("lied", index, reason)
        return quarantine

    def suspected(self, index: int, reason: str) -> float:
        """The node did not prove a share that failed to combine. The caller leaves it out
        of the retry; a second time within :data:`SUSPECT_MEMORY` quarantines it.
        Returns the quarantine (0 the first time)."""
        s, now = self._nodes[index], self.clock()
        repeat = s.suspected_at is not None and now - s.suspected_at <= SUSPECT_MEMORY
        s.suspected_at = now
        self._emit("suspected", index, reason)
        if not repeat:
            return 0.0
        s.offences += 1
        quarantine = min(FIRST_QUARANTINE * 2.0 ** (s.offences - 1), MAX_QUARANTINE)
        s.quarantined_until = now + quarantine
        return quarantine
