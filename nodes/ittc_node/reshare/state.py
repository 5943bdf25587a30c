"""What the steps of a reshare share on one node: the site, its epoch, the run under way.

:class:`SiteState` holds this site's key and storage, the epoch it signs in, and the run
it takes part in (one at a time); it audits steps, records runs on disk, and runs the
checks every step makes on what the coordinator relays: statements signed by the run's
holders, values sealed to this site. A check that fails raises :class:`Refusal` (the
call is refused and audited) or :class:`Complained` (the step answers with a signed
complaint that names the sender of a value that does not open or is malformed).
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from ittc.errors import (
    AuditLogError,
    EnvelopeError,
    ParameterError,
    ReshareError,
    Undecryptable,
)
from ittc.lifecycle import (
    Approval,
    Certificate,
    Plan,
    Sealed,
    SiteIdentity,
    SiteKey,
    Statement,
    open_sealed,
    state,
)
from ittc.lifecycle.codec import (
    COMMITMENTS,
    COMPLAINT,
    Complaint,
    commitments_digest,
    decode_mask_commitments,
)
from ittc.lifecycle.envelope import Evidence
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.scheme.reshare import Holder, MaskCommitment, PrivateValue, ResharePlan, mask_table
from ittc.storage import KdfLimits
from ittc.storage.epochs import EpochStore
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc_node.audit import AuditLog, utc_iso
from ittc_node.reshare.faults import ReshareFaults
from ittc_node.service import Refusal

__all__ = ["SHOWN", "Complained", "Epoch", "Run", "SiteState", "refuse"]

log = logging.getLogger("ittc_node.reshare")

#: Caller-given strings in audit lines are cut to this length.
SHOWN = 128


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
class Run:
    """The run this node takes part in: the approved plan, its role, how far it got."""

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

    def audit_fields(self) -> dict[str, Any]:
        """The run and plan named in each of its steps' audit lines."""
        return {"run_id": self.run_id.hex(), "plan": self.plan.digest.hex()}


class Complained(Exception):
    """A step ends with a signed complaint instead of a value."""

    def __init__(self, statement: Statement, reason: str) -> None:
        super().__init__(reason)
        self.statement = statement
        self.reason = reason


def refuse(code: grpc.StatusCode, reason: str, **audit: Any) -> NoReturn:
    """Refuse the call; ``audit`` adds fields to the refusal's audit line."""
    refusal = Refusal(code, reason)
    refusal.audit = audit  # type: ignore[attr-defined]
    raise refusal


def site_index(sites: dict[int, SiteIdentity], name: str) -> int | None:
    """The index of the site called ``name`` among ``sites``."""
    for index, site in sites.items():
        if site.name == name:
            return index
    return None


class SiteState:
    """This site's part in resharing: its key, storage and epoch, and the run under way."""

    def __init__(
        self,
        *,
        key: SiteKey,
        passphrase: bytes,
        store: EpochStore,
        epoch: Epoch,
        kdf: KdfLimits,
        audit: AuditLog,
        clock: Callable[[], float],
        faults: ReshareFaults,
        stale_share: pathlib.Path | None,
    ) -> None:
        self.key = key
        self.passphrase = passphrase
        self.store = store
        self.epoch = epoch
        self.kdf = kdf
        self.audit_log = audit
        self.clock = clock
        self.faults = faults
        #: The configured (epoch-0) share file, deleted at the first commit if it can be.
        self.stale_share = stale_share
        self.retired = store.retired() is not None
        self.run: Run | None = None

    # -- the record ----------------------------------------------------------------------

    async def audit(
        self, step: str, caller: str, peer: str, outcome: str, reason: str = "", **extra: Any
    ) -> None:
        record: dict[str, Any] = {
            "time": utc_iso(self.clock()),
            "type": "reshare",
            "step": step,
            "client": caller[:SHOWN],
            "peer": peer,
            "site": self.key.name,
            "epoch": self.epoch.params.epoch,
            **extra,
            "outcome": outcome,
            "reason": reason[:1024],
        }
        try:
            await self.audit_log.append(record)
        except AuditLogError:
            log.error("reshare %s: could not write the audit line", step)

    def record(self, run: Run) -> None:
        """Write the run's public record to disk (its stage, plan, approvals)."""
        self.store.record_run(run.run_id, {**run.public(), "time": utc_iso(self.clock())})

    def status(self, with_certificates: bool, after: int) -> rpb.ReshareStatus:
        """The site's epoch, its run, and (``with_certificates``) the commit certificates
        of the epochs after ``after`` (at most the last 64)."""
        epoch, run = self.epoch, self.run
        chain: list[bytes] = []
        if with_certificates:
            first = max(after + 1, epoch.params.epoch - 63)
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

    # -- where a step may start ----------------------------------------------------------

    def check_not_retired(self) -> None:
        if self.retired:
            refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"site {self.key.name} retired: it is not a member of the cluster any more",
            )

    def current_run(self, run_id: bytes, *stages: str) -> Run:
        """The run under way, if it is ``run_id`` and at one of ``stages`` (any if none)."""
        run = self.run
        if run is None or run.run_id != run_id:
            refuse(grpc.StatusCode.NOT_FOUND, "no such run in progress on this node")
        if stages and run.stage not in stages:
            refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the run is {run.stage}, not {' or '.join(stages)}",
            )
        return run

    def holder_sites(self, run: Run) -> dict[int, SiteIdentity]:
        return {i: self.epoch.sites[i] for i in run.holders}

    # -- what the coordinator relays -----------------------------------------------------

    def verified(
        self, run: Run, statements: Sequence[Statement], kind: str
    ) -> dict[int, tuple[Statement, bytes]]:
        """Exactly one ``kind`` statement per holder, each signed by that holder's site."""
        sites = self.holder_sites(run)
        out: dict[int, tuple[Statement, bytes]] = {}
        for statement in statements:
            if statement.kind != kind or statement.run_id != run.run_id:
                refuse(grpc.StatusCode.INVALID_ARGUMENT, f"not a {kind} of this run")
            index = site_index(sites, statement.sender)
            if index is None:
                refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a {kind} from {statement.sender[:64]!r}, not a holder of this run",
                )
            try:
                body = statement.verify(sites[index])
            except EnvelopeError:
                refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a {kind} not signed by holder {index}'s site (altered in transit?)",
                )
            if index in out and out[index][0] != statement:
                refuse(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"holder {index} signed two different {kind} statements",
                )
            out[index] = (statement, body)
        missing = [i for i in run.holders if i not in out]
        if missing:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, f"no {kind} from holders {missing}")
        return out

    def commitments(
        self, run: Run, statements: Sequence[Statement]
    ) -> tuple[bytes, list[MaskCommitment]]:
        """The holders' mask commitments, each checked; and the digest of what was seen."""
        verified = self.verified(run, statements, COMMITMENTS)
        out: list[MaskCommitment] = []
        try:
            for index, (_, body) in verified.items():
                out.extend(decode_mask_commitments(run.sp, index, body))
            mask_table(run.sp, out)
        except ReshareError as exc:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return commitments_digest([s for s, _ in verified.values()]), out

    def complaint(
        self, run: Run, sealed: Sealed, evidence: Evidence | None, reason: str
    ) -> Complained:
        """End the run's part here with a signed complaint about ``sealed``."""
        about = "mask" if sealed.kind == "mask" else "sub-share"
        body = Complaint(about, sealed, evidence, reason).to_body()
        run.stage = "complained"
        run.engine = None
        return Complained(state(self.key, COMPLAINT, run.run_id, body), reason)

    def open(
        self, run: Run, sealed: Sealed, kind: str, sites: dict[int, SiteIdentity], recipient: int
    ) -> tuple[int, PrivateValue]:
        """Open one value sealed to this site; raises :class:`Complained` if it does not
        open or is malformed, :class:`Refusal` if it is not its sender's."""
        if sealed.kind != kind or sealed.run_id != run.run_id or sealed.recipient != self.key.name:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, f"not a {kind} of this run for this site")
        sender = site_index(sites, sealed.sender)
        if sender is None or sender not in run.holders:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, f"a {kind} from a site that is not a holder")
        try:
            opened = open_sealed(self.key, sealed, sites[sender])
        except Undecryptable as exc:
            raise self.complaint(run, sealed, None, exc.reason) from None
        except (EnvelopeError, ParameterError):
            refuse(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a {kind} not signed by holder {sender}'s site (altered in transit?)",
            )
        try:
            value = PrivateValue.from_bytes(run.sp, kind, sender, recipient, opened.payload)  # type: ignore[arg-type]
        except ReshareError as exc:
            raise self.complaint(run, sealed, opened.evidence, str(exc)) from None
        return sender, value

    def recipient_identity(self, run: Run, sealed: Sealed) -> SiteIdentity | None:
        """The site ``sealed`` was sealed to, among those that may receive its kind."""
        if sealed.kind == "mask":
            candidates = [self.epoch.sites[i] for i in run.holders]
        else:
            candidates = [m.site for m in run.plan.members]
        for site in candidates:
            if site.name == sealed.recipient:
                return site
        return None
