"""Test faults for resharing: a liar in every role, a crash after every step.

Only the test harness sets them (``--test-fault reshare:...`` and ``crash:...``, see
:mod:`ittc_node.faults`); with none set, every method here gives back what it was given.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from ittc.lifecycle import Sealed, SiteKey
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.proofs import SignatureShare
from ittc.scheme.reshare import Contribution, Outcome, PrivateValue, ResharePlan, acceptance_share

__all__ = ["ReshareFaults"]


class ReshareFaults:
    """The node's test faults (``faults``, or None) as they bear on resharing."""

    def __init__(self, faults: Any, key: SiteKey) -> None:
        self._faults = faults
        self._key = key

    def __call__(self, name: str) -> bool:
        """True if the reshare fault ``name`` is set."""
        return self._faults is not None and self._faults.reshare == name

    def crash(self, step: str) -> None:
        """SIGKILL this node here if told to crash after ``step``."""
        if self._faults is not None:
            self._faults.crash(step)

    def unopenable(self, member: int, sealed: Sealed) -> Sealed:
        """A sub-share to ``member`` that does not open (signed, so its sender is named)."""
        if not self(f"unopenable:{member}"):
            return sealed
        garbage = dataclasses.replace(
            sealed, ciphertext=secrets.token_bytes(len(sealed.ciphertext))
        )
        return dataclasses.replace(garbage, signature=self._key.sign(garbage.outer_bytes()))

    def mask(self, sp: ResharePlan, value: PrivateValue) -> bytes:
        if self("bad-mask"):
            value = PrivateValue(
                "mask", value.sender, value.recipient, value.dangerously_export() + 1
            )
        return value.to_bytes(sp)

    def contribution(self, contribution: Contribution) -> Contribution:
        if self("bad-contribution"):
            return Contribution(
                contribution.holder,
                contribution.masked + 1,
                contribution.constant,
                contribution.coefficients,
            )
        return contribution

    def sub_share(self, sp: ResharePlan, member: int, value: PrivateValue) -> bytes:
        if self(f"bad-sub-share:{member}"):
            value = PrivateValue("sub-share", value.sender, member, value.dangerously_export() + 1)
        return value.to_bytes(sp)

    def acceptance_share(self, outcome: Outcome, share: KeyShare) -> SignatureShare:
        honest = acceptance_share(outcome, share)
        if self("bad-acceptance"):
            return SignatureShare(
                honest.index, honest.value * 4 % outcome.params.modulus, honest.proof
            )
        return honest
