"""How many refusals of callers that are not allowed get an audit line of their own.

Any holder of a certificate from the cluster CA can reach a node (monitoring probes
hold one). If such a caller could make the node write and fsync one audit line per
request, it could fill the disk and take the audit writer's time from allowed clients.
So each identity has a token bucket: ``burst`` refusals audited one by one, then one
more per ``1 / per_second`` seconds; refusals beyond that are *counted*, not written,
and one summary line per identity says how many there were, when (first and last),
from which peers, to which methods, and how many bytes they carried.

What an auditor keeps: every refusal is either its own line or counted in a summary
line for the same identity, written at most ``summary_seconds`` after the first refusal
it counts (and at a clean stop). What is lost for the counted ones: the exact time, peer
and hash of each request. Allowed clients are never limited here: every request they
send, signed or refused, has its own line.

Pure policy: no I/O, no clock of its own (``now`` is passed in, seconds), tested
without sockets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["RefusalLimiter", "Suppressed"]

#: Shown for the shared bucket used once ``max_identities`` identities are tracked.
OTHERS = "(other identities)"
#: Distinct peers a summary names (the count covers all).
MAX_PEERS = 8


@dataclass
class Suppressed:
    """Refusals of one identity that were counted instead of written."""

    identity: str | None
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    request_bytes: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    peers: list[str] = field(default_factory=list)

    def add(self, now: float, method: str, peer: str, size: int) -> None:
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        self.request_bytes += size
        self.methods[method] += 1
        if peer not in self.peers and len(self.peers) < MAX_PEERS:
            self.peers.append(peer)


@dataclass
class _Bucket:
    tokens: float
    updated: float
    suppressed: Suppressed | None = None


class RefusalLimiter:
    """Per-identity token buckets for audited refusals, and what was counted instead."""

    def __init__(
        self,
        *,
        burst: int = 10,
        per_second: float = 1.0,
        summary_seconds: float = 10.0,
        max_identities: int = 1024,
    ) -> None:
        if burst < 1 or per_second <= 0 or summary_seconds <= 0 or max_identities < 1:
            raise ValueError("burst, rate, summary period and table size must be positive")
        self.burst = burst
        self.per_second = per_second
        self.summary_seconds = summary_seconds
        self.max_identities = max_identities
        self._buckets: dict[str | None, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, identity: str | None, now: float) -> tuple[str | None, _Bucket]:
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self.max_identities:
                self._forget_idle(now)
            if len(self._buckets) >= self.max_identities:
                identity = OTHERS
                bucket = self._buckets.get(identity)
            if bucket is None:
                bucket = self._buckets[identity] = _Bucket(float(self.burst), now)
        # A clock that steps back refills nothing (and takes nothing away).
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
        bucket.updated = max(bucket.updated, now)
        return identity, bucket

    def _forget_idle(self, now: float) -> None:
        """Drop identities whose bucket has refilled and that have nothing counted."""
        for identity in list(self._buckets):
            bucket = self._buckets[identity]
            refilled = bucket.tokens + max(0.0, now - bucket.updated) * self.per_second
            if bucket.suppressed is None and refilled >= self.burst:
                del self._buckets[identity]

    def admit(self, identity: str | None, now: float, *, method: str, peer: str, size: int) -> bool:
        """True: audit this refusal on its own line. False: it was counted instead."""
        key, bucket = self._bucket(identity, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        if bucket.suppressed is None:
            bucket.suppressed = Suppressed(key)
        bucket.suppressed.add(now, method, peer, size)
        return False

    def due(self, now: float) -> list[Suppressed]:
        """Summaries whose first counted refusal is ``summary_seconds`` old or more (they
        are handed over once: counting starts again from zero)."""
        out = []
        for bucket in self._buckets.values():
            counted = bucket.suppressed
            if counted is not None and now - counted.first >= self.summary_seconds:
                out.append(counted)
                bucket.suppressed = None
        return out

    def drain(self) -> list[Suppressed]:
        """Every summary not handed over yet (at a clean stop)."""
        out = [b.suppressed for b in self._buckets.values() if b.suppressed is not None]
        for bucket in self._buckets.values():
            bucket.suppressed = None
        return out
