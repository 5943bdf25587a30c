"""The values a reshare run moves: public ones (commitments, masked values) and private
ones (a mask for one holder, a sub-share for one member), which travel only encrypted.

Public values are plain frozen dataclasses. :class:`PrivateValue` is a secret type, like
:class:`~ittc.scheme.keyshare.KeyShare`: no digits in its ``repr``, no pickling or
copying, constant-time comparison, a fixed-width byte form for the encrypting layer, and
its integer only through :meth:`PrivateValue.dangerously_export`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from ittc.errors import ReshareError
from ittc.scheme.reshare.plan import ResharePlan

__all__ = ["Contribution", "MaskCommitment", "PrivateKind", "PrivateValue", "encode_signed"]

PrivateKind = Literal["mask", "sub-share"]


def encode_signed(value: int, width: int) -> bytes:
    """A sign byte and ``width`` big-endian bytes of the magnitude: one length per field."""
    return (b"\x01" if value < 0 else b"\x00") + abs(value).to_bytes(width, "big")


@dataclass(frozen=True)
class MaskCommitment:
    """``W = v^m`` for the mask ``m`` that holder ``sender`` sends holder ``recipient``
    (``sender < recipient``); public, so anyone can check a masked value."""

    sender: int
    recipient: int
    value: int


@dataclass(frozen=True)
class Contribution:
    """Holder ``holder``'s public values: the masked value ``c_i = λ_i s_i - D·u_i + M_i``,
    ``U_i = v^{u_i}`` and the Feldman commitments ``V_{i,t} = v^{a_{i,t}}`` (``t = 1..k'-1``)
    of its dealing polynomial ``G_i(X) = Δ'·u_i + Σ a_{i,t} X^t``."""

    holder: int
    masked: int
    constant: int
    coefficients: tuple[int, ...]


class PrivateValue:
    """A one-time secret integer from ``sender`` for ``recipient``: a mask (holder to
    holder) or a sub-share (holder to new member). Indices are those of the plan: old
    epoch for holders, new epoch for members."""

    __slots__ = ("kind", "sender", "recipient", "_value")

    def __init__(self, kind: PrivateKind, sender: int, recipient: int, value: int) -> None:
        if kind not in ("mask", "sub-share"):
            raise ValueError(f"unknown private value kind {kind!r}")
        self.kind: PrivateKind = kind
        self.sender = sender
        self.recipient = recipient
        self._value = int(value)

    @staticmethod
    def width(plan: ResharePlan, kind: PrivateKind) -> int:
        """Bytes of the fixed-width encoding of a value of ``kind`` in ``plan``."""
        bound = (
            plan.bounds.mask_bits if kind == "mask" else plan.bounds.sub_share_bound.bit_length()
        )
        return (bound + 7) // 8

    def to_bytes(self, plan: ResharePlan) -> bytes:
        """Fixed-width big-endian bytes, for the layer that encrypts them to the recipient."""
        return self._value.to_bytes(self.width(plan, self.kind), "big")

    @classmethod
    def from_bytes(
        cls, plan: ResharePlan, kind: PrivateKind, sender: int, recipient: int, data: bytes
    ) -> PrivateValue:
        """Parse a decrypted value; the wrong length convicts ``sender`` (whose signature
        the layer above checked)."""
        if not isinstance(data, bytes) or len(data) != cls.width(plan, kind):
            raise ReshareError(
                kind, f"a {kind} from holder {sender} has the wrong length", holders=(sender,)
            )
        return cls(kind, sender, recipient, int.from_bytes(data, "big"))

    def dangerously_export(self) -> int:
        """The integer itself, for the arithmetic of a run and for a complaint's evidence."""
        return self._value

    def __repr__(self) -> str:
        return f"<PrivateValue {self.kind} from {self.sender} to {self.recipient}>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("PrivateValue holds a secret and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> NoReturn:
        raise TypeError("PrivateValue cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("PrivateValue cannot be copied")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateValue):
            return NotImplemented
        width = max(self._value.bit_length(), other._value.bit_length(), 1) // 8 + 1
        mine = f"{self.kind}/{self.sender}/{self.recipient}/".encode() + self._value.to_bytes(
            width, "big"
        )
        theirs = f"{other.kind}/{other.sender}/{other.recipient}/".encode() + other._value.to_bytes(
            width, "big"
        )
        return hmac.compare_digest(mine, theirs)

    __hash__ = None  # type: ignore[assignment]
