"""Request ids a node has accepted recently, so a captured request cannot be replayed.

A request is fresh for ``window`` seconds either side of the node's clock, edges
included; an id is remembered for ``2 * window`` after it was accepted, edge included
too, which outlives any fresh copy of the request: one accepted at ``t`` with the
latest fresh timestamp ``t + window`` stays fresh until ``t + 2 * window`` exactly, and
its id is still remembered at that instant. Memory is bounded: when the cache is full
of ids that are still live, the node refuses new requests (RESOURCE_EXHAUSTED) rather
than forget one and let it be replayed.
"""

from __future__ import annotations

import collections

__all__ = ["DEFAULT_MAX_ENTRIES", "ReplayCache"]

#: About 250 bytes each: 300 000 ids is ~75 MB, and 1250 requests/s at the default window.
DEFAULT_MAX_ENTRIES = 300_000


class ReplayCache:
    """Seen request ids with their expiry times, pruned in order of insertion."""

    def __init__(self, window_seconds: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if window_seconds <= 0 or max_entries < 1:
            raise ValueError("window and size must be positive")
        self.retention = 2.0 * window_seconds
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._order: collections.deque[tuple[float, str]] = collections.deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def _prune(self, now: float) -> None:
        # Insertion order is expiry order while the clock runs forward; if it ever steps
        # back, pruning stops early and ids are kept longer, never forgotten early.
        order, expiry = self._order, self._expiry
        while order and order[0][0] < now:
            _, request_id = order.popleft()
            if expiry.get(request_id, now + 1) < now:
                del expiry[request_id]

    def seen(self, request_id: str, now: float) -> bool:
        """Whether ``request_id`` was accepted within the retention period (edge included)."""
        self._prune(now)
        expires = self._expiry.get(request_id)
        return expires is not None and expires >= now

    def full(self, now: float) -> bool:
        """Whether one more id would exceed the bound (after pruning expired ones)."""
        self._prune(now)
        return len(self._expiry) >= self.max_entries

    def remember(self, request_id: str, now: float) -> None:
        """Record ``request_id`` as used. Call :meth:`seen` and :meth:`full` first."""
        expires = now + self.retention
        self._expiry[request_id] = expires
        self._order.append((expires, request_id))
