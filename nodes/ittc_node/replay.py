"""Request ids a node has accepted recently, so a captured request cannot be replayed.

A request is fresh for ``window`` seconds either side of the node's clock, edges
included; an id is remembered for ``2 * window`` after it was accepted, edge included
too, which outlives any fresh copy of the request: one accepted at ``t`` with the
latest fresh timestamp ``t + window`` stays fresh until ``t + 2 * window`` exactly, and
its id is still remembered at that instant. Ids are one namespace for all callers (a
copy of one client's request is refused whoever sends it), but memory is bounded per
identity: when one identity holds ``max_per_identity`` ids that are still live, *its*
new requests are refused (RESOURCE_EXHAUSTED) rather than an id forgotten and replayed,
and every other identity still has its own room.

After a restart the memory is rebuilt from the audit log (:meth:`ReplayCache.restore`):
every id whose shares were computed and whose request may still be fresh.
"""

from __future__ import annotations

import collections

__all__ = ["DEFAULT_MAX_PER_IDENTITY", "ReplayCache"]

#: About 250 bytes each: 300 000 ids is ~75 MB per identity, and 1250 requests/s per
#: identity at the default window.
DEFAULT_MAX_PER_IDENTITY = 300_000


class ReplayCache:
    """Seen request ids with their expiry times and who spent them, pruned in order of
    insertion."""

    def __init__(
        self, window_seconds: float, max_per_identity: int = DEFAULT_MAX_PER_IDENTITY
    ) -> None:
        if window_seconds <= 0 or max_per_identity < 1:
            raise ValueError("window and size must be positive")
        self.window = window_seconds
        self.retention = 2.0 * window_seconds
        self.max_per_identity = max_per_identity
        self._expiry: dict[str, tuple[float, str | None]] = {}
        self._count: collections.Counter[str | None] = collections.Counter()
        self._order: collections.deque[tuple[float, str]] = collections.deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def held_by(self, identity: str | None) -> int:
        """Live-or-unpruned ids ``identity`` spent."""
        return self._count[identity]

    def _prune(self, now: float) -> None:
        # Insertion order is expiry order while the clock runs forward; if it ever steps
        # back, pruning stops early and ids are kept longer, never forgotten early.
        order, expiry = self._order, self._expiry
        while order and order[0][0] < now:
            _, request_id = order.popleft()
            entry = expiry.get(request_id)
            if entry is not None and entry[0] < now:
                del expiry[request_id]
                self._forget_count(entry[1])

    def _forget_count(self, identity: str | None) -> None:
        self._count[identity] -= 1
        if self._count[identity] <= 0:
            del self._count[identity]

    def seen(self, request_id: str, now: float) -> bool:
        """Whether ``request_id`` was accepted within the retention period (edge included),
        by anyone."""
        self._prune(now)
        entry = self._expiry.get(request_id)
        return entry is not None and entry[0] >= now

    def full(self, now: float, identity: str | None = None) -> bool:
        """Whether ``identity`` may not spend one more id (after pruning expired ones)."""
        self._prune(now)
        return self._count[identity] >= self.max_per_identity

    def remember(self, request_id: str, now: float, identity: str | None = None) -> None:
        """Record ``request_id`` as spent by ``identity``. Call :meth:`seen` and
        :meth:`full` first."""
        self._put(request_id, now + self.retention, identity)

    def restore(self, request_id: str, timestamp_ms: int, identity: str | None) -> None:
        """Remember again, after a restart, an id spent by an earlier run (from the audit
        log): until its date plus twice the window. Every copy of the request is stale one
        window after its date; the second window keeps the id through a clock stepped
        back by up to a window, as :meth:`remember`'s retention does."""
        expires = timestamp_ms / 1000.0 + self.retention
        entry = self._expiry.get(request_id)
        if entry is None or entry[0] < expires:
            self._put(request_id, expires, identity)

    def _put(self, request_id: str, expires: float, identity: str | None) -> None:
        previous = self._expiry.get(request_id)
        if previous is not None:
            self._forget_count(previous[1])
        self._expiry[request_id] = (expires, identity)
        self._count[identity] += 1
        self._order.append((expires, request_id))
