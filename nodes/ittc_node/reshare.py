"""The ``ittc.v1.Reshare`` service: this node's side of moving the key to a new epoch.

Authorization is the plan, not the caller. Any holder of a certificate of the cluster CA
can connect (the TLS handshake checks that much), but nothing happens without a plan
that ``k`` sites of the current epoch approved with their own site keys: ``Prepare``
checks the approvals before the node sends anything, every later step belongs to a
prepared run, and ``Commit`` takes only a certificate that proves itself. A signing
client's identity gives it nothing here. Every step is audited: the plan, the approvals
that counted, the outcome, and the caller.

One run at a time. A holder's secrets (its masks, its additive share, its dealing
polynomial) live in memory only, in :class:`~ittc.scheme.reshare.Holder`: a holder that
crashes mid-run is simply not there any more, and the coordinator tries other holders.
A new member stores its share (encrypted, beside the old one) and a record of the run
before it acknowledges; the share waits there until a certificate commits it.

The steps (docs/lifecycle.md §3, §10):

* ``Prepare`` — check the approvals; a holder makes its round-1 masks.
* ``Deal`` — a holder checks the masks sealed to it against their commitments, then
  publishes its contribution and seals one sub-share to each new member; a wrong mask is
  answered with a complaint that reveals it (signed by its sender) instead.
* ``Accept`` — a new member runs every public check itself, checks its sub-shares,
  assembles and stores its share, and acknowledges (or complains, revealing only the
  wrong sub-share).
* ``Commit`` — on a valid certificate: the new epoch becomes current, the old share is
  destroyed, and the node refuses the old epoch from then on; a site that is not a member
  of the new epoch retires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import pathlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from ittc.errors import (
    ApprovalError,
    AuditLogError,
    CertificateError,
    EnvelopeError,
    ParameterError,
    ReshareError,
    Undecryptable,
    WireError,
)
from ittc.lifecycle import (
    ACK,
    Approval,
    Certificate,
    Plan,
    Sealed,
    SiteIdentity,
    SiteKey,
    Statement,
    approve,
    check_approvals,
    open_sealed,
    reveal_ephemeral,
    scheme_plan,
    seal,
    state,
)
from ittc.lifecycle.codec import (
    COMMITMENTS,
    COMPLAINT,
    CONTRIBUTION,
    Acknowledgement,
    Complaint,
    commitments_digest,
    decode_dealt,
    decode_mask_commitments,
    encode_acknowledgement,
    encode_dealt,
    encode_mask_commitments,
)
from ittc.lifecycle.envelope import Evidence
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.scheme.reshare import (
    Contribution,
    Holder,
    MaskCommitment,
    Outcome,
    PrivateValue,
    ResharePlan,
    acceptance_share,
    assemble_share,
    mask_table,
    verify_contributions,
)
from ittc.storage import KdfLimits
from ittc.storage.epochs import EpochStore
from ittc.wire import codec, tls
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc_node.audit import AuditLog, utc_iso
from ittc_node.service import Refusal, parse_message

__all__ = ["SERVICE_NAME", "Epoch", "ReshareService"]

log = logging.getLogger("ittc_node.reshare")

SERVICE_NAME = "ittc.v1.Reshare"
_SHOWN = 128


@dataclass(frozen=True)
class Epoch:
    """What the node signs in now, and who may approve its next reshare."""

    params: PublicParams
    #: None: this site holds no share of this epoch (it joins at the next reshare).
    share: KeyShare | None
    #: The sites of this epoch, by index (from the configuration or the certificate).
    sites: dict[int, SiteIdentity]
    #: The certificate that made this epoch current (None for the configured epoch).
    certificate: Certificate | None = None
    #: The configured epoch's nodes: (address, TLS name) by index, from the cluster file
    #: (a later epoch's are in its certificate's plan).
    configured_nodes: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def index(self) -> int | None:
        return None if self.share is None else self.share.index

    def reached_at(self, index: int) -> tuple[str, str] | None:
        """Where this epoch's ``index`` is reached: (address, TLS name), or None."""
        if self.certificate is not None:
            members = self.certificate.plan.members
            return next(((m.address, m.tls_name) for m in members if m.index == index), None)
        return self.configured_nodes.get(index)


@dataclass
class _Run:
    plan: Plan
    approvals: tuple[Approval, ...]
    approved_by: tuple[str, ...]
    holders: tuple[int, ...]
    attempt: bytes
    sp: ResharePlan
    holder: int | None
    member: int | None
    engine: Holder | None = None
    stage: str = "prepared"
    #: Every sealed value this node sent in the run (RevealEphemeral answers only these).
    sent: list[Sealed] = field(default_factory=list)

    @property
    def run_id(self) -> bytes:
        return self.sp.run_id

    def public(self) -> dict[str, Any]:
        """What the run record on disk says (public values only)."""
        return {
            "run_id": self.run_id.hex(),
            "plan_digest": self.plan.digest.hex(),
            "plan": self.plan.to_dict(),
            "approvals": [a.to_dict() for a in self.approvals],
            "holders": list(self.holders),
            "attempt": self.attempt.hex(),
            "holder": self.holder,
            "member": self.member,
            "stage": self.stage,
        }


class _Complained(Exception):
    """A step ends with a signed complaint instead of a value."""

    def __init__(self, statement: Statement, reason: str) -> None:
        super().__init__(reason)
        self.statement = statement
        self.reason = reason


Committed = Callable[[Epoch], Awaitable[None]]


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
        self.key = key
        self._passphrase = passphrase
        self.store = store
        self.epoch = epoch
        self.kdf = kdf
        self.audit = audit
        self.clock = clock
        self.on_commit = on_commit
        #: The configured (epoch-0) share file, deleted at the first commit if it can be.
        self.stale_share = stale_share
        self.faults = faults
        #: Approve refresh plans unattended, at most once per this many days (0: never).
        self.auto_refresh_days = auto_refresh_days
        self.retired = store.retired() is not None
        self._run: _Run | None = None
        self._lock = asyncio.Lock()
        #: Steps under way (each finishes even if its caller hangs up).
        self._steps: set[asyncio.Future[Any]] = set()

    def _step_done(self, task: asyncio.Future[Any]) -> None:
        self._steps.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, Refusal):
                log.error("reshare step failed: %s", type(exc).__name__)

    def __repr__(self) -> str:
        return f"<ReshareService site {self.key.name} epoch {self.epoch.params.epoch}>"

    # -- the wire ------------------------------------------------------------------------

    def rpc_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Methods taking raw bytes: parsed by the node (a malformed message is refused
        INVALID_ARGUMENT and audited like any other refusal)."""
        methods: list[tuple[str, Any, Any, Any]] = [
            ("Prepare", rpb.PrepareRequest, rpb.PrepareResponse, self.prepare),
            ("Deal", rpb.DealRequest, rpb.DealResponse, self.deal),
            ("Accept", rpb.AcceptRequest, rpb.AcceptResponse, self.accept),
            ("Commit", rpb.CommitRequest, rpb.CommitResponse, self.commit),
            ("Abort", rpb.AbortRequest, rpb.AbortResponse, self.abort),
            ("Status", rpb.StatusRequest, rpb.ReshareStatus, self.status),
            ("RevealEphemeral", rpb.RevealRequest, rpb.RevealResponse, self.reveal),
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

        async def step(request: Any, caller: str, peer: str, data: bytes) -> Any:
            try:
                if name == "Status":
                    return await handler(request, caller, peer)
                async with self._lock:
                    return await handler(request, caller, peer)
            except Refusal as refusal:
                await self._audit(
                    name,
                    caller,
                    peer,
                    "refused",
                    refusal.reason,
                    request_bytes=len(data),
                    request_sha256=hashlib.sha256(data).hexdigest(),
                    **getattr(refusal, "audit", {}),
                )
                raise

        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            caller = tls.peer_identity(context.auth_context()) or "(no identity)"
            peer = (context.peer() or "")[:_SHOWN]
            try:
                try:
                    request = parse_message(request_type, data)
                except Refusal as refusal:
                    await self._audit(
                        name,
                        caller,
                        peer,
                        "refused",
                        refusal.reason,
                        request_bytes=len(data),
                        request_sha256=hashlib.sha256(data).hexdigest(),
                    )
                    raise
                task = asyncio.ensure_future(step(request, caller, peer, data))
                self._steps.add(task)
                task.add_done_callback(self._step_done)
                return await asyncio.shield(task)
            except Refusal as refusal:
                await context.abort(refusal.code, refusal.reason)
                raise AssertionError("unreachable") from None  # pragma: no cover

        return call

    async def _audit(
        self, step: str, caller: str, peer: str, outcome: str, reason: str = "", **extra: Any
    ) -> None:
        record: dict[str, Any] = {
            "time": utc_iso(self.clock()),
            "type": "reshare",
            "step": step,
            "client": caller[:_SHOWN],
            "peer": peer,
            "site": self.key.name,
            "epoch": self.epoch.params.epoch,
            **extra,
            "outcome": outcome,
            "reason": reason[:1024],
        }
        try:
            await self.audit.append(record)
        except AuditLogError:
            log.error("reshare %s: could not write the audit line", step)

    @staticmethod
    def _refuse(code: grpc.StatusCode, reason: str, **audit: Any) -> NoReturn:
        """Refuse the call; ``audit`` adds fields to the refusal's audit line."""
        refusal = Refusal(code, reason)
        refusal.audit = audit  # type: ignore[attr-defined]
        raise refusal

    # -- helpers -------------------------------------------------------------------------

    def _check_not_retired(self) -> None:
        if self.retired:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"site {self.key.name} retired: it is not a member of the cluster any more",
            )

    def _site_index(self, sites: dict[int, SiteIdentity], name: str) -> int | None:
        for index, site in sites.items():
            if site.name == name:
                return index
        return None

    def _current_run(self, run_id: bytes, *stages: str) -> _Run:
        run = self._run
        if run is None or run.run_id != run_id:
            self._refuse(grpc.StatusCode.NOT_FOUND, "no such run in progress on this node")
        if stages and run.stage not in stages:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the run is {run.stage}, not {' or '.join(stages)}",
            )
        return run

    def _holder_sites(self, run: _Run) -> dict[int, SiteIdentity]:
        return {i: self.epoch.sites[i] for i in run.holders}

    def _verified(
        self, run: _Run, statements: Sequence[Statement], kind: str
    ) -> dict[int, tuple[Statement, bytes]]:
        """Exactly one ``kind`` statement per holder, each signed by that holder's site."""
        sites = self._holder_sites(run)
        out: dict[int, tuple[Statement, bytes]] = {}
        for statement in statements:
            if statement.kind != kind or statement.run_id != run.run_id:
                self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"not a {kind} of this run")
            index = self._site_index(sites, statement.sender)
            if index is None:
                self._refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a {kind} from {statement.sender[:64]!r}, not a holder of this run",
                )
            try:
                body = statement.verify(sites[index])
            except EnvelopeError:
                self._refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a {kind} not signed by holder {index}'s site (altered in transit?)",
                )
            if index in out and out[index][0] != statement:
                self._refuse(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"holder {index} signed two different {kind} statements",
                )
            out[index] = (statement, body)
        missing = [i for i in run.holders if i not in out]
        if missing:
            self._refuse(grpc.StatusCode.FAILED_PRECONDITION, f"no {kind} from holders {missing}")
        return out

    def _commitments(
        self, run: _Run, statements: Sequence[Statement]
    ) -> tuple[bytes, list[MaskCommitment]]:
        verified = self._verified(run, statements, COMMITMENTS)
        out: list[MaskCommitment] = []
        try:
            for index, (_, body) in verified.items():
                out.extend(decode_mask_commitments(run.sp, index, body))
            mask_table(run.sp, out)
        except ReshareError as exc:
            self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return commitments_digest([s for s, _ in verified.values()]), out

    def _complaint(
        self, run: _Run, sealed: Sealed, evidence: Evidence | None, reason: str
    ) -> _Complained:
        about = "mask" if sealed.kind == "mask" else "sub-share"
        body = Complaint(about, sealed, evidence, reason).to_body()
        run.stage = "complained"
        run.engine = None
        return _Complained(state(self.key, COMPLAINT, run.run_id, body), reason)

    def _open(
        self, run: _Run, sealed: Sealed, kind: str, sites: dict[int, SiteIdentity], recipient: int
    ) -> tuple[int, PrivateValue]:
        """Open one value sealed to this site; raises :class:`_Complained` if it does not
        open or is malformed, :class:`Refusal` if it is not its sender's."""
        if sealed.kind != kind or sealed.run_id != run.run_id or sealed.recipient != self.key.name:
            self._refuse(
                grpc.StatusCode.INVALID_ARGUMENT, f"not a {kind} of this run for this site"
            )
        sender = self._site_index(sites, sealed.sender)
        if sender is None or sender not in run.holders:
            self._refuse(
                grpc.StatusCode.INVALID_ARGUMENT, f"a {kind} from a site that is not a holder"
            )
        try:
            opened = open_sealed(self.key, sealed, sites[sender])
        except Undecryptable as exc:
            raise self._complaint(run, sealed, None, exc.reason) from None
        except (EnvelopeError, ParameterError):
            self._refuse(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a {kind} not signed by holder {sender}'s site (altered in transit?)",
            )
        try:
            value = PrivateValue.from_bytes(run.sp, kind, sender, recipient, opened.payload)  # type: ignore[arg-type]
        except ReshareError as exc:
            raise self._complaint(run, sealed, opened.evidence, str(exc)) from None
        return sender, value

    def _record(self, run: _Run) -> None:
        self.store.record_run(run.run_id, {**run.public(), "time": utc_iso(self.clock())})

    def _step_extra(self, run: _Run) -> dict[str, Any]:
        return {"run_id": run.run_id.hex(), "plan": run.plan.digest.hex()}

    # -- Prepare -------------------------------------------------------------------------

    async def prepare(
        self, request: rpb.PrepareRequest, caller: str, peer: str
    ) -> rpb.PrepareResponse:
        self._check_not_retired()
        try:
            plan = codec.plan_from_wire(request.plan)
            approvals = tuple(codec.approvals_from_wire(request.approvals))
            holders = codec.holders_from_wire(request.holders)
            attempt = bytes(request.attempt)
        except WireError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        epoch = self.epoch
        extra = {"plan": plan.digest.hex(), "holders": list(holders)}
        try:
            plan.check_against(epoch.params)
        except ParameterError as exc:
            self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **extra)
        # The approvals first: nothing is computed or sent for a plan that k current
        # sites did not approve.
        try:
            approved_by = check_approvals(
                plan, approvals, epoch.sites, epoch.params.k, now=self.clock()
            )
        except ApprovalError as exc:
            self._refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                f"plan not approved: {exc}",
                invalid_approvals=exc.invalid,
                **extra,
            )
        try:
            sp = scheme_plan(plan, epoch.params, holders, attempt)
        except ParameterError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self.store.run_path(sp.run_id).exists() or self.store.has_pending(sp.run_id):
            # A run id is used once. Prepared again, a member would store a second share
            # over the one it acknowledged, which the run's certificate may name: the
            # certificate would then commit everywhere but here.
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {sp.run_id.hex()[:16]} was prepared here before: a run id is used "
                "once (a retry is a new attempt, with a new nonce)",
                **extra,
            )
        holder = self._site_index({i: epoch.sites[i] for i in holders}, self.key.name)
        if holder is not None and (epoch.share is None or epoch.share.index != holder):
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this site is named holder {holder} but holds no share of index {holder}",
            )
        member = next((m.index for m in plan.members if m.site == self.key.identity), None)
        if holder is None and member is None:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this site is neither a holder nor a new member in this run",
            )
        run = _Run(plan, approvals, approved_by, holders, attempt, sp, holder, member)
        if self._run is not None:
            await self._audit(
                "Prepare",
                caller,
                peer,
                "replaced",
                "a new run replaces this one",
                **self._step_extra(self._run),
            )
        self._run = run
        response = rpb.PrepareResponse(run_id=run.run_id)
        if holder is not None:
            assert epoch.share is not None
            share = epoch.share
            engine = Holder(sp, share)
            made, masks = await asyncio.to_thread(engine.send_masks)
            run.engine = engine
            statement = state(
                self.key, COMMITMENTS, run.run_id, encode_mask_commitments(sp, holder, made)
            )
            sealed = [
                seal(
                    self.key,
                    epoch.sites[peer_index],
                    "mask",
                    run.run_id,
                    self._fault_mask(sp, value),
                )
                for peer_index, value in masks.items()
            ]
            run.sent.extend(sealed)
            response.commitments.CopyFrom(codec.statement_to_wire(statement))
            response.masks.extend(codec.sealed_to_wire(s) for s in sealed)
        self._record(run)
        self._crash("prepare")
        await self._audit(
            "Prepare",
            caller,
            peer,
            "prepared",
            approved_by=list(approved_by),
            role={"holder": holder, "member": member},
            new_n=plan.n,
            new_k=plan.k,
            attempt=attempt.hex(),
            **self._step_extra(run),
            holders=list(holders),
        )
        return response

    # -- Deal ----------------------------------------------------------------------------

    async def deal(self, request: rpb.DealRequest, caller: str, peer: str) -> rpb.DealResponse:
        try:
            run_id = codec.run_id_from_wire(request.run_id)
            statements = codec.statements_from_wire(request.commitments)
            masks = codec.sealed_list_from_wire(request.masks)
        except WireError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = self._current_run(run_id, "prepared")
        if run.holder is None or run.engine is None:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION, "this site is not a holder of this run"
            )
        seen, commitments = self._commitments(run, statements)
        table = {(c.sender, c.recipient): c for c in commitments}
        engine, me = run.engine, run.holder
        sites = self._holder_sites(run)
        try:
            received: set[int] = set()
            for sealed in masks:
                sender, value = self._open(run, sealed, "mask", sites, me)
                if sender >= me or sender in received:
                    self._refuse(
                        grpc.StatusCode.INVALID_ARGUMENT, f"an unexpected mask from holder {sender}"
                    )
                received.add(sender)
                try:
                    await asyncio.to_thread(engine.receive_mask, table[(sender, me)], value)
                except ReshareError as exc:
                    opened = open_sealed(self.key, sealed, sites[sender])
                    raise self._complaint(run, sealed, opened.evidence, str(exc)) from None
            missing = [i for i in engine.peers_below if i not in received]
            if missing:
                self._refuse(grpc.StatusCode.FAILED_PRECONDITION, f"no mask from holders {missing}")
            contribution, subs = await asyncio.to_thread(engine.contribute)
        except _Complained as complaint:
            self._record(run)
            await self._audit(
                "Deal", caller, peer, "complained", complaint.reason, **self._step_extra(run)
            )
            return rpb.DealResponse(complaint=codec.statement_to_wire(complaint.statement))
        contribution = self._fault_contribution(contribution)
        statement = state(
            self.key, CONTRIBUTION, run.run_id, encode_dealt(run.sp, contribution, seen)
        )
        sealed_subs = []
        for j, value in subs.items():
            payload = self._fault_sub_share(run, j, value)
            sealed = seal(self.key, run.plan.member(j).site, "sub-share", run.run_id, payload)
            sealed_subs.append(self._fault_unopenable(j, sealed))
        run.sent.extend(sealed_subs)
        run.engine = None
        run.stage = "dealt"
        self._record(run)
        self._crash("deal")
        await self._audit("Deal", caller, peer, "dealt", **self._step_extra(run))
        return rpb.DealResponse(
            contribution=codec.statement_to_wire(statement),
            sub_shares=[codec.sealed_to_wire(s) for s in sealed_subs],
        )

    # -- Accept --------------------------------------------------------------------------

    async def accept(
        self, request: rpb.AcceptRequest, caller: str, peer: str
    ) -> rpb.AcceptResponse:
        try:
            run_id = codec.run_id_from_wire(request.run_id)
            commitment_statements = codec.statements_from_wire(request.commitments)
            contribution_statements = codec.statements_from_wire(request.contributions)
            sub_shares = codec.sealed_list_from_wire(request.sub_shares)
        except WireError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = self._current_run(run_id, "prepared", "dealt")
        if run.member is None:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION, "this site is not a new member of this run"
            )
        seen, commitments = self._commitments(run, commitment_statements)
        contributions: list[Contribution] = []
        for index, (_, body) in sorted(
            self._verified(run, contribution_statements, CONTRIBUTION).items()
        ):
            try:
                their_seen, contribution = decode_dealt(run.sp, index, body)
            except ReshareError as exc:
                self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            if their_seen != seen:
                self._refuse(
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
            self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **self._step_extra(run))
        sites = self._holder_sites(run)
        member = run.member
        try:
            values: dict[int, tuple[Sealed, PrivateValue]] = {}
            for sealed in sub_shares:
                sender, value = self._open(run, sealed, "sub-share", sites, member)
                if sender in values:
                    self._refuse(
                        grpc.StatusCode.INVALID_ARGUMENT, f"two sub-shares from holder {sender}"
                    )
                values[sender] = (sealed, value)
            missing = [i for i in run.holders if i not in values]
            if missing:
                self._refuse(
                    grpc.StatusCode.FAILED_PRECONDITION, f"no sub-share from holders {missing}"
                )
            if self._fault("false-complaint"):
                sealed = values[run.holders[0]][0]
                opened = open_sealed(self.key, sealed, sites[run.holders[0]])
                raise self._complaint(
                    run, sealed, opened.evidence, "a false complaint (test fault)"
                )
            try:
                share = await asyncio.to_thread(
                    assemble_share, outcome, member, [v for _, v in values.values()]
                )
            except ReshareError as exc:
                # Reveal exactly one wrong sub-share (signed by its holder), nothing else.
                bad = exc.holders[0] if exc.holders else None
                if bad is None:
                    self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                sealed = values[bad][0]
                opened = open_sealed(self.key, sealed, sites[bad])
                raise self._complaint(run, sealed, opened.evidence, str(exc)) from None
        except _Complained as complaint:
            self._record(run)
            await self._audit(
                "Accept", caller, peer, "complained", complaint.reason, **self._step_extra(run)
            )
            return rpb.AcceptResponse(complaint=codec.statement_to_wire(complaint.statement))
        # Stored and synced before anything is acknowledged.
        await asyncio.to_thread(
            self.store.store_pending, run.run_id, share, self._passphrase, self.kdf
        )
        share_for_ack = self._fault_acceptance_share(outcome, share)
        ack = Acknowledgement(
            run.run_id, outcome.transcript, outcome.params.epoch_id_bytes, share_for_ack
        )
        run.stage = "acknowledged"
        self._record(run)
        statement = state(self.key, ACK, run.run_id, encode_acknowledgement(outcome.params, ack))
        self._crash("accept")
        await self._audit(
            "Accept",
            caller,
            peer,
            "acknowledged",
            new_epoch=outcome.params.epoch,
            new_epoch_id=outcome.params.epoch_id,
            member=member,
            **self._step_extra(run),
        )
        return rpb.AcceptResponse(ack=codec.statement_to_wire(statement))

    # -- Commit --------------------------------------------------------------------------

    async def commit(
        self, request: rpb.CommitRequest, caller: str, peer: str
    ) -> rpb.CommitResponse:
        self._check_not_retired()
        try:
            certificate = Certificate.from_json(bytes(request.certificate))
        except CertificateError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        epoch = self.epoch
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
            self._refuse(code, f"certificate refused: {exc}", **extra)
        member = certificate.member_index(self.key.identity)
        if member is None:
            gone = await asyncio.to_thread(self.store.retire, certificate)
            gone += self.delete_stale_share()
            self.retired = True
            self._run = None
            await self._audit(
                "Commit",
                caller,
                peer,
                "retired",
                "this site is not a member of the new epoch",
                deleted=[str(p) for p in gone],
                **extra,
            )
            self.epoch = Epoch(new, None, certificate.sites(), certificate)
            if self.on_commit is not None:
                await self.on_commit(self.epoch)
            return rpb.CommitResponse(epoch=new.epoch, epoch_id=new.epoch_id, retired=True)
        try:
            share, gone = await asyncio.to_thread(
                self.store.commit, certificate, member, self._passphrase
            )
        except CertificateError as exc:
            self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **extra)
        gone += self.delete_stale_share()
        self.epoch = Epoch(new, share, certificate.sites(), certificate)
        self._run = None
        self._crash("commit")
        await self._audit(
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
            await self.on_commit(self.epoch)
        return rpb.CommitResponse(epoch=new.epoch, epoch_id=new.epoch_id)

    def delete_stale_share(self) -> list[pathlib.Path]:
        """The share file the configuration names is of the first epoch: delete it at the
        first commit. If the node may not (a read-only folder), say so loudly: the old
        share must be destroyed by hand."""
        path = self.stale_share
        if path is None:
            return []
        try:
            path.unlink()
        except FileNotFoundError:
            self.stale_share = None
            return []
        except OSError as exc:
            log.error(
                "the old epoch's share file %s could not be deleted (%s): DELETE IT BY HAND",
                path,
                exc.strerror,
            )
            return []
        self.stale_share = None
        with contextlib.suppress(OSError):
            from ittc.storage.files import _fsync_dir

            _fsync_dir(str(path.parent))
        return [path]

    # -- Abort, Status, RevealEphemeral --------------------------------------------------

    async def abort(self, request: rpb.AbortRequest, caller: str, peer: str) -> rpb.AbortResponse:
        try:
            run_id = codec.run_id_from_wire(request.run_id)
            attempt = codec.attempt_from_wire(request.attempt)
        except WireError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = self._run
        if run is None or run.run_id != run_id:
            return rpb.AbortResponse()
        # The run id is public (Status); its attempt nonce only the coordinator and the
        # participants have seen.
        if not hmac.compare_digest(attempt, run.attempt):
            self._refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                "not the attempt nonce of the run in progress",
                **self._step_extra(run),
            )
        # An acknowledged share stays until an epoch commits (a certificate might exist);
        # the holder's secrets go now.
        self._run = None
        run.engine = None
        if run.stage != "acknowledged":
            run.stage = "aborted"
            self._record(run)
        await self._audit(
            "Abort", caller, peer, "aborted", f"was {run.stage}", **self._step_extra(run)
        )
        return rpb.AbortResponse()

    async def status(self, request: rpb.StatusRequest, caller: str, peer: str) -> rpb.ReshareStatus:
        epoch, run = self.epoch, self._run
        chain: list[bytes] = []
        if request.with_certificates:
            first = max(request.certificates_after + 1, epoch.params.epoch - 63)
            for e in range(first, epoch.params.epoch + 1):
                stored = self.store.certificate_bytes(e)
                if stored is not None:
                    chain.append(stored)
        return rpb.ReshareStatus(
            certificates=chain,
            epoch=epoch.params.epoch,
            epoch_id=epoch.params.epoch_id,
            key_id=epoch.params.key_id,
            site=self.key.name,
            index=epoch.index or 0,
            retired=self.retired,
            run_id=run.run_id if run is not None else b"",
            run_stage=run.stage if run is not None else "",
            pending_runs=self.store.pending_runs(),
            certificate=(
                epoch.certificate.to_json().encode("ascii")
                if epoch.certificate is not None
                else b""
            ),
        )

    async def reveal(
        self, request: rpb.RevealRequest, caller: str, peer: str
    ) -> rpb.RevealResponse:
        try:
            statement = codec.statement_from_wire(request.complaint)
        except WireError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        run = self._current_run(statement.run_id)
        if statement.kind != COMPLAINT:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, "not a complaint")
        try:
            complaint = Complaint.from_body(statement.body)
        except ParameterError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        sealed = complaint.sealed
        # Only for a value this node sent, and only to a complaint its recipient signed,
        # saying it does not open: the key opens that one message, which the recipient
        # already holds.
        if (
            complaint.evidence is not None
            or sealed not in run.sent
            or sealed.sender != self.key.name
        ):
            self._refuse(
                grpc.StatusCode.PERMISSION_DENIED, "no complaint about a value this node sent"
            )
        recipient = self._recipient_identity(run, sealed)
        if recipient is None or statement.sender != recipient.name:
            self._refuse(grpc.StatusCode.PERMISSION_DENIED, "the complaint is not the recipient's")
        try:
            statement.verify(recipient)
        except EnvelopeError:
            self._refuse(
                grpc.StatusCode.PERMISSION_DENIED, "the complaint is not signed by its recipient"
            )
        await self._audit(
            "RevealEphemeral",
            caller,
            peer,
            "revealed",
            f"to answer {recipient.name}'s complaint",
            **self._step_extra(run),
        )
        return rpb.RevealResponse(ephemeral=reveal_ephemeral(self.key, sealed))

    async def approve_refresh(
        self, request: rpb.ApproveRefreshRequest, caller: str, peer: str
    ) -> rpb.Approval:
        """Approve, unattended, a plan that only refreshes this epoch (see the proto)."""
        self._check_not_retired()
        if self.auto_refresh_days <= 0:
            self._refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                "this site approves plans only by hand ([reshare] auto_approve_refresh_days)",
            )
        try:
            plan = codec.plan_from_wire(request.plan)
        except WireError as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        epoch, now = self.epoch, self.clock()
        extra = {"plan": plan.digest.hex()}
        try:
            plan.check_against(epoch.params)
        except ParameterError as exc:
            self._refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc), **extra)
        # The same site at every index, reached where it is now: a plan that moves a site
        # would send the combiners that follow its certificate elsewhere.
        same = plan.n == epoch.params.n and plan.k == epoch.params.k
        same = same and all(
            m.site == epoch.sites.get(m.index)
            and (m.address, m.tls_name) == epoch.reached_at(m.index)
            for m in plan.members
        )
        if not same:
            self._refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                "not a refresh (another site, address, index or threshold): approve it by hand",
                **extra,
            )
        if not now < plan.not_after <= now + 2 * 86400:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                "a refresh plan for unattended approval expires within two days",
                **extra,
            )
        last = self.store.last_auto_approval()
        again = last is not None and last[1] == plan.digest.hex()
        if last is not None and not again and now - last[0] < self.auto_refresh_days * 86400:
            self._refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this site approved a refresh {(now - last[0]) / 86400:.1f} days ago; it "
                f"approves one every {self.auto_refresh_days} days unattended",
                **extra,
            )
        approval = approve(self.key, plan)
        if not again:
            self.store.record_auto_approval(now, plan.digest.hex())
        await self._audit("ApproveRefresh", caller, peer, "approved", **extra)
        return rpb.Approval(site=approval.site, signature=approval.signature)

    def _recipient_identity(self, run: _Run, sealed: Sealed) -> SiteIdentity | None:
        if sealed.kind == "mask":
            candidates = [self.epoch.sites[i] for i in run.holders]
        else:
            candidates = [m.site for m in run.plan.members]
        for site in candidates:
            if site.name == sealed.recipient:
                return site
        return None

    # -- test faults (a liar in every role; tests/test_reshare_*.py) ------------------------

    def _fault(self, name: str) -> bool:
        return self.faults is not None and self.faults.reshare == name

    def _crash(self, step: str) -> None:
        if self.faults is not None:
            self.faults.crash(step)

    def _fault_unopenable(self, member: int, sealed: Sealed) -> Sealed:
        if not self._fault(f"unopenable:{member}"):
            return sealed
        import dataclasses
        import secrets

        garbage = dataclasses.replace(
            sealed, ciphertext=secrets.token_bytes(len(sealed.ciphertext))
        )
        return dataclasses.replace(garbage, signature=self.key.sign(garbage.outer_bytes()))

    def _fault_mask(self, sp: ResharePlan, value: PrivateValue) -> bytes:
        if self._fault("bad-mask"):
            value = PrivateValue(
                "mask", value.sender, value.recipient, value.dangerously_export() + 1
            )
        return value.to_bytes(sp)

    def _fault_contribution(self, contribution: Contribution) -> Contribution:
        if self._fault("bad-contribution"):
            return Contribution(
                contribution.holder,
                contribution.masked + 1,
                contribution.constant,
                contribution.coefficients,
            )
        return contribution

    def _fault_sub_share(self, run: _Run, member: int, value: PrivateValue) -> bytes:
        if self._fault(f"bad-sub-share:{member}"):
            value = PrivateValue("sub-share", value.sender, member, value.dangerously_export() + 1)
        return value.to_bytes(run.sp)

    def _fault_acceptance_share(self, outcome: Outcome, share: KeyShare) -> Any:
        honest = acceptance_share(outcome, share)
        if self._fault("bad-acceptance"):
            from ittc.scheme.proofs import SignatureShare

            return SignatureShare(
                honest.index, honest.value * 4 % outcome.params.modulus, honest.proof
            )
        return honest
