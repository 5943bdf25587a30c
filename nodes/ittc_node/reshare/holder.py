"""A holder's steps: deal this epoch's share to the new members, never showing it.

A holder (one of the ``k`` current sites the coordinator chose) makes round-1 masks at
``Prepare`` (:meth:`HolderSteps.send_masks`), checks the masks other holders sealed to it
against their commitments and publishes its contribution with one sub-share sealed to
each new member at ``Deal``, and at ``RevealEphemeral`` opens one value it sent, to
answer its recipient's signed complaint that it does not open. Its secrets (masks,
additive share, dealing polynomial) live in :class:`~ittc.scheme.reshare.Holder`, in
memory only.
"""

from __future__ import annotations

import asyncio

import grpc

from ittc.errors import EnvelopeError, ParameterError, ReshareError, WireError
from ittc.lifecycle import open_sealed, reveal_ephemeral, seal, state
from ittc.lifecycle.codec import (
    COMMITMENTS,
    COMPLAINT,
    CONTRIBUTION,
    Complaint,
    encode_dealt,
    encode_mask_commitments,
)
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.reshare import Holder
from ittc.wire import codec
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc_node.reshare.state import Complained, Run, SiteState, refuse

__all__ = ["HolderSteps"]


class HolderSteps:
    """The steps of a run in which this site is a holder."""

    def __init__(self, site: SiteState) -> None:
        self.site = site

    async def send_masks(self, run: Run, share: KeyShare, response: rpb.PrepareResponse) -> None:
        """Round 1 (at ``Prepare``): commit to masks, seal one to each other holder."""
        site, sp = self.site, run.sp
        assert run.holder is not None
        engine = Holder(sp, share)
        made, masks = await asyncio.to_thread(engine.send_masks)
        run.engine = engine
        statement = state(
            site.key, COMMITMENTS, run.run_id, encode_mask_commitments(sp, run.holder, made)
        )
        sealed = [
            seal(
                site.key,
                site.epoch.sites[peer_index],
                "mask",
                run.run_id,
                site.faults.mask(sp, value),
            )
            for peer_index, value in masks.items()
        ]
        run.sent.extend(sealed)
        response.commitments.CopyFrom(codec.statement_to_wire(statement))
        response.masks.extend(codec.sealed_to_wire(s) for s in sealed)

    async def deal(self, request: rpb.DealRequest, caller: str, peer: str) -> rpb.DealResponse:
        site = self.site
        try:
            run_id = codec.run_id_from_wire(request.run_id)
            statements = codec.statements_from_wire(request.commitments)
            masks = codec.sealed_list_from_wire(request.masks)
        except WireError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = site.current_run(run_id, "prepared")
        if run.holder is None or run.engine is None:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, "this site is not a holder of this run")
        seen, commitments = site.commitments(run, statements)
        table = {(c.sender, c.recipient): c for c in commitments}
        engine, me = run.engine, run.holder
        sites = site.holder_sites(run)
        try:
            received: set[int] = set()
            for sealed in masks:
                sender, value = site.open(run, sealed, "mask", sites, me)
                if sender >= me or sender in received:
                    refuse(
                        grpc.StatusCode.INVALID_ARGUMENT, f"an unexpected mask from holder {sender}"
                    )
                received.add(sender)
                try:
                    await asyncio.to_thread(engine.receive_mask, table[(sender, me)], value)
                except ReshareError as exc:
                    opened = open_sealed(site.key, sealed, sites[sender])
                    raise site.complaint(run, sealed, opened.evidence, str(exc)) from None
            missing = [i for i in engine.peers_below if i not in received]
            if missing:
                refuse(grpc.StatusCode.FAILED_PRECONDITION, f"no mask from holders {missing}")
            contribution, subs = await asyncio.to_thread(engine.contribute)
        except Complained as complaint:
            site.record(run)
            await site.audit(
                "Deal", caller, peer, "complained", complaint.reason, **run.audit_fields()
            )
            return rpb.DealResponse(complaint=codec.statement_to_wire(complaint.statement))
        contribution = site.faults.contribution(contribution)
        statement = state(
            site.key, CONTRIBUTION, run.run_id, encode_dealt(run.sp, contribution, seen)
        )
        sealed_subs = []
        for j, value in subs.items():
            payload = site.faults.sub_share(run.sp, j, value)
            sealed = seal(site.key, run.plan.member(j).site, "sub-share", run.run_id, payload)
            sealed_subs.append(site.faults.unopenable(j, sealed))
        run.sent.extend(sealed_subs)
        run.engine = None
        run.stage = "dealt"
        site.record(run)
        site.faults.crash("deal")
        await site.audit("Deal", caller, peer, "dealt", **run.audit_fields())
        return rpb.DealResponse(
            contribution=codec.statement_to_wire(statement),
            sub_shares=[codec.sealed_to_wire(s) for s in sealed_subs],
        )

    async def reveal(
        self, request: rpb.RevealRequest, caller: str, peer: str
    ) -> rpb.RevealResponse:
        site = self.site
        try:
            statement = codec.statement_from_wire(request.complaint)
        except WireError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = site.current_run(statement.run_id)
        if statement.kind != COMPLAINT:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, "not a complaint")
        try:
            complaint = Complaint.from_body(statement.body)
        except ParameterError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        sealed = complaint.sealed
        # Only for a value this node sent, and only to a complaint its recipient signed,
        # saying it does not open: the key opens that one message, which the recipient
        # already holds.
        if (
            complaint.evidence is not None
            or sealed not in run.sent
            or sealed.sender != site.key.name
        ):
            refuse(grpc.StatusCode.PERMISSION_DENIED, "no complaint about a value this node sent")
        recipient = site.recipient_identity(run, sealed)
        if recipient is None or statement.sender != recipient.name:
            refuse(grpc.StatusCode.PERMISSION_DENIED, "the complaint is not the recipient's")
        try:
            statement.verify(recipient)
        except EnvelopeError:
            refuse(
                grpc.StatusCode.PERMISSION_DENIED, "the complaint is not signed by its recipient"
            )
        await site.audit(
            "RevealEphemeral",
            caller,
            peer,
            "revealed",
            f"to answer {recipient.name}'s complaint",
            **run.audit_fields(),
        )
        return rpb.RevealResponse(ephemeral=reveal_ephemeral(site.key, sealed))
