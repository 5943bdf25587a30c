"""A new member's steps: take a share of the new epoch, then make it the one it signs with.

At ``Accept`` a member runs every public check of the run itself (the holders' signed
commitments and contributions), opens its sub-shares, assembles its share, stores it
encrypted and fsynced beside the old one, and only then acknowledges; a sub-share that
does not check is answered with a complaint that reveals that one value. At ``Commit``,
on a certificate that proves itself, the new epoch becomes current, the old share is
destroyed, and a site that is not a member of the new epoch retires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ittc.errors import CertificateError, ReshareError, WireError
from ittc.lifecycle import ACK, Certificate, Sealed, open_sealed, state
from ittc.lifecycle.codec import (
    CONTRIBUTION,
    Acknowledgement,
    decode_dealt,
    encode_acknowledgement,
)
from ittc.scheme.reshare import (
    Contribution,
    Outcome,
    PrivateValue,
    assemble_share,
    verify_contributions,
)
from ittc.storage.files import fsync_dir
from ittc.wire import codec
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc_node.reshare.state import Complained, Epoch, SiteState, refuse

__all__ = ["Committed", "MemberSteps"]

log = logging.getLogger("ittc_node.reshare")

#: Called with the new epoch after a commit (an epoch without a share: the site retired).
Committed = Callable[[Epoch], Awaitable[None]]


class MemberSteps:
    """The steps of a run in which this site is a new member, and the commit."""

    def __init__(self, site: SiteState, on_commit: Committed | None) -> None:
        self.site = site
        self.on_commit = on_commit

    async def accept(
        self, request: rpb.AcceptRequest, caller: str, peer: str
    ) -> rpb.AcceptResponse:
        site = self.site
        try:
            run_id = codec.run_id_from_wire(request.run_id)
            commitment_statements = codec.statements_from_wire(request.commitments)
            contribution_statements = codec.statements_from_wire(request.contributions)
            sub_shares = codec.sealed_list_from_wire(request.sub_shares)
        except WireError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = site.current_run(run_id, "prepared", "dealt")
        if run.member is None:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, "this site is not a new member of this run")
        seen, commitments = site.commitments(run, commitment_statements)
        contributions: list[Contribution] = []
        for index, (_, body) in sorted(
            site.verified(run, contribution_statements, CONTRIBUTION).items()
        ):
            try:
                their_seen, contribution = decode_dealt(run.sp, index, body)
            except ReshareError as exc:
                refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            if their_seen != seen:
                refuse(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"holder {index} dealt against other mask commitments than this member "
                    "received (a holder signed two versions; compare the signed statements)",
                )
            contributions.append(contribution)
        try:
            outcome: Outcome = await asyncio.to_thread(
                verify_contributions, run.sp, contributions, commitments
            )
        except ReshareError as exc:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **run.audit_fields())
        sites = site.holder_sites(run)
        member = run.member
        try:
            values: dict[int, tuple[Sealed, PrivateValue]] = {}
            for sealed in sub_shares:
                sender, value = site.open(run, sealed, "sub-share", sites, member)
                if sender in values:
                    refuse(grpc.StatusCode.INVALID_ARGUMENT, f"two sub-shares from holder {sender}")
                values[sender] = (sealed, value)
            missing = [i for i in run.holders if i not in values]
            if missing:
                refuse(grpc.StatusCode.FAILED_PRECONDITION, f"no sub-share from holders {missing}")
            if site.faults("false-complaint"):
                sealed = values[run.holders[0]][0]
                opened = open_sealed(site.key, sealed, sites[run.holders[0]])
                raise site.complaint(run, sealed, opened.evidence, "a false complaint (test fault)")
            try:
                share = await asyncio.to_thread(
                    assemble_share, outcome, member, [v for _, v in values.values()]
                )
            except ReshareError as exc:
                # Reveal exactly one wrong sub-share (signed by its holder), nothing else.
                bad = exc.holders[0] if exc.holders else None
                if bad is None:
                    refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                sealed = values[bad][0]
                opened = open_sealed(site.key, sealed, sites[bad])
                raise site.complaint(run, sealed, opened.evidence, str(exc)) from None
        except Complained as complaint:
            site.record(run)
            await site.audit(
                "Accept", caller, peer, "complained", complaint.reason, **run.audit_fields()
            )
            return rpb.AcceptResponse(complaint=codec.statement_to_wire(complaint.statement))
        # Stored and synced before anything is acknowledged.
        await asyncio.to_thread(
            site.store.store_pending, run.run_id, share, site.passphrase, site.kdf
        )
        share_for_ack = site.faults.acceptance_share(outcome, share)
        ack = Acknowledgement(
            run.run_id, outcome.transcript, outcome.params.epoch_id_bytes, share_for_ack
        )
        run.stage = "acknowledged"
        site.record(run)
        statement = state(site.key, ACK, run.run_id, encode_acknowledgement(outcome.params, ack))
        site.faults.crash("accept")
        await site.audit(
            "Accept",
            caller,
            peer,
            "acknowledged",
            new_epoch=outcome.params.epoch,
            new_epoch_id=outcome.params.epoch_id,
            member=member,
            **run.audit_fields(),
        )
        return rpb.AcceptResponse(ack=codec.statement_to_wire(statement))

    async def commit(
        self, request: rpb.CommitRequest, caller: str, peer: str
    ) -> rpb.CommitResponse:
        site = self.site
        site.check_not_retired()
        try:
            certificate = Certificate.from_json(bytes(request.certificate))
        except CertificateError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        epoch = site.epoch
        new = certificate.params
        extra: dict[str, Any] = {
            "certificate": certificate.digest.hex(),
            "new_epoch": new.epoch,
            "new_epoch_id": new.epoch_id,
            "run_id": certificate.run_id.hex(),
        }
        if new.epoch_id == epoch.params.epoch_id:
            return rpb.CommitResponse(epoch=new.epoch, epoch_id=new.epoch_id)
        try:
            await asyncio.to_thread(certificate.verify, epoch.params, epoch.sites)
        except CertificateError as exc:
            code = (
                grpc.StatusCode.FAILED_PRECONDITION
                if new.epoch != epoch.params.epoch + 1
                else grpc.StatusCode.PERMISSION_DENIED
            )
            refuse(code, f"certificate refused: {exc}", **extra)
        member = certificate.member_index(site.key.identity)
        if member is None:
            gone = await asyncio.to_thread(site.store.retire, certificate)
            gone += self.delete_stale_share()
            site.retired = True
            site.run = None
            await site.audit(
                "Commit",
                caller,
                peer,
                "retired",
                "this site is not a member of the new epoch",
                deleted=[str(p) for p in gone],
                **extra,
            )
            site.epoch = Epoch(new, None, certificate.sites(), certificate)
            if self.on_commit is not None:
                await self.on_commit(site.epoch)
            return rpb.CommitResponse(epoch=new.epoch, epoch_id=new.epoch_id, retired=True)
        if (
            not site.store.has_pending(certificate.run_id)
            and not site.store.share_path(new.epoch).exists()
        ):
            # A member that stored no share of this run: it had none to start with, or
            # lost its state (a disk died). It follows the proved epoch, holding nothing,
            # so that the next reshare can deal it a share; whatever older share it still
            # had is of an epoch that no longer signs, and goes.
            gone = await asyncio.to_thread(site.store.follow, certificate)
            gone += self.delete_stale_share()
            site.epoch = Epoch(new, None, certificate.sites(), certificate)
            site.run = None
            await site.audit(
                "Commit",
                caller,
                peer,
                "followed",
                "this site stored no share of the run: it holds none until a reshare deals it one",
                member=member,
                deleted=[str(p) for p in gone],
                **extra,
            )
            log.warning(
                "epoch %d (%s) committed without a share of this site: it waits for a "
                "reshare to deal it one",
                new.epoch,
                new.epoch_id[:16],
            )
            if self.on_commit is not None:
                await self.on_commit(site.epoch)
            return rpb.CommitResponse(epoch=new.epoch, epoch_id=new.epoch_id)
        try:
            share, gone = await asyncio.to_thread(
                site.store.commit,
                certificate,
                member,
                site.passphrase,
                midway=lambda: site.faults.crash("commit-midway"),
            )
        except CertificateError as exc:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **extra)
        gone += self.delete_stale_share()
        site.epoch = Epoch(new, share, certificate.sites(), certificate)
        site.run = None
        site.faults.crash("commit")
        await site.audit(
            "Commit",
            caller,
            peer,
            "committed",
            member=member,
            deleted=[str(p) for p in gone],
            **extra,
        )
        log.info("committed epoch %d (%s) as member %d", new.epoch, new.epoch_id[:16], member)
        if self.on_commit is not None:
            await self.on_commit(site.epoch)
        return rpb.CommitResponse(epoch=new.epoch, epoch_id=new.epoch_id)

    def delete_stale_share(self) -> list[pathlib.Path]:
        """The share file the configuration names is of the first epoch: delete it at the
        first commit. If the node may not (a read-only folder), say so loudly: the old
        share must be destroyed by hand."""
        site = self.site
        path = site.stale_share
        if path is None:
            return []
        try:
            path.unlink()
        except FileNotFoundError:
            site.stale_share = None
            return []
        except OSError as exc:
            log.error(
                "the old epoch's share file %s could not be deleted (%s): DELETE IT BY HAND",
                path,
                exc.strerror,
            )
            return []
        site.stale_share = None
        with contextlib.suppress(OSError):
            fsync_dir(str(path.parent))
        return [path]
