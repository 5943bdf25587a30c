"""Reshare plans and their approvals.

A reshare decides who holds the key, so people decide it, not a credential: a **plan**
names the key, the epoch it starts from, the new members (index, site identity, address)
and the new threshold; at least ``k`` current sites **approve** it, each by signing its
digest with its own site key. Every participating node checks the approvals before it
sends anything (:func:`check_approvals`).

The plan does not fix which ``k`` holders deal or the run id: the coordinator chooses
them per attempt (a failed attempt is retried with other holders under the same
approvals). :func:`run_id` derives the run id from the plan's digest, the holders and an
attempt nonce, so every value of a run is bound to the approved plan.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ittc.errors import ApprovalError, EnvelopeError, ParameterError
from ittc.lifecycle.sites import SiteIdentity, SiteKey, check_site_name, encode_fields
from ittc.scheme.params import MAX_EPOCH, MAX_NODES, PublicParams
from ittc.scheme.reshare import ResharePlan

__all__ = [
    "ATTEMPT_BYTES",
    "Approval",
    "Member",
    "Plan",
    "approve",
    "check_approvals",
    "run_id",
    "scheme_plan",
]

_FORMAT = "ittc.reshare-plan"
_VERSION = 1
_DIGEST = b"ittc/v1/reshare/plan\x00"
_APPROVAL = b"ittc/v1/reshare/approval\x00"
_RUN = b"ittc/v1/reshare/run\x00"
_NONCE_BYTES = 16
ATTEMPT_BYTES = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"[A-Za-z0-9.:\[\]_-]{1,255}")


@dataclass(frozen=True)
class Member:
    """New-epoch index ``index`` is held by ``site``, reached at ``address``."""

    index: int
    site: SiteIdentity
    address: str
    tls_name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            **self.site.to_dict(),
            "address": self.address,
            "tls_name": self.tls_name,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Member:
        fields = {"index", "site", "sign_key", "box_key", "address", "tls_name"}
        if not isinstance(data, dict) or set(data) != fields:
            raise ParameterError(f"a plan member has exactly: {sorted(fields)}")
        site = SiteIdentity.from_dict({k: data[k] for k in ("site", "sign_key", "box_key")})
        return cls(_int(data["index"]), site, _str(data["address"]), _str(data["tls_name"]))


@dataclass(frozen=True)
class Plan:
    """What is approved: key, starting epoch, new membership, new threshold, expiry."""

    key_id: str
    old_epoch: int
    old_epoch_id: str
    members: tuple[Member, ...]
    k: int
    not_after: int
    nonce: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _HEX64.fullmatch(self.key_id):
            raise ParameterError("plan: key id must be 64 lowercase hex digits")
        if not isinstance(self.old_epoch_id, str) or not _HEX64.fullmatch(self.old_epoch_id):
            raise ParameterError("plan: epoch id must be 64 lowercase hex digits")
        if not isinstance(self.old_epoch, int) or not 0 <= self.old_epoch < MAX_EPOCH:
            raise ParameterError("plan: epoch out of range")
        members = self.members
        if not isinstance(members, tuple) or not all(isinstance(m, Member) for m in members):
            raise ParameterError("plan: members must be a tuple of Member")
        n = len(members)
        if not (isinstance(self.k, int) and 2 <= self.k <= n <= MAX_NODES):
            raise ParameterError(
                f"plan: needs 2 <= k' <= n' <= {MAX_NODES}, not k'={self.k!r} n'={n}"
            )
        if [m.index for m in members] != list(range(1, n + 1)):
            raise ParameterError("plan: members must be indices 1..n' in order, once each")
        for what, values in (
            ("site names", [m.site.name for m in members]),
            ("signing keys", [m.site.sign_key for m in members]),
            ("box keys", [m.site.box_key for m in members]),
            ("addresses", [m.address for m in members]),
        ):
            if len(set(values)) != n:
                raise ParameterError(f"plan: two members share {what}")
        for m in members:
            if not _ADDRESS.fullmatch(m.address):
                raise ParameterError(f"plan: member {m.index}'s address is not host:port")
            try:
                check_site_name(m.tls_name)
            except ParameterError:
                raise ParameterError(
                    f"plan: member {m.index}'s TLS name {m.tls_name!r} is not a valid name"
                ) from None
        if not isinstance(self.not_after, int) or self.not_after <= 0:
            raise ParameterError("plan: expiry must be a positive Unix time")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != _NONCE_BYTES:
            raise ParameterError(f"plan: nonce is {_NONCE_BYTES} bytes")

    @classmethod
    def new(
        cls, params: PublicParams, members: Sequence[Member], k: int, *, not_after: int
    ) -> Plan:
        """A plan to reshare ``params``' epoch to ``members`` with threshold ``k``."""
        plan = cls(
            params.key_id,
            params.epoch,
            params.epoch_id,
            tuple(members),
            k,
            not_after,
            secrets.token_bytes(_NONCE_BYTES),
        )
        plan.check_against(params)
        return plan

    @property
    def n(self) -> int:
        return len(self.members)

    def member(self, index: int) -> Member:
        if not isinstance(index, int) or not 1 <= index <= self.n:
            raise ParameterError(f"plan: no member {index}")
        return self.members[index - 1]

    def check_against(self, params: PublicParams) -> None:
        """The plan starts from exactly this epoch of this key, and the key allows it."""
        if (self.key_id, self.old_epoch, self.old_epoch_id) != (
            params.key_id,
            params.epoch,
            params.epoch_id,
        ):
            raise ParameterError(
                f"plan is for key {self.key_id[:16]} epoch {self.old_epoch}, not key "
                f"{params.short_id} epoch {params.epoch}"
            )
        if self.n >= params.e:
            raise ParameterError("plan: the public exponent must exceed the new n")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "key_id": self.key_id,
            "old_epoch": self.old_epoch,
            "old_epoch_id": self.old_epoch_id,
            "members": [m.to_dict() for m in self.members],
            "k": self.k,
            "not_after": self.not_after,
            "nonce": self.nonce.hex(),
        }

    def canonical(self) -> bytes:
        """The bytes the digest covers: sorted keys, no spaces, ASCII."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(_DIGEST + self.canonical()).digest()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        fields = {
            "format",
            "version",
            "key_id",
            "old_epoch",
            "old_epoch_id",
            "members",
            "k",
            "not_after",
            "nonce",
        }
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ParameterError("not an ittc reshare plan")
        if data.get("version") != _VERSION:
            raise ParameterError(f"unsupported reshare plan version {data.get('version')!r}")
        if set(data) != fields:
            raise ParameterError(
                f"reshare plan fields {sorted(set(data) ^ fields)} missing or unexpected"
            )
        raw_members = data["members"]
        if not isinstance(raw_members, list) or len(raw_members) > MAX_NODES:
            raise ParameterError(f"plan: at most {MAX_NODES} members")
        try:
            nonce = bytes.fromhex(_str(data["nonce"]))
        except ValueError:
            raise ParameterError("plan: nonce is not hex") from None
        return cls(
            _str(data["key_id"]),
            _int(data["old_epoch"]),
            _str(data["old_epoch_id"]),
            tuple(Member.from_dict(m) for m in raw_members),
            _int(data["k"]),
            _int(data["not_after"]),
            nonce,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParameterError(f"reshare plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class Approval:
    """Site ``site``'s signature on a plan's digest."""

    site: str
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {"site": self.site, "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, data: Any) -> Approval:
        if not isinstance(data, dict) or set(data) != {"site", "signature"}:
            raise ParameterError("an approval has exactly: site, signature")
        try:
            return cls(check_site_name(data["site"]), bytes.fromhex(_str(data["signature"])))
        except ValueError as exc:
            if isinstance(exc, ParameterError):
                raise
            raise ParameterError("approval signature is not hex") from None


def approve(key: SiteKey, plan: Plan) -> Approval:
    """This site's approval of ``plan``. Sign only a plan you have read."""
    return Approval(key.name, key.sign(_APPROVAL + plan.digest))


def check_approvals(
    plan: Plan,
    approvals: Iterable[Approval],
    current: Mapping[int, SiteIdentity],
    threshold: int,
    *,
    now: float,
) -> tuple[str, ...]:
    """The current sites whose approvals count; raises :class:`ApprovalError` unless at
    least ``threshold`` distinct current sites approved ``plan`` and it has not expired.

    ``current`` maps each index of the plan's starting epoch to the site holding it (from
    the cluster configuration, never from the plan). ``now`` is Unix time.
    """
    if now > plan.not_after:
        raise ApprovalError(
            f"the plan expired at {_utc(plan.not_after)} (now {_utc(int(now))}): make a new one"
        )
    sites = {identity.name: identity for identity in current.values()}
    valid: set[str] = set()
    invalid: dict[str, str] = {}
    for approval in approvals:
        identity = sites.get(approval.site)
        if identity is None:
            invalid[str(approval.site)[:64]] = "not a site of the current epoch"
            continue
        try:
            identity.verify(_APPROVAL + plan.digest, approval.signature)
        except EnvelopeError:
            invalid[approval.site] = "signature does not verify for this plan"
            continue
        valid.add(approval.site)
    if len(valid) < threshold:
        raise ApprovalError(
            f"{len(valid)} valid approvals from current sites, need {threshold}", invalid
        )
    return tuple(sorted(valid))


def run_id(plan: Plan, holders: Sequence[int], attempt: bytes) -> bytes:
    """The run id of one attempt: bound to the approved plan, the holders and a nonce."""
    if not isinstance(attempt, bytes) or len(attempt) != ATTEMPT_BYTES:
        raise ParameterError(f"an attempt nonce is {ATTEMPT_BYTES} bytes")
    return hashlib.sha256(
        _RUN + encode_fields(plan.digest, *[int(i) for i in holders], attempt)
    ).digest()


def scheme_plan(
    plan: Plan, params: PublicParams, holders: Sequence[int], attempt: bytes
) -> ResharePlan:
    """The arithmetic's view of one attempt (checked against the epoch it starts from)."""
    plan.check_against(params)
    return ResharePlan(params, tuple(holders), plan.n, plan.k, run_id(plan, holders, attempt))


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError("expected an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError("expected a string")
    return value


def _utc(when: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
