"""Combining shares and checking proofs off the event loop, on every core.

gmpy2 releases the GIL in these threads, so a batch's combines and proof checks run in
parallel and the event loop keeps answering. Only a handful of exact-``k`` combines (a
few hundred microseconds each, never a search) run inline.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ittc.errors import CombineError, InvalidShare, IttcError, NotEnoughShares
from ittc.scheme.combine import CombineResult, combine, combine_robust
from ittc.scheme.ct import release_gil
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare, verify_share

__all__ = ["Combiner", "Job", "Outcome"]

#: One item to combine: its representative and every share gathered for it.
Job = tuple[int, Sequence[SignatureShare]]
#: A signature (with who made it and who was found bad), or why there is none.
Outcome = CombineResult | NotEnoughShares

#: How long a robust combine may spend naming liars after it has a signature (seconds).
BLAME_SECONDS = 0.5
#: Up to this many exact-k combines run inline on the event loop.
_INLINE_JOBS = 8

T = TypeVar("T")
R = TypeVar("R")


class Combiner:
    """Combines for one key; owns a thread pool (one thread per core) once needed."""

    def __init__(self, params: PublicParams) -> None:
        self.params = params
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()

    def close(self) -> None:
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _spread(self, work: list[T], fn: Callable[[T], R]) -> list[R]:
        """``[fn(w) for w in work]`` on the pool, in one chunk per core."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                os.cpu_count() or 1, "ittc-combine", initializer=release_gil
            )
        loop = asyncio.get_running_loop()
        parts = min(len(work), os.cpu_count() or 1)
        size = -(-len(work) // parts)
        chunks = [work[i : i + size] for i in range(0, len(work), size)]

        def run(chunk: list[T]) -> list[R]:
            return [fn(w) for w in chunk]

        done = await asyncio.gather(*(loop.run_in_executor(self._pool, run, c) for c in chunks))
        return [r for part in done for r in part]

    async def combine(
        self, jobs: Sequence[Job], *, use_proofs: bool | None, deadline: float | None = None
    ) -> list[Outcome]:
        """An outcome per job. Exact-``k`` jobs without proofs are combined directly (and a
        few of them inline); anything else is a robust combine on the pool."""
        if not jobs:
            return []
        k = self.params.k
        plain = use_proofs is not True and all(
            len(shares) == k and all(s.proof is None for s in shares) for _, shares in jobs
        )
        if plain:
            if len(jobs) < _INLINE_JOBS:
                return [self._exact(job) for job in jobs]
            return await self._spread(list(jobs), self._exact)
        return await self._spread(list(jobs), lambda job: self._robust(job, use_proofs, deadline))

    def _exact(self, job: Job) -> Outcome:
        x, shares = job
        try:
            signature = combine(self.params, x, shares)
        except CombineError:
            return NotEnoughShares(self.params.k, 0)
        except InvalidShare as exc:
            bad = {exc.index: exc.reason} if exc.index is not None else {}
            return NotEnoughShares(self.params.k, self.params.k - 1, bad)
        return CombineResult(signature, tuple(s.index for s in shares))

    def _robust(self, job: Job, use_proofs: bool | None, deadline: float | None) -> Outcome:
        """A robust combine in a pool thread, stopped at ``deadline`` (monotonic) or when
        the client closes, so a search never outlives the call that needed it."""
        x, shares = job
        try:
            return combine_robust(
                self.params,
                x,
                shares,
                use_proofs=use_proofs,
                deadline=deadline,
                blame_deadline=self._blame_deadline(deadline),
                should_stop=self._stopping.is_set,
            )
        except NotEnoughShares as exc:  # SearchStopped included: no signature in time
            return exc

    @staticmethod
    def _blame_deadline(deadline: float | None) -> float:
        """Once a signature is in hand, clearing suspects may take only a little longer:
        the caller is waiting, and unsettled suspects are reported as ambiguous."""
        soon = time.monotonic() + BLAME_SECONDS
        return soon if deadline is None else min(deadline, soon)

    async def verify(self, x: int, shares: Sequence[SignatureShare]) -> dict[int, str]:
        """Check each share's proof against ``x``; the nodes whose proof fails, and why."""

        def check(share: SignatureShare) -> tuple[int, str | None]:
            try:
                verify_share(self.params, x, share)
            except IttcError as exc:
                return share.index, getattr(exc, "reason", str(exc))
            return share.index, None

        verdicts = await self._spread(list(shares), check)
        return {index: reason for index, reason in verdicts if reason is not None}
