"""A whole run in one process: for tests, benchmarks and the arithmetic's own checks.

This puts ``k`` shares of one epoch in one process, which is exactly what a real run
exists to avoid: a deployment drives the same steps through the node and coordinator
layers, one holder per site. Nothing here is used by them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ittc.errors import ParameterError
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.reshare.holder import Holder
from ittc.scheme.reshare.messages import Contribution, MaskCommitment, PrivateValue
from ittc.scheme.reshare.plan import RUN_ID_BYTES, ResharePlan
from ittc.scheme.reshare.verify import (
    Outcome,
    acceptance_share,
    assemble_share,
    check_acceptance,
    verify_contributions,
)

__all__ = ["Dealt", "deal_round", "reshare_in_one_process"]

Dealt = tuple[list[MaskCommitment], list[Contribution], dict[int, dict[int, PrivateValue]]]


def deal_round(plan: ResharePlan, shares: Sequence[KeyShare]) -> Dealt:
    """Rounds 1 and 2 for every holder: mask commitments, contributions, and the
    sub-shares by member then holder."""
    by_index = {s.index: s for s in shares}
    holders = {i: Holder(plan, by_index[i]) for i in plan.holders}
    commitments: list[MaskCommitment] = []
    masks: dict[int, list[tuple[MaskCommitment, PrivateValue]]] = {i: [] for i in holders}
    for holder in holders.values():
        made, private = holder.send_masks()
        commitments.extend(made)
        for commitment in made:
            masks[commitment.recipient].append((commitment, private[commitment.recipient]))
    contributions = []
    sub_shares: dict[int, dict[int, PrivateValue]] = {j: {} for j in range(1, plan.n + 1)}
    for i, holder in holders.items():
        for commitment, value in masks[i]:
            holder.receive_mask(commitment, value)
        contribution, private_subs = holder.contribute()
        contributions.append(contribution)
        for j, value in private_subs.items():
            sub_shares[j][i] = value
    return commitments, contributions, sub_shares


def reshare_in_one_process(
    shares: Sequence[KeyShare],
    n: int,
    k: int,
    *,
    holders: Sequence[int] | None = None,
    run_id: bytes | None = None,
    acceptance: bool = True,
) -> tuple[Outcome, list[KeyShare]]:
    """Reshare the epoch of ``shares`` to ``n`` members with threshold ``k``.

    ``holders`` defaults to the ``k`` lowest indices among ``shares``. Returns the
    outcome and the ``n`` new shares, after the acceptance test unless told not to.
    """
    if not shares:
        raise ParameterError("no shares to reshare")
    old = shares[0].params
    chosen = tuple(
        sorted(holders if holders is not None else sorted(s.index for s in shares)[: old.k])
    )
    plan = ResharePlan(old, chosen, n, k, run_id or secrets.token_bytes(RUN_ID_BYTES))
    commitments, contributions, sub_shares = deal_round(plan, shares)
    outcome = verify_contributions(plan, contributions, commitments)
    new = [assemble_share(outcome, j, sub_shares[j].values()) for j in range(1, n + 1)]
    if acceptance:
        check_acceptance(outcome, [acceptance_share(outcome, s) for s in new])
    return outcome, new
