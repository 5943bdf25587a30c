"""Fixed-width byte forms of a run's public values, for the bodies of signed statements.

Every field has one width that the plan fixes (group elements at the modulus's width,
the masked value at the width of its public bound, indices in 2 bytes), so lengths are
checked exactly before anything is parsed, and two different values never encode alike.
Ranges (unit, bound) are checked by :mod:`ittc.scheme.reshare` before any arithmetic.
"""

from __future__ import annotations

from ittc.errors import ReshareError
from ittc.scheme.reshare import Contribution, MaskCommitment, ResharePlan
from ittc.scheme.reshare.messages import encode_signed

__all__ = [
    "decode_contribution",
    "decode_mask_commitments",
    "encode_contribution",
    "encode_mask_commitments",
]


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
