"""When a combined signature fails its check: find who lied, or sign from more shares.

Two ways, by the key's kind (see :mod:`ittc.combiner.round`):

* :func:`find_liars` (keys with sound proofs): the nodes prove their share of one failed
  item; a second, different share or a failed proof names a liar; a node that does not
  prove within a grace period is suspected, and named when every other share proved
  correct.
* :func:`repair_by_subsets` (split keys, no sound proofs): more shares of the failed
  items from every reachable node, and a robust combine over all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from ittc.combiner.batcher import Pending
from ittc.combiner.context import Answers, Round
from ittc.errors import NodeError, NodeMisbehaved, NodeUnavailable
from ittc.scheme.combine import CombineResult
from ittc.scheme.proofs import SignatureShare

__all__ = ["find_liars", "repair_by_subsets"]


async def find_liars(
    rnd: Round, item: Pending, shares: dict[int, SignatureShare]
) -> tuple[dict[int, str], dict[int, NodeError]]:
    """The nodes whose shares of ``item`` did not combine prove them (sound proofs)."""
    ctx = rnd.ctx
    ctx.stats.proof_rounds += 1
    started = time.monotonic()
    tasks = {asyncio.ensure_future(rnd.ask(i, [item], True)): i for i in shares}
    pending = set(tasks)
    liars: dict[int, str] = {}
    suspects: dict[int, NodeError] = {}
    to_verify: list[SignatureShare] = []
    grace_end: float | None = None
    try:
        while pending:
            stop = rnd.end if grace_end is None else min(rnd.end, grace_end)
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


async def repair_by_subsets(
    rnd: Round,
    items: Sequence[Pending],
    wrong: list[int],
    answers: Answers,
    exclude: frozenset[int],
) -> tuple[dict[int, bytes], dict[int, str]]:
    """Split keys: more shares of the failed items from every reachable node, and a
    robust combine over all of them. Returns signatures by item and the liars."""
    ctx, k = rnd.ctx, rnd.k
    ctx.stats.proof_rounds += 1
    failed = [items[j] for j in wrong]
    earlier = {i: [shares[j] for j in wrong] for i, shares in answers.items()}
    targets = [
        i
        for i in ctx.pool.indices
        if i not in exclude and (i in answers or (ctx.pool.usable(i) and i not in rnd.named))
    ]
    started = time.monotonic()
    tasks = {asyncio.ensure_future(rnd.ask(i, failed, False)): i for i in targets}
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
                    timeout=max(rnd.end - time.monotonic(), 0.001),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                _take(tasks, done, collected)
                if not done:
                    break
                continue
            if pending and not graced:
                graced = True
                grace = max(ctx.pool.hedge_delay(), time.monotonic() - started)
                done, pending = await asyncio.wait(
                    pending, timeout=min(grace, max(rnd.end - time.monotonic(), 0.001))
                )
                _take(tasks, done, collected)
            jobs = []
            for slot in open_slots:
                shares = [s[slot] for s in earlier.values()]
                shares += [
                    s[slot]
                    for i, s in collected.items()
                    if i not in earlier or s[slot].value != earlier[i][slot].value
                ]
                jobs.append((failed[slot].x, shares))
            outcomes = await ctx.combiner.combine(jobs, use_proofs=False, deadline=rnd.end)
            retry = []
            for slot, outcome in zip(open_slots, outcomes, strict=True):
                liars.update(outcome.bad)
                if isinstance(outcome, CombineResult):
                    signed[wrong[slot]] = outcome.signature
                else:
                    retry.append(slot)
            rnd.clear(outcomes)
            open_slots = retry
            if not retry or not pending or time.monotonic() >= rnd.end:
                break
            done, pending = await asyncio.wait(
                pending,
                timeout=max(rnd.end - time.monotonic(), 0.001),
                return_when=asyncio.FIRST_COMPLETED,
            )
            _take(tasks, done, collected)
        for task in pending:  # every item signed: stragglers are not needed
            ctx.pool.slow(tasks[task])
    finally:
        for task in pending:
            task.cancel()
    return signed, {i: r for i, r in liars.items() if i in earlier or i in collected}


def _take(
    tasks: Mapping[asyncio.Task[list[SignatureShare]], int],
    done: set[asyncio.Task[list[SignatureShare]]],
    collected: Answers,
) -> None:
    for task in done:
        if task.exception() is None:
            collected[tasks[task]] = task.result()
