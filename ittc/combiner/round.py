"""One batch through the cluster, from the first RPC to a signature or a typed error.

1. **Gather**: ask ``k`` nodes (the pool's best; all ``n`` in ``mode="all"``) for their
   shares of every item; a node that fails is replaced at once, one that is slow is
   hedged around after the pool's hedge delay; the first ``k`` answers win.
2. **Combine** each item optimistically from those ``k`` shares and check ``y^e = x``.
   Nodes whose shares made valid signatures are cleared (their back-off reset).
3. If an item failed, **find who lied**:

   * keys with sound proofs (safe primes): the ``k`` nodes prove their share of one
     failed item. Shares are deterministic, so a proven share that differs from the one
     sent is proof of lying, as is a proof that fails. A node that refuses or does not
     answer within a grace period (a hedge delay, or as long again as the first proof
     took; never the node timeout) is *suspected* and left out of the retry; if every
     other share is proven correct, its share is the one that broke the signature and it
     is named a liar.
   * split keys (no sound proofs): every reachable node is asked for shares of the
     failed items, and a robust combine over all shares gathered (first answers kept
     beside second ones, so a node that answers differently is caught) finds a valid
     ``k``-subset and names the shares that do not fit.

4. **Retry** the failed items through the other nodes, at most ``n - k`` times.

Liars are quarantined (:meth:`NodePool.lied`), suspects left out and quarantined on a
repeat (:meth:`NodePool.suspected`). Never is a wrong signature returned: every
signature passed ``y^e = x`` in the scheme layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from ittc.combiner.batcher import Pending
from ittc.combiner.combining import Outcome
from ittc.combiner.context import Answers, RoundContext
from ittc.combiner.repair import find_liars, repair_by_subsets
from ittc.errors import (
    IttcError,
    NodeError,
    NodeMisbehaved,
    NodeUnavailable,
    SigningError,
)
from ittc.scheme.combine import CombineResult
from ittc.scheme.proofs import SignatureShare

__all__ = ["SigningRound"]

log = logging.getLogger("ittc.combiner")


class SigningRound:
    """Signs one batch; ``end`` is the monotonic time by which it must be done."""

    def __init__(self, ctx: RoundContext, batch: Sequence[Pending], end: float) -> None:
        self.ctx = ctx
        self.batch = list(batch)
        self.end = end
        self.k = ctx.params.k
        #: Why nodes were left out during this round (liars, suspects, failures).
        self.named: dict[int, NodeError] = {}
        self._blamed: set[int] = set()

    async def run(self) -> list[bytes | IttcError]:
        results = await self._sign(list(range(len(self.batch))), frozenset(), 0)
        return [results[pos] for pos in range(len(self.batch))]

    # -- steps -------------------------------------------------------------------------

    def _timeout(self) -> float:
        return max(min(self.ctx.settings.node_timeout, self.end - time.monotonic()), 0.001)

    async def ask(
        self, index: int, items: Sequence[Pending], with_proofs: bool
    ) -> list[SignatureShare]:
        ctx = self.ctx
        ctx.pool.asked(index, len(items))
        ctx.stats.rpcs += 1
        ctx.stats.shares_asked += len(items)
        started = time.monotonic()
        try:
            shares = await ctx.links[index].sign(
                [p.item for p in items], with_proofs=with_proofs, timeout=self._timeout()
            )
        except NodeMisbehaved as exc:
            self._lied(index, exc.reason)
            raise
        except NodeError as exc:
            ctx.stats.node_failures[index] += 1
            delay = ctx.pool.failed(exc)
            log.warning("node %d failed: %s (retry in %.2f s)", index, exc.reason, delay)
            self.named[index] = exc
            raise
        finally:
            ctx.pool.returned(index, len(items))
        ctx.pool.answered(index, time.monotonic() - started, len(items))
        return shares

    def _lied(self, index: int, reason: str) -> None:
        """Blame ``index`` once per round, however many of its answers were wrong."""
        if index in self._blamed:
            return
        self._blamed.add(index)
        self.ctx.stats.blamed[index] += 1
        quarantine = self.ctx.pool.lied(index, reason)
        self.named[index] = NodeMisbehaved(index, reason)
        log.warning(
            "node %d sent a bad share: %s (quarantined for %.0f s)", index, reason, quarantine
        )

    def _suspect(self, index: int, error: NodeError) -> None:
        self.ctx.stats.suspected[index] += 1
        quarantine = self.ctx.pool.suspected(index, error.reason)
        self.named[index] = error
        if quarantine:
            log.warning(
                "node %d again did not prove a share that failed to combine: %s "
                "(quarantined for %.0f s)",
                index,
                error.reason,
                quarantine,
            )
        else:
            log.warning(
                "node %d did not prove a share that failed to combine: %s", index, error.reason
            )

    async def _gather(
        self, items: Sequence[Pending], exclude: frozenset[int], with_proofs: bool
    ) -> tuple[Answers, set[int]]:
        """The first ``k`` well-formed answers (fewer if the nodes or the time run out),
        and the nodes still silent when it stopped."""
        pool, k = self.ctx.pool, self.k
        answers: Answers = {}
        asked = set(exclude)
        running: dict[asyncio.Task[list[SignatureShare]], int] = {}
        hedged: set[int] = set()

        def launch(index: int) -> None:
            asked.add(index)
            running[asyncio.ensure_future(self.ask(index, items, with_proofs))] = index

        def ranked() -> list[int]:
            # Nodes whose channel is between reconnection attempts come last.
            order = pool.ranked(asked)
            return sorted(order, key=lambda i: self.ctx.links[i].connecting())

        pool.rotate()
        first = ranked()
        for index in first if self.ctx.settings.mode == "all" else first[:k]:
            launch(index)
        try:
            while len(answers) < k:
                if not running:
                    spare = ranked()
                    if not spare:
                        break
                    launch(spare[0])
                    continue
                remaining = self.end - time.monotonic()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(
                    list(running),
                    timeout=min(pool.hedge_delay(), remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:  # slow nodes: ask one more; the first k answers win
                    spare = ranked()
                    if spare:
                        self.ctx.stats.hedges += 1
                        hedged.update(running.values())
                        launch(spare[0])
                    continue
                for task in done:
                    index = running.pop(task)
                    if task.exception() is None:
                        answers[index] = task.result()
                missing = k - len(answers) - len(running)
                if missing > 0:  # replace every failed node at once
                    for index in ranked()[:missing]:
                        launch(index)
        finally:
            for task, index in running.items():
                task.cancel()
                if index in hedged:
                    pool.slow(index)
        return answers, set(running.values())

    async def _sign(
        self, positions: list[int], exclude: frozenset[int], depth: int
    ) -> dict[int, bytes | IttcError]:
        ctx, k = self.ctx, self.k
        items = [self.batch[pos] for pos in positions]
        always = ctx.settings.proofs == "always"
        answers, silent = await self._gather(items, exclude, always)
        if len(answers) < k:
            for index in silent:
                self.named.setdefault(
                    index, NodeUnavailable(index, "no answer within the deadline")
                )
            for index in answers:
                self.named.setdefault(
                    index, NodeUnavailable(index, "answered, but too few other nodes did")
                )
            error = self._error(f"fewer than k={k} nodes answered")
            return {pos: error for pos in positions}

        order = sorted(answers)
        outcomes = await ctx.combiner.combine(
            [(p.x, [answers[i][j] for i in order]) for j, p in enumerate(items)],
            use_proofs=True if always else None,
            deadline=self.end,
        )
        results: dict[int, bytes | IttcError] = {}
        wrong: list[int] = []
        liars: dict[int, str] = {}
        for j, outcome in enumerate(outcomes):
            if isinstance(outcome, CombineResult):
                results[positions[j]] = outcome.signature
            else:
                wrong.append(j)
            liars.update((i, r) for i, r in outcome.bad.items() if i in answers)
        self.clear(outcomes)
        if not wrong:
            return results

        suspects: dict[int, NodeError] = {}
        if not liars and ctx.params.proofs_sound and not always:
            first_wrong = wrong[0]
            liars, suspects = await find_liars(
                self, items[first_wrong], {i: answers[i][first_wrong] for i in order}
            )
        elif not liars and not ctx.params.proofs_sound:
            repaired, liars = await repair_by_subsets(self, items, wrong, answers, exclude)
            for j, signature in repaired.items():
                results[positions[j]] = signature
            wrong = [j for j in wrong if j not in repaired]
        for index, reason in liars.items():
            self._lied(index, reason)
        for index, suspicion in suspects.items():
            self._suspect(index, suspicion)
        if not wrong:
            return results
        left_out = exclude | liars.keys() | suspects.keys()
        if (liars or suspects) and depth < ctx.params.n - k:
            results.update(await self._sign([positions[j] for j in wrong], left_out, depth + 1))
        else:
            error = self._error(f"fewer than k={k} valid shares")
            results.update((positions[j], error) for j in wrong)
        return results

    def clear(self, outcomes: Sequence[Outcome]) -> None:
        used = {i for o in outcomes if isinstance(o, CombineResult) for i in o.used}
        for index in used:
            self.ctx.pool.cleared(index)

    def _error(self, message: str) -> SigningError:
        reasons: dict[int, NodeError] = dict(self.ctx.pool.reasons())
        reasons.update(self.named)
        for index in self.ctx.pool.indices:
            reasons.setdefault(
                index, NodeUnavailable(index, "not asked: no time left or known to be down")
            )
        return SigningError(message, reasons)
