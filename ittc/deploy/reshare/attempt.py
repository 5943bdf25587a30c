"""One attempt of a reshare run: the three rounds between the coordinator and the sites.

An attempt has its holders (``k`` sites of the old epoch) and a fresh nonce, so its run
id differs from every other attempt's; it ends with a certificate written durably, or
with :class:`~ittc.deploy.reshare.verdicts.Convicted` (the evidence names who lied, or
nobody) or ``_SiteFailed`` (a site did not answer, or its answer was not its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ittc.deploy.reshare.links import ReshareFailed, Site, _crash, _SiteFailed
from ittc.deploy.reshare.verdicts import (
    Convicted,
    against,
    check_acks,
    check_commitments,
    check_contributions,
)
from ittc.errors import CertificateError, EnvelopeError, ParameterError, ReshareError, WireError
from ittc.lifecycle import Certificate, Sealed, Statement, judge, verify_evidence
from ittc.lifecycle.codec import COMPLAINT, Complaint
from ittc.scheme.reshare import (
    MaskCommitment,
    Outcome,
    PrivateValue,
    ResharePlan,
    check_acceptance,
    judge_mask_complaint,
    judge_sub_share_complaint,
)
from ittc.storage.files import write_file_atomically
from ittc.wire import codec
from ittc.wire.v1 import reshare_pb2 as rpb

if TYPE_CHECKING:
    from ittc.deploy.reshare.coordinator import Coordinator

__all__ = ["Attempt", "AttemptRun"]


@dataclass
class Attempt:
    """One attempt: its number in the run folder, holders, nonce and record."""

    number: int
    holders: tuple[int, ...]
    nonce: bytes
    sp: ResharePlan
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> bytes:
        return self.sp.run_id


class AttemptRun:
    """Carries one attempt through Prepare, Deal and Accept to its certificate."""

    def __init__(self, coordinator: Coordinator, attempt: Attempt) -> None:
        self.coordinator = coordinator
        self.attempt = attempt

    async def _gather(self, calls: Mapping[Site, Any]) -> dict[Site, Any]:
        """Run the calls at once; the first failure (after all finished) is raised."""
        sites = list(calls)
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, _SiteFailed):
                raise result
        for result in results:
            if isinstance(result, _SiteFailed):
                raise result
        return dict(zip(sites, results, strict=True))

    async def run(self) -> Certificate:
        """Prepare, deal, accept; the certificate, written durably (the point of no
        return). Raises :class:`Convicted` or ``_SiteFailed`` when the attempt fails."""
        c, attempt = self.coordinator, self.attempt
        sp, plan = attempt.sp, c.plan
        holders = {i: c._old_site(i) for i in attempt.holders}
        members = {j: c._member_site(j) for j in range(1, plan.n + 1)}
        participants = {s.name: s for s in [*holders.values(), *members.values()]}

        # 1. Prepare: every participant checks the approvals; holders make round 1.
        prepare = rpb.PrepareRequest(
            plan=plan.canonical(),
            approvals=codec.approvals_to_wire(c.approvals),
            holders=list(attempt.holders),
            attempt=attempt.nonce,
        )
        answers = await self._gather(
            {s: c._link(s).call("Prepare", prepare, c.timeout) for s in participants.values()}
        )
        for site, answer in answers.items():
            if answer.run_id != attempt.run_id:
                raise _SiteFailed(site, "Prepare: answered for another run id")
        commitment_statements: dict[int, Statement] = {}
        masks: list[Sealed] = []
        for i, site in holders.items():
            answer = answers[site]
            try:
                commitment_statements[i] = codec.statement_from_wire(answer.commitments)
                masks.extend(codec.sealed_list_from_wire(answer.masks))
            except WireError as exc:
                raise _SiteFailed(site, f"Prepare: malformed round 1: {exc.reason}") from None
        commitments = check_commitments(sp, holders, commitment_statements)
        attempt.record["commitments"] = [s.to_dict() for s in commitment_statements.values()]
        attempt.record["masks"] = [m.to_dict() for m in masks]
        c._save(attempt)
        c.say(f"attempt {attempt.number}: round 1 from holders {list(holders)}")
        _crash("prepared")

        # 2. Deal: each holder gets every commitment and the masks sealed to it.
        statements = [codec.statement_to_wire(s) for s in commitment_statements.values()]
        deals = await self._gather(
            {
                site: c._link(site).call(
                    "Deal",
                    rpb.DealRequest(
                        run_id=attempt.run_id,
                        commitments=statements,
                        masks=[codec.sealed_to_wire(m) for m in masks if m.recipient == site.name],
                    ),
                    c.timeout,
                )
                for site in holders.values()
            }
        )
        contribution_statements: dict[int, Statement] = {}
        sub_shares: list[Sealed] = []
        for i, site in holders.items():
            answer = deals[site]
            if answer.HasField("complaint"):
                await self._judge(site, answer.complaint, commitments, None)
            try:
                contribution_statements[i] = codec.statement_from_wire(answer.contribution)
                sub_shares.extend(codec.sealed_list_from_wire(answer.sub_shares))
            except WireError as exc:
                raise _SiteFailed(site, f"Deal: malformed answer: {exc.reason}") from None
        outcome = check_contributions(sp, holders, contribution_statements, commitments)
        attempt.record["contributions"] = [s.to_dict() for s in contribution_statements.values()]
        attempt.record["sub_shares"] = [s.to_dict() for s in sub_shares]
        attempt.record["new_epoch_id"] = outcome.params.epoch_id
        c._save(attempt)
        c.say(
            f"attempt {attempt.number}: contributions check out; new epoch id "
            f"{outcome.params.epoch_id[:16]}"
        )
        _crash("dealt")

        # 3. Accept: each member checks everything, stores its share and acknowledges.
        contributions = [codec.statement_to_wire(s) for s in contribution_statements.values()]
        accepts = await self._gather(
            {
                site: c._link(site).call(
                    "Accept",
                    rpb.AcceptRequest(
                        run_id=attempt.run_id,
                        commitments=statements,
                        contributions=contributions,
                        sub_shares=[
                            codec.sealed_to_wire(s) for s in sub_shares if s.recipient == site.name
                        ],
                    ),
                    c.timeout,
                )
                for site in members.values()
            }
        )
        acks: list[Statement] = []
        for site in members.values():
            answer = accepts[site]
            if answer.HasField("complaint"):
                await self._judge(site, answer.complaint, commitments, outcome)
            try:
                acks.append(codec.statement_from_wire(answer.ack))
            except WireError as exc:
                raise _SiteFailed(
                    site, f"Accept: malformed acknowledgement: {exc.reason}"
                ) from None
        shares = check_acks(outcome, members, acks)
        attempt.record["acks"] = [a.to_dict() for a in acks]
        c._save(attempt)
        _crash("acknowledged")
        try:
            check_acceptance(outcome, shares)
        except ReshareError as exc:
            raise Convicted(str(exc), members=exc.members) from None
        c.say(f"attempt {attempt.number}: every member stored its share; acceptance test passed")

        # 4. The certificate: checked as a node will check it, then written durably.
        certificate = Certificate(
            plan, c.approvals, attempt.holders, attempt.nonce, outcome.params, tuple(acks)
        )
        try:
            certificate.verify(c.old, c.cluster.sites())
        except CertificateError as exc:  # pragma: no cover - every part was checked above
            raise ReshareFailed(f"the certificate does not verify: {exc}") from None
        write_file_atomically(
            c.folder.certificate_path, certificate.to_json().encode("ascii"), mode=0o644
        )
        attempt.record["outcome"] = {"certificate": certificate.digest.hex()}
        _crash("certificate")
        c.say(
            f"certificate {certificate.digest.hex()[:16]} written: "
            f"epoch {outcome.params.epoch} is decided"
        )
        return certificate

    async def _judge(
        self,
        complainer: Site,
        message: rpb.Statement,
        commitments: list[MaskCommitment],
        outcome: Outcome | None,
    ) -> None:
        """Settle a complaint: it always ends the attempt, convicting whoever lied."""
        c, attempt = self.coordinator, self.attempt
        try:
            statement = codec.statement_from_wire(message)
            statement.verify(complainer.identity)
            if statement.kind != COMPLAINT or statement.run_id != attempt.run_id:
                raise ParameterError("not a complaint of this run")
            complaint = Complaint.from_body(statement.body)
        except (WireError, EnvelopeError, ParameterError) as exc:
            raise _SiteFailed(complainer, f"an unusable complaint: {exc}") from None
        attempt.record.setdefault("complaints", []).append(statement.to_dict())
        sealed = complaint.sealed
        sender = c.sites.get(sealed.sender)
        if sealed.recipient != complainer.name or sender is None:
            raise against(complainer, "a complaint about a value not sent to it")
        c.say(
            f"attempt {attempt.number}: {complainer.name} complains about "
            f"{sender.name}'s {complaint.about}: {complaint.reason}"
        )
        evidence = complaint.evidence
        if evidence is None:
            # It does not open: the sender reveals that message's ephemeral key.
            try:
                answer = await c._link(sender).call(
                    "RevealEphemeral", rpb.RevealRequest(complaint=message), c.timeout
                )
            except _SiteFailed as exc:
                raise against(
                    sender, f"would not answer a complaint about its sealed value: {exc.reason}"
                ) from None
            try:
                verdict, evidence = judge(
                    sealed, bytes(answer.ephemeral), sender.identity, complainer.identity
                )
            except (EnvelopeError, ParameterError) as exc:
                raise Convicted(f"the complaint cannot be judged: {exc}") from None
            if verdict == "sender" or evidence is None:
                raise against(sender, "its sealed value does not open")
        try:
            payload = verify_evidence(evidence, sender.identity)
        except EnvelopeError:
            raise against(complainer, "its evidence is not signed by the sender") from None
        sp = attempt.sp
        if complaint.about == "mask" and sender.old_index and complainer.old_index:
            commitment = next(
                (
                    c
                    for c in commitments
                    if (c.sender, c.recipient) == (sender.old_index, complainer.old_index)
                ),
                None,
            )
            if commitment is None:
                raise against(complainer, "a complaint about a mask it was not sent")
            try:
                revealed = PrivateValue.from_bytes(
                    sp, "mask", sender.old_index, complainer.old_index, payload
                )
            except ReshareError:
                raise against(sender, "its mask has the wrong length") from None
            verdict_error = judge_mask_complaint(sp, commitment, revealed)
        elif (
            complaint.about == "sub-share"
            and outcome is not None
            and sender.old_index
            and complainer.new_index
        ):
            try:
                revealed = PrivateValue.from_bytes(
                    sp, "sub-share", sender.old_index, complainer.new_index, payload
                )
            except ReshareError:
                raise against(sender, "its sub-share has the wrong length") from None
            verdict_error = judge_sub_share_complaint(outcome, revealed)
        else:
            raise against(complainer, "a complaint that does not fit the run")
        raise Convicted(
            verdict_error.reason, holders=verdict_error.holders, members=verdict_error.members
        )
