"""Commit certificates: the proof that an epoch may become current (docs/lifecycle.md §10).

A certificate holds the approved plan and its approvals, the attempt that ran (holders
and nonce, hence the run id), the new epoch's public parameters, and every new member's
signed acknowledgement: "I verified my new share against these parameters and stored
it", with the member's acceptance signature share. It is **self-certifying**: anyone who
knows the epoch it starts from (parameters and site identities) can check it, so a node
accepts it from anyone — the coordinator, a combiner, another node — and it can be
handed on as often as needed until every node has committed.

What :meth:`Certificate.verify` checks, against the epoch it starts from:

* the plan starts from that epoch, and at least ``k`` of its sites approved it (expiry
  is not checked again: it bounded when a run could *start*);
* the holders are ``k`` distinct indices of that epoch; the run id follows from them;
* the new parameters are exactly what that plan makes (epoch, key, ``n'``, ``k'``, the
  public bounds), for their verification keys;
* one acknowledgement from each new member, signed by the site the plan names for it,
  all for that run, one transcript, and the new parameters' epoch id;
* the acceptance shares in them combine to valid signatures (the same test the
  coordinator ran before writing the certificate).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ittc.errors import ApprovalError, CertificateError, IttcError, ParameterError
from ittc.lifecycle.codec import Acknowledgement, decode_acknowledgement
from ittc.lifecycle.envelope import Statement
from ittc.lifecycle.plan import ATTEMPT_BYTES, Approval, Plan, check_approvals, scheme_plan
from ittc.lifecycle.sites import SiteIdentity
from ittc.scheme.params import MAX_NODES, PublicParams
from ittc.scheme.reshare import ResharePlan, check_epoch_acceptance

__all__ = ["ACK", "Certificate"]

_FORMAT = "ittc.reshare-certificate"
_VERSION = 1
_DIGEST = b"ittc/v1/reshare/certificate\x00"
#: The statement kind of an acknowledgement.
ACK = "ack"
#: Largest certificate read (64 members' acknowledgements at 16384 bits fit easily).
MAX_CERTIFICATE_BYTES = 4 << 20


@dataclass(frozen=True)
class Certificate:
    """Plan, approvals, attempt, new parameters and every member's acknowledgement."""

    plan: Plan
    approvals: tuple[Approval, ...]
    holders: tuple[int, ...]
    attempt: bytes
    params: PublicParams
    acks: tuple[Statement, ...]

    @property
    def epoch(self) -> int:
        return self.params.epoch

    @cached_property
    def run_id(self) -> bytes:
        from ittc.lifecycle.plan import run_id

        return run_id(self.plan, self.holders, self.attempt)

    # -- checking ------------------------------------------------------------------------

    def verify(self, old: PublicParams, sites: Mapping[int, SiteIdentity]) -> bytes:
        """Check the certificate against the epoch it starts from: ``old`` and its sites
        (from the cluster configuration or the previous certificate, never from this
        one). Returns the run's transcript digest; raises :class:`CertificateError`."""
        plan = self.plan
        try:
            plan.check_against(old)
            sp = scheme_plan(plan, old, self.holders, self.attempt)
        except ParameterError as exc:
            raise CertificateError(f"the plan does not fit the epoch: {exc}") from None
        try:
            check_approvals(plan, self.approvals, sites, old.k, now=plan.not_after)
        except ApprovalError as exc:
            raise CertificateError(f"approvals: {exc}") from None
        self._check_params(sp)
        acks = self._acks()
        transcripts = {ack.transcript for ack in acks}
        if len(transcripts) != 1:
            raise CertificateError("the members acknowledged different transcripts")
        transcript = transcripts.pop()
        try:
            check_epoch_acceptance(self.params, transcript, [ack.share for ack in acks])
        except IttcError as exc:
            raise CertificateError(f"the acceptance test fails: {exc}") from None
        return transcript

    def _check_params(self, sp: ResharePlan) -> None:
        new = self.params
        try:
            expected = sp.new_params(new.verification_keys)
        except ParameterError as exc:
            raise CertificateError(f"the new parameters are malformed: {exc}") from None
        if new != expected or new.epoch_id_bytes != expected.epoch_id_bytes:
            raise CertificateError("the new parameters are not what the plan makes")

    def _acks(self) -> list[Acknowledgement]:
        plan = self.plan
        if len(self.acks) != plan.n:
            raise CertificateError(f"{len(self.acks)} acknowledgements for {plan.n} members")
        out = []
        for j, statement in enumerate(self.acks, 1):
            member = plan.member(j)
            if statement.kind != ACK or statement.run_id != self.run_id:
                raise CertificateError(f"acknowledgement {j} is not one of this run")
            try:
                body = statement.verify(member.site)
                ack = decode_acknowledgement(self.params, j, body)
            except IttcError as exc:
                raise CertificateError(f"acknowledgement of member {j}: {exc}") from None
            if ack.run_id != self.run_id or ack.epoch_id != self.params.epoch_id_bytes:
                raise CertificateError(f"member {j} acknowledged another run or epoch")
            out.append(ack)
        return out

    def member_index(self, site: SiteIdentity) -> int | None:
        """The new epoch's index of ``site``, or None if it is not a member (it retires)."""
        for member in self.plan.members:
            if member.site == site:
                return member.index
        return None

    def sites(self) -> dict[int, SiteIdentity]:
        """The new epoch's sites, by index (for checking the next certificate)."""
        return {m.index: m.site for m in self.plan.members}

    # -- the file --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "plan": self.plan.to_dict(),
            "approvals": [a.to_dict() for a in self.approvals],
            "holders": list(self.holders),
            "attempt": self.attempt.hex(),
            "params": self.params.to_dict(),
            "acks": [a.to_dict() for a in self.acks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @cached_property
    def digest(self) -> bytes:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(_DIGEST + canonical.encode("ascii")).digest()

    @classmethod
    def from_json(cls, text: str | bytes) -> Certificate:
        """Parse (shape and types only; :meth:`verify` decides whether it counts)."""
        if len(text) > MAX_CERTIFICATE_BYTES:
            raise CertificateError("certificate too large")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CertificateError(f"certificate is not valid JSON: {exc}") from None
        fields = {"format", "version", "plan", "approvals", "holders", "attempt", "params", "acks"}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CertificateError("not an ittc reshare certificate")
        if data.get("version") != _VERSION:
            raise CertificateError(f"unsupported certificate version {data.get('version')!r}")
        if set(data) != fields:
            raise CertificateError(
                f"certificate fields {sorted(set(data) ^ fields)} missing or unexpected"
            )
        try:
            approvals, holders, acks = data["approvals"], data["holders"], data["acks"]
            if not all(
                isinstance(x, list) and len(x) <= MAX_NODES for x in (approvals, holders, acks)
            ):
                raise ParameterError("approvals, holders and acks are lists of at most 64")
            if not all(
                isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= MAX_NODES
                for i in holders
            ):
                raise ParameterError(f"holders are indices 1..{MAX_NODES}")
            attempt = bytes.fromhex(data["attempt"]) if isinstance(data["attempt"], str) else b""
            if len(attempt) != ATTEMPT_BYTES:
                raise ParameterError("malformed attempt nonce")
            return cls(
                Plan.from_dict(data["plan"]),
                tuple(Approval.from_dict(a) for a in approvals),
                tuple(holders),
                attempt,
                PublicParams.from_dict(data["params"]),
                tuple(Statement.from_dict(a) for a in acks),
            )
        except (ParameterError, ValueError) as exc:
            raise CertificateError(f"malformed certificate: {exc}") from None
