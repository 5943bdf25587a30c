"""The ``ittc.v1.Reshare`` gRPC service: the steps on the wire, one at a time, audited.

``Prepare`` (here) checks the plan's approvals before anything is computed and gives the
node its role in the run; a holder's steps are in :mod:`ittc_node.reshare.holder`, a new
member's and the commit in :mod:`ittc_node.reshare.member`; ``Abort``, ``Status`` and the
unattended approval of a refresh (``ApproveRefresh``) are here too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import pathlib
import time
from collections.abc import Callable
from typing import Any

import grpc

from ittc.errors import ApprovalError, ParameterError, WireError
from ittc.lifecycle import SiteKey, approve, check_approvals, scheme_plan
from ittc.storage import KdfLimits
from ittc.storage.epochs import EpochStore
from ittc.wire import codec, tls
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc_node.audit import AuditLog
from ittc_node.reshare.faults import ReshareFaults
from ittc_node.reshare.holder import HolderSteps
from ittc_node.reshare.member import Committed, MemberSteps
from ittc_node.reshare.refresh import check_refresh
from ittc_node.reshare.state import SHOWN, Epoch, Run, SiteState, refuse, site_index
from ittc_node.service import Refusal, parse_message

__all__ = ["SERVICE_NAME", "ReshareService"]

log = logging.getLogger("ittc_node.reshare")

SERVICE_NAME = "ittc.v1.Reshare"


class ReshareService:
    """One node's Reshare service. ``epoch`` is what it signs in now; ``on_commit`` is
    called with the new epoch after a commit (the daemon swaps its signer), and with an
    epoch without a share when the site retires."""

    def __init__(
        self,
        *,
        key: SiteKey,
        passphrase: bytes,
        store: EpochStore,
        epoch: Epoch,
        kdf: KdfLimits,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        on_commit: Committed | None = None,
        stale_share: pathlib.Path | None = None,
        faults: Any = None,
        auto_refresh_days: int = 0,
    ) -> None:
        self.site = SiteState(
            key=key,
            passphrase=passphrase,
            store=store,
            epoch=epoch,
            kdf=kdf,
            audit=audit,
            clock=clock,
            faults=ReshareFaults(faults, key),
            stale_share=stale_share,
        )
        self.holder = HolderSteps(self.site)
        self.member = MemberSteps(self.site, on_commit)
        #: Approve refresh plans unattended, at most once per this many days (0: never).
        self.auto_refresh_days = auto_refresh_days
        self._lock = asyncio.Lock()
        #: Steps under way (each finishes even if its caller hangs up).
        self._steps: set[asyncio.Future[Any]] = set()

    @property
    def epoch(self) -> Epoch:
        """The epoch this node signs in now."""
        return self.site.epoch

    @property
    def retired(self) -> bool:
        return self.site.retired

    def delete_stale_share(self) -> list[pathlib.Path]:
        """Delete the configured first-epoch share file once an epoch after it committed."""
        return self.member.delete_stale_share()

    def _step_done(self, task: asyncio.Future[Any]) -> None:
        self._steps.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, Refusal):
                log.error("reshare step failed: %s", type(exc).__name__)

    def __repr__(self) -> str:
        return f"<ReshareService site {self.site.key.name} epoch {self.epoch.params.epoch}>"

    # -- the wire ------------------------------------------------------------------------

    def rpc_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Methods taking raw bytes: parsed by the node (a malformed message is refused
        INVALID_ARGUMENT and audited like any other refusal)."""
        methods: list[tuple[str, Any, Any, Any]] = [
            ("Prepare", rpb.PrepareRequest, rpb.PrepareResponse, self.prepare),
            ("Deal", rpb.DealRequest, rpb.DealResponse, self.holder.deal),
            ("Accept", rpb.AcceptRequest, rpb.AcceptResponse, self.member.accept),
            ("Commit", rpb.CommitRequest, rpb.CommitResponse, self.member.commit),
            ("Abort", rpb.AbortRequest, rpb.AbortResponse, self.abort),
            ("Status", rpb.StatusRequest, rpb.ReshareStatus, self.status),
            ("RevealEphemeral", rpb.RevealRequest, rpb.RevealResponse, self.holder.reveal),
            ("ApproveRefresh", rpb.ApproveRefreshRequest, rpb.Approval, self.approve_refresh),
        ]
        return {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, request, handler),
                response_serializer=response.SerializeToString,
            )
            for name, request, response, handler in methods
        }

    def _wrap(self, name: str, request_type: Any, handler: Any) -> Any:
        """A handler that parses the request itself, runs one step at a time (``Status``
        aside), audits a refusal, and finishes a step it started even if the caller hangs
        up: a step changes the node's state (a share stored, an epoch committed), and half
        of one, with the next step let in, would leave the state torn."""

        async def audit_refusal(
            caller: str, peer: str, data: bytes, refusal: Refusal, **extra: Any
        ) -> None:
            await self.site.audit(
                name,
                caller,
                peer,
                "refused",
                refusal.reason,
                request_bytes=len(data),
                request_sha256=hashlib.sha256(data).hexdigest(),
                **extra,
            )

        async def step(request: Any, caller: str, peer: str, data: bytes) -> Any:
            try:
                if name == "Status":
                    return await handler(request, caller, peer)
                async with self._lock:
                    return await handler(request, caller, peer)
            except Refusal as refusal:
                await audit_refusal(caller, peer, data, refusal, **getattr(refusal, "audit", {}))
                raise

        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            caller = tls.peer_identity(context.auth_context()) or "(no identity)"
            peer = (context.peer() or "")[:SHOWN]
            try:
                try:
                    request = parse_message(request_type, data)
                except Refusal as refusal:
                    await audit_refusal(caller, peer, data, refusal)
                    raise
                task = asyncio.ensure_future(step(request, caller, peer, data))
                self._steps.add(task)
                task.add_done_callback(self._step_done)
                return await asyncio.shield(task)
            except Refusal as refusal:
                await context.abort(refusal.code, refusal.reason)
                raise AssertionError("unreachable") from None  # pragma: no cover

        return call

    # -- Prepare -------------------------------------------------------------------------

    async def prepare(
        self, request: rpb.PrepareRequest, caller: str, peer: str
    ) -> rpb.PrepareResponse:
        site = self.site
        site.check_not_retired()
        try:
            plan = codec.plan_from_wire(request.plan)
            approvals = tuple(codec.approvals_from_wire(request.approvals))
            holders = codec.holders_from_wire(request.holders)
            attempt = bytes(request.attempt)
        except WireError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        epoch = site.epoch
        extra = {"plan": plan.digest.hex(), "holders": list(holders)}
        try:
            plan.check_against(epoch.params)
        except ParameterError as exc:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **extra)
        # The approvals first: nothing is computed or sent for a plan that k current
        # sites did not approve.
        try:
            approved_by = check_approvals(
                plan, approvals, epoch.sites, epoch.params.k, now=site.clock()
            )
        except ApprovalError as exc:
            refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                f"plan not approved: {exc}",
                invalid_approvals=exc.invalid,
                **extra,
            )
        try:
            sp = scheme_plan(plan, epoch.params, holders, attempt)
        except ParameterError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if site.store.run_path(sp.run_id).exists() or site.store.has_pending(sp.run_id):
            # A run id is used once. Prepared again, a member would store a second share
            # over the one it acknowledged, which the run's certificate may name: the
            # certificate would then commit everywhere but here.
            refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {sp.run_id.hex()[:16]} was prepared here before: a run id is used "
                "once (a retry is a new attempt, with a new nonce)",
                **extra,
            )
        holder = site_index({i: epoch.sites[i] for i in holders}, site.key.name)
        if holder is not None and (epoch.share is None or epoch.share.index != holder):
            refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this site is named holder {holder} but holds no share of index {holder}",
            )
        member = next((m.index for m in plan.members if m.site == site.key.identity), None)
        if holder is None and member is None:
            refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this site is neither a holder nor a new member in this run",
            )
        run = Run(plan, approvals, approved_by, holders, attempt, sp, holder, member)
        if site.run is not None:
            await site.audit(
                "Prepare",
                caller,
                peer,
                "replaced",
                "a new run replaces this one",
                **site.run.audit_fields(),
            )
        site.run = run
        response = rpb.PrepareResponse(run_id=run.run_id)
        if holder is not None:
            assert epoch.share is not None
            await self.holder.send_masks(run, epoch.share, response)
        site.record(run)
        site.faults.crash("prepare")
        await site.audit(
            "Prepare",
            caller,
            peer,
            "prepared",
            approved_by=list(approved_by),
            role={"holder": holder, "member": member},
            new_n=plan.n,
            new_k=plan.k,
            attempt=attempt.hex(),
            **run.audit_fields(),
            holders=list(holders),
        )
        return response

    # -- Abort, Status, ApproveRefresh ---------------------------------------------------

    async def abort(self, request: rpb.AbortRequest, caller: str, peer: str) -> rpb.AbortResponse:
        site = self.site
        try:
            run_id = codec.run_id_from_wire(request.run_id)
            attempt = codec.attempt_from_wire(request.attempt)
        except WireError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = site.run
        if run is None or run.run_id != run_id:
            return rpb.AbortResponse()
        # The run id is public (Status); its attempt nonce only the coordinator and the
        # participants have seen.
        if not hmac.compare_digest(attempt, run.attempt):
            refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                "not the attempt nonce of the run in progress",
                **run.audit_fields(),
            )
        # An acknowledged share stays until an epoch commits (a certificate might exist);
        # the holder's secrets go now.
        site.run = None
        run.engine = None
        if run.stage != "acknowledged":
            run.stage = "aborted"
            site.record(run)
        await site.audit("Abort", caller, peer, "aborted", f"was {run.stage}", **run.audit_fields())
        return rpb.AbortResponse()

    async def status(self, request: rpb.StatusRequest, caller: str, peer: str) -> rpb.ReshareStatus:
        return self.site.status(request.with_certificates, request.certificates_after)

    async def approve_refresh(
        self, request: rpb.ApproveRefreshRequest, caller: str, peer: str
    ) -> rpb.Approval:
        """Approve, unattended, a plan that only refreshes this epoch (see the proto)."""
        site = self.site
        site.check_not_retired()
        if self.auto_refresh_days <= 0:
            refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                "this site approves plans only by hand ([reshare] auto_approve_refresh_days)",
            )
        try:
            plan = codec.plan_from_wire(request.plan)
        except WireError as exc:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        epoch, now = site.epoch, site.clock()
        extra = {"plan": plan.digest.hex()}
        again = check_refresh(
            plan, epoch, now, site.store.last_auto_approval(), self.auto_refresh_days
        )
        approval = approve(site.key, plan)
        if not again:
            site.store.record_auto_approval(now, plan.digest.hex(), epoch.params.epoch_id)
        await site.audit("ApproveRefresh", caller, peer, "approved", **extra)
        return rpb.Approval(site=approval.site, signature=approval.signature)
