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
import collections
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ittc.combiner.batcher import Pending
from ittc.combiner.combining import Combiner, Outcome
from ittc.combiner.options import Settings
from ittc.combiner.pool import NodePool
from ittc.combiner.transport import NodeLink
from ittc.errors import (
    IttcError,
    NodeError,
    NodeMisbehaved,
    NodeUnavailable,
    SigningError,
)
from ittc.scheme.combine import CombineResult
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare

__all__ = ["ClientStats", "SigningRound"]

log = logging.getLogger("ittc.combiner")


@dataclass
class ClientStats:
    """Counters a pipeline can export: what the client did and whom it blamed."""

    signatures: int = 0
    batches: int = 0
    rpcs: int = 0
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

    async def _ask(
        self, index: int, items: Sequence[Pending], with_proofs: bool
    ) -> list[SignatureShare]:
        ctx = self.ctx
        ctx.pool.asked(index, len(items))
        ctx.stats.rpcs += 1
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
            running[asyncio.ensure_future(self._ask(index, items, with_proofs))] = index

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
            error = self._error(f"fewer than k={k} nodes answered")
            return {pos: error for pos in positions}

        order = sorted(answers)
        outcomes = await ctx.combiner.combine(
            [(p.x, [answers[i][j] for i in order]) for j, p in enumerate(items)],
            use_proofs=True if always else None,
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
        self._clear(outcomes)
        if not wrong:
            return results

        suspects: dict[int, NodeError] = {}
        if not liars and ctx.params.proofs_sound and not always:
            first_wrong = wrong[0]
            liars, suspects = await self._find_liars(
                items[first_wrong], {i: answers[i][first_wrong] for i in order}
            )
        elif not liars and not ctx.params.proofs_sound:
            repaired, liars = await self._repair_by_subsets(items, wrong, answers, exclude)
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

    def _clear(self, outcomes: Sequence[Outcome]) -> None:
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

    async def _find_liars(
        self, item: Pending, shares: dict[int, SignatureShare]
    ) -> tuple[dict[int, str], dict[int, NodeError]]:
        """The nodes whose shares of ``item`` did not combine prove them (sound proofs)."""
        ctx = self.ctx
        ctx.stats.proof_rounds += 1
        started = time.monotonic()
        tasks = {asyncio.ensure_future(self._ask(i, [item], True)): i for i in shares}
        pending = set(tasks)
        liars: dict[int, str] = {}
        suspects: dict[int, NodeError] = {}
        to_verify: list[SignatureShare] = []
        grace_end: float | None = None
        try:
            while pending:
                stop = self.end if grace_end is None else min(self.end, grace_end)
                timeout = stop - time.monotonic()
                if timeout <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break
                for task in done:
                    index = tasks[task]
                    exc = task.exception()
                    if isinstance(exc, NodeMisbehaved):
                        liars[index] = exc.reason
                    elif isinstance(exc, NodeError):
                        suspects[index] = type(exc)(
                            index, f"did not prove its share: {exc.reason}", exc.code
                        )
                    elif exc is None:
                        proven = task.result()[0]
                        if proven.value != shares[index].value:
                            liars[index] = "sent two different shares for one message"
                        else:
                            to_verify.append(proven)
                if grace_end is None:
                    elapsed = time.monotonic() - started
                    grace_end = time.monotonic() + max(ctx.pool.hedge_delay(), elapsed)
        finally:
            for task in pending:
                task.cancel()
        for task in pending:
            index = tasks[task]
            suspects[index] = NodeUnavailable(index, "did not prove its share in time")
        bad_proofs = await ctx.combiner.verify(item.x, to_verify) if to_verify else {}
        liars.update(bad_proofs)
        proven_ok = {s.index for s in to_verify} - bad_proofs.keys()
        for index in proven_ok:
            ctx.pool.cleared(index)
        # Correct shares always combine: if every share but one is proven correct, the
        # one left is why they did not.
        unresolved = set(shares) - proven_ok - liars.keys()
        if not liars and len(unresolved) == 1 and len(proven_ok) == len(shares) - 1:
            (index,) = unresolved
            suspects.pop(index, None)
            liars[index] = "its share broke the signature (every other share proven correct)"
        return liars, suspects

    async def _repair_by_subsets(
        self, items: Sequence[Pending], wrong: list[int], answers: Answers, exclude: frozenset[int]
    ) -> tuple[dict[int, bytes], dict[int, str]]:
        """Split keys: more shares of the failed items from every reachable node, and a
        robust combine over all of them. Returns signatures by item and the liars."""
        ctx, k = self.ctx, self.k
        ctx.stats.proof_rounds += 1
        failed = [items[j] for j in wrong]
        earlier = {i: [shares[j] for j in wrong] for i, shares in answers.items()}
        targets = [
            i
            for i in ctx.pool.indices
            if i not in exclude and (i in answers or (ctx.pool.usable(i) and i not in self.named))
        ]
        started = time.monotonic()
        tasks = {asyncio.ensure_future(self._ask(i, failed, False)): i for i in targets}
        pending = set(tasks)
        collected: Answers = {}
        signed: dict[int, bytes] = {}
        liars: dict[int, str] = {}
        open_slots = list(range(len(failed)))
        graced = False
        try:
            while open_slots:
                if pending and len(earlier.keys() | collected.keys()) < k + 1 and not graced:
                    done, pending = await asyncio.wait(
                        pending,
                        timeout=max(self.end - time.monotonic(), 0.001),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    self._take(tasks, done, collected)
                    if not done:
                        break
                    continue
                if pending and not graced:
                    graced = True
                    grace = max(ctx.pool.hedge_delay(), time.monotonic() - started)
                    done, pending = await asyncio.wait(
                        pending, timeout=min(grace, max(self.end - time.monotonic(), 0.001))
                    )
                    self._take(tasks, done, collected)
                jobs = []
                for slot in open_slots:
                    shares = [s[slot] for s in earlier.values()]
                    shares += [
                        s[slot]
                        for i, s in collected.items()
                        if i not in earlier or s[slot].value != earlier[i][slot].value
                    ]
                    jobs.append((failed[slot].x, shares))
                outcomes = await ctx.combiner.combine(jobs, use_proofs=False, deadline=self.end)
                retry = []
                for slot, outcome in zip(open_slots, outcomes, strict=True):
                    liars.update(outcome.bad)
                    if isinstance(outcome, CombineResult):
                        signed[wrong[slot]] = outcome.signature
                    else:
                        retry.append(slot)
                self._clear(outcomes)
                open_slots = retry
                if not retry or not pending or time.monotonic() >= self.end:
                    break
                done, pending = await asyncio.wait(
                    pending,
                    timeout=max(self.end - time.monotonic(), 0.001),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._take(tasks, done, collected)
            for task in pending:  # every item signed: stragglers are not needed
                ctx.pool.slow(tasks[task])
        finally:
            for task in pending:
                task.cancel()
        return signed, {i: r for i, r in liars.items() if i in earlier or i in collected}

    @staticmethod
    def _take(
        tasks: Mapping[asyncio.Task[list[SignatureShare]], int],
        done: set[asyncio.Task[list[SignatureShare]]],
        collected: Answers,
    ) -> None:
        for task in done:
            if task.exception() is None:
                collected[tasks[task]] = task.result()
