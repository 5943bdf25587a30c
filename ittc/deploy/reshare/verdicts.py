"""Checking what the sites of a run send, and settling their complaints: who lied.

Every public value a holder or member sends is checked here as a node checks it, so
that the coordinator can name a cheater from evidence alone (:class:`Convicted`); a
value that is not its sender's (a signature that does not verify) convicts nobody: it
was altered on the way (:class:`~ittc.deploy.reshare.links._SiteFailed`). A complaint
about a value (:mod:`~ittc.deploy.reshare.attempt`) convicts its sender or the
complainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ittc.deploy.reshare.links import Site, _SiteFailed
from ittc.errors import EnvelopeError, ReshareError
from ittc.lifecycle import ACK, Statement
from ittc.lifecycle.codec import (
    COMMITMENTS,
    CONTRIBUTION,
    decode_acknowledgement,
    decode_dealt,
    decode_mask_commitments,
)
from ittc.scheme.reshare import (
    MaskCommitment,
    Outcome,
    ResharePlan,
    mask_table,
    verify_contributions,
)

__all__ = [
    "Convicted",
    "against",
    "check_acks",
    "check_commitments",
    "check_contributions",
]


class Convicted(Exception):
    """Evidence convicts these holders (old indices) and members (new indices), or nobody;
    the attempt ends."""

    def __init__(
        self, reason: str, holders: Iterable[int] = (), members: Iterable[int] = ()
    ) -> None:
        super().__init__(reason)
        self.holders = tuple(sorted(set(holders)))
        self.members = tuple(sorted(set(members)))
        self.reason = reason


def check_commitments(
    sp: ResharePlan, holders: Mapping[int, Site], statements: Mapping[int, Statement]
) -> list[MaskCommitment]:
    out: list[MaskCommitment] = []
    for i, statement in statements.items():
        site = holders[i]
        if statement.kind != COMMITMENTS or statement.run_id != sp.run_id:
            raise Convicted(f"holder {i} sent a statement of another kind or run", holders=[i])
        try:
            body = statement.verify(site.identity)
        except EnvelopeError:
            raise _SiteFailed(
                site, "round 1 not signed by the site (altered in transit?)"
            ) from None
        try:
            out.extend(decode_mask_commitments(sp, i, body))
        except ReshareError as exc:
            raise Convicted(str(exc), holders=[i]) from None
    try:
        mask_table(sp, out)
    except ReshareError as exc:
        raise Convicted(str(exc), holders=exc.holders) from None
    return out


def check_contributions(
    sp: ResharePlan,
    holders: Mapping[int, Site],
    statements: Mapping[int, Statement],
    commitments: list[MaskCommitment],
) -> Outcome:
    contributions = []
    for i, statement in statements.items():
        site = holders[i]
        if statement.kind != CONTRIBUTION or statement.run_id != sp.run_id:
            raise Convicted(f"holder {i} sent a statement of another kind or run", holders=[i])
        try:
            body = statement.verify(site.identity)
        except EnvelopeError:
            raise _SiteFailed(site, "contribution not signed by the site") from None
        try:
            _, contribution = decode_dealt(sp, i, body)
        except ReshareError as exc:
            raise Convicted(str(exc), holders=[i]) from None
        contributions.append(contribution)
    try:
        return verify_contributions(sp, contributions, commitments)
    except ReshareError as exc:
        raise Convicted(str(exc), holders=exc.holders) from None


def check_acks(
    outcome: Outcome, members: Mapping[int, Site], acks: Sequence[Statement]
) -> list[Any]:
    shares = []
    epoch_ids = set()
    for j, statement in enumerate(acks, 1):
        site = members[j]
        if statement.kind != ACK or statement.run_id != outcome.plan.run_id:
            raise Convicted(f"member {j} acknowledged another kind or run", members=[j])
        try:
            body = statement.verify(site.identity)
        except EnvelopeError:
            raise _SiteFailed(site, "acknowledgement not signed by the site") from None
        try:
            ack = decode_acknowledgement(outcome.params, j, body)
        except ReshareError as exc:
            raise Convicted(str(exc), members=[j]) from None
        epoch_ids.add(ack.epoch_id)
        if ack.transcript != outcome.transcript or ack.run_id != outcome.plan.run_id:
            raise Convicted(f"member {j} acknowledged another transcript", members=[j])
        shares.append(ack.share)
    if epoch_ids != {outcome.params.epoch_id_bytes}:
        # The members computed different epochs from the same public values: a holder
        # dealt inconsistently. Nothing singles it out; the attempt stops.
        raise Convicted("the members acknowledged different epoch ids")
    return shares


def against(site: Site, reason: str) -> Convicted:
    """A conviction of ``site`` in the role it sent the disputed value or complaint in:
    a mask or sub-share as a holder, a complaint about a sub-share as a member."""
    if site.old_index is not None and site.new_index is None:
        return Convicted(f"{site.name}: {reason}", holders=[site.old_index])
    if site.new_index is not None and site.old_index is None:
        return Convicted(f"{site.name}: {reason}", members=[site.new_index])
    return Convicted(f"{site.name}: {reason}", holders=[site.old_index or 0])
