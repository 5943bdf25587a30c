"""Fixed-width byte forms of a run's public values, for the bodies of signed statements.

Every field has one width that the plan fixes (group elements at the modulus's width,
the masked value at the width of its public bound, indices in 2 bytes), so lengths are
checked exactly before anything is parsed, and two different values never encode alike.
Ranges (unit, bound) are checked by :mod:`ittc.scheme.reshare` before any arithmetic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from ittc.errors import ParameterError, ReshareError
from ittc.lifecycle.envelope import Evidence, Sealed, Statement
from ittc.lifecycle.sites import encode_fields
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import Proof, SignatureShare, nonce_bits
from ittc.scheme.reshare import Contribution, MaskCommitment, ResharePlan
from ittc.scheme.reshare.messages import encode_signed

__all__ = [
    "COMMITMENTS",
    "COMPLAINT",
    "CONTRIBUTION",
    "Acknowledgement",
    "Complaint",
    "commitments_digest",
    "decode_acknowledgement",
    "decode_contribution",
    "decode_dealt",
    "decode_mask_commitments",
    "encode_acknowledgement",
    "encode_contribution",
    "encode_dealt",
    "encode_mask_commitments",
]


#: Statement kinds of a run's public values (complaints and acknowledgements below).
COMMITMENTS = "mask-commitments"
CONTRIBUTION = "contribution"


def _element_width(plan: ResharePlan) -> int:
    return plan.old.size_bytes


def _masked_width(plan: ResharePlan) -> int:
    return (plan.bounds.contribution_bound.bit_length() + 7) // 8


def encode_mask_commitments(
    plan: ResharePlan, holder: int, commitments: tuple[MaskCommitment, ...]
) -> bytes:
    width = _element_width(plan)
    out = bytearray(holder.to_bytes(2, "big") + len(commitments).to_bytes(2, "big"))
    for c in commitments:
        if c.sender != holder:
            raise ValueError("every commitment must be the holder's own")
        out += c.recipient.to_bytes(2, "big") + c.value.to_bytes(width, "big")
    return bytes(out)


def decode_mask_commitments(
    plan: ResharePlan, holder: int, body: bytes
) -> tuple[MaskCommitment, ...]:
    """Holder ``holder``'s round-1 commitments (``holder`` as the statement's signature
    established it); a body of the wrong shape convicts that holder."""
    width = _element_width(plan)
    if len(body) < 4 or int.from_bytes(body[:2], "big") != holder:
        raise ReshareError(
            "mask", f"holder {holder}'s commitments are malformed", holders=(holder,)
        )
    count = int.from_bytes(body[2:4], "big")
    if len(body) != 4 + count * (2 + width):
        raise ReshareError(
            "mask", f"holder {holder}'s commitments have the wrong length", holders=(holder,)
        )
    out = []
    for at in range(4, len(body), 2 + width):
        recipient = int.from_bytes(body[at : at + 2], "big")
        value = int.from_bytes(body[at + 2 : at + 2 + width], "big")
        out.append(MaskCommitment(holder, recipient, value))
    return tuple(out)


def encode_contribution(plan: ResharePlan, c: Contribution) -> bytes:
    width = _element_width(plan)
    return (
        c.holder.to_bytes(2, "big")
        + encode_signed(c.masked, _masked_width(plan))
        + c.constant.to_bytes(width, "big")
        + len(c.coefficients).to_bytes(2, "big")
        + b"".join(v.to_bytes(width, "big") for v in c.coefficients)
    )


def decode_contribution(plan: ResharePlan, holder: int, body: bytes) -> Contribution:
    """Holder ``holder``'s round-2 contribution; a malformed body convicts that holder."""
    width, masked_width = _element_width(plan), _masked_width(plan)
    head = 2 + 1 + masked_width + width + 2
    expected = head + (plan.k - 1) * width
    if (
        len(body) != expected
        or int.from_bytes(body[:2], "big") != holder
        or body[2] not in (0, 1)
        or int.from_bytes(body[head - 2 : head], "big") != plan.k - 1
    ):
        raise ReshareError(
            "contribution", f"holder {holder}'s contribution is malformed", holders=(holder,)
        )
    magnitude = int.from_bytes(body[3 : 3 + masked_width], "big")
    if body[2] and not magnitude:
        raise ReshareError(
            "contribution", f"holder {holder} sent a negative zero", holders=(holder,)
        )
    masked = -magnitude if body[2] else magnitude
    constant = int.from_bytes(body[3 + masked_width : 3 + masked_width + width], "big")
    coefficients = tuple(
        int.from_bytes(body[at : at + width], "big") for at in range(head, len(body), width)
    )
    return Contribution(holder, masked, constant, coefficients)


# -- what a holder saw, what a member acknowledges ------------------------------------------

_SEEN = b"ittc/v1/reshare/commitments-seen\x00"
_DIGEST_BYTES = 32


def commitments_digest(statements: Iterable[Statement]) -> bytes:
    """SHA-256 over the round-1 commitment statements, by sender: what a holder binds its
    contribution to, so that members checking it against other commitments (a sender that
    signed two versions, relayed to different holders) find out before blaming anyone."""
    h = hashlib.sha256(_SEEN)
    for statement in sorted(statements, key=lambda s: (s.sender, s.body)):
        h.update(encode_fields(statement.sender, statement.body))
    return h.digest()


def encode_dealt(plan: ResharePlan, contribution: Contribution, seen: bytes) -> bytes:
    """A holder's round-2 statement body: the commitments digest it saw, then its
    contribution (:func:`encode_contribution`)."""
    if len(seen) != _DIGEST_BYTES:
        raise ValueError("a commitments digest is 32 bytes")
    return seen + encode_contribution(plan, contribution)


def decode_dealt(plan: ResharePlan, holder: int, body: bytes) -> tuple[bytes, Contribution]:
    """(the commitments digest holder ``holder`` saw, its contribution)."""
    if len(body) < _DIGEST_BYTES:
        raise ReshareError(
            "contribution", f"holder {holder}'s contribution is malformed", holders=(holder,)
        )
    return body[:_DIGEST_BYTES], decode_contribution(plan, holder, body[_DIGEST_BYTES:])


@dataclass(frozen=True)
class Acknowledgement:
    """A new member's acknowledgement: it stored its share of the epoch ``epoch_id``,
    made by run ``run_id`` with ``transcript``; ``share`` is its acceptance share."""

    run_id: bytes
    transcript: bytes
    epoch_id: bytes
    share: SignatureShare


def _ack_widths(params: PublicParams) -> tuple[int, int]:
    return params.size_bytes, (nonce_bits(params) + 1 + 7) // 8


def encode_acknowledgement(params: PublicParams, ack: Acknowledgement) -> bytes:
    """Fixed width for the new epoch ``params``: run id, transcript, epoch id (32 each),
    member index (2), acceptance share (modulus width), a proof flag, then the proof's
    challenge (32) and response (fixed width) when there is one."""
    value_width, z_width = _ack_widths(params)
    share = ack.share
    out = (
        ack.run_id
        + ack.transcript
        + ack.epoch_id
        + share.index.to_bytes(2, "big")
        + share.value.to_bytes(value_width, "big")
    )
    if share.proof is None:
        return out + b"\x00"
    return (
        out
        + b"\x01"
        + share.proof.c.to_bytes(_DIGEST_BYTES, "big")
        + share.proof.z.to_bytes(z_width, "big")
    )


def decode_acknowledgement(params: PublicParams, member: int, body: bytes) -> Acknowledgement:
    """Member ``member``'s acknowledgement (as its signature established the sender);
    lengths are checked here, ranges by the acceptance test."""
    value_width, z_width = _ack_widths(params)
    head = 3 * _DIGEST_BYTES + 2 + value_width + 1
    proof_len = _DIGEST_BYTES + z_width
    if len(body) not in (head, head + proof_len) or body[head - 1] not in (0, 1):
        raise ReshareError(
            "acknowledgement", f"member {member}'s acknowledgement is malformed", members=(member,)
        )
    if (body[head - 1] == 1) != (len(body) == head + proof_len):
        raise ReshareError(
            "acknowledgement", f"member {member}'s acknowledgement is malformed", members=(member,)
        )
    at = 3 * _DIGEST_BYTES
    index = int.from_bytes(body[at : at + 2], "big")
    if index != member:
        raise ReshareError(
            "acknowledgement",
            f"member {member} acknowledged as member {index}",
            members=(member,),
        )
    value = int.from_bytes(body[at + 2 : at + 2 + value_width], "big")
    proof = None
    if len(body) > head:
        c = int.from_bytes(body[head : head + _DIGEST_BYTES], "big")
        proof = Proof(c, int.from_bytes(body[head + _DIGEST_BYTES :], "big"))
    return Acknowledgement(
        body[:32], body[32:64], body[64:96], SignatureShare(member, value, proof)
    )


# -- complaints ----------------------------------------------------------------------------

#: The statement kind of a complaint.
COMPLAINT = "complaint"
_ABOUT = ("mask", "sub-share")


@dataclass(frozen=True)
class Complaint:
    """A recipient's complaint about one sealed value it received: ``evidence`` is the
    value it opened (the sender's inner signature over it) when the value is wrong, None
    when it does not open (the sender is then asked to reveal that message's ephemeral
    key; :func:`ittc.lifecycle.envelope.judge`)."""

    about: str
    sealed: Sealed
    evidence: Evidence | None
    reason: str = ""

    def to_body(self) -> bytes:
        doc = {
            "about": self.about,
            "sealed": self.sealed.to_dict(),
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
            "reason": self.reason[:256],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_body(cls, body: bytes) -> Complaint:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ParameterError("a complaint is JSON") from None
        if not isinstance(data, dict) or set(data) != {"about", "sealed", "evidence", "reason"}:
            raise ParameterError("a complaint has exactly: about, sealed, evidence, reason")
        about, reason = data["about"], data["reason"]
        if about not in _ABOUT or not isinstance(reason, str):
            raise ParameterError("malformed complaint")
        sealed = Sealed.from_dict(data["sealed"])
        evidence = None if data["evidence"] is None else Evidence.from_dict(data["evidence"])
        if evidence is not None and (
            (evidence.kind, evidence.run_id, evidence.sender, evidence.recipient)
            != (sealed.kind, sealed.run_id, sealed.sender, sealed.recipient)
        ):
            raise ParameterError("the evidence is not of the sealed value complained about")
        return cls(about, sealed, evidence, reason[:256])
