"""One old holder's side of a run, in two rounds.

Round 1, :meth:`Holder.send_masks`: a fresh mask ``m`` for every holder with a larger
index, each with its public commitment ``W = v^m``. The masks go out encrypted.

Round 2, after :meth:`Holder.receive_mask` accepted a mask from every holder with a
smaller index, :meth:`Holder.contribute`: the masked value
``c_i = λ_i s_i - D·u_i + M_i`` (``M_i`` = masks sent minus masks received, so the masks
cancel in ``Σ c_i``), ``U_i = v^{u_i}``, the commitments ``V_{i,t}`` of a fresh dealing
polynomial ``G_i(X) = Δ'·u_i + Σ_t a_{i,t} X^t``, and one sub-share ``G_i(j)`` for every
new member ``j`` (sent encrypted).

After round 2 the holder forgets ``u_i``, the coefficients and the masks (as far as
Python can: it drops the references). Every exponentiation with a secret exponent goes
through :func:`ittc.scheme.ct.powmod_secret`.
"""

from __future__ import annotations

import secrets
from typing import Any, NoReturn

from ittc.errors import ParameterError
from ittc.scheme.ct import mpz, powmod_secret
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.reshare.messages import Contribution, MaskCommitment, PrivateValue
from ittc.scheme.reshare.plan import ResharePlan
from ittc.scheme.reshare.verify import check_mask

__all__ = ["Holder"]


def _uniform_positive(bits: int) -> int:
    """Uniform in ``[1, 2^bits)``."""
    while True:
        value = secrets.randbits(bits)
        if value:
            return value


class Holder:
    """Old holder ``share.index``'s state in the run ``plan``. Holds secrets."""

    __slots__ = ("plan", "index", "_share", "_sent", "_received", "_done")

    def __init__(self, plan: ResharePlan, share: KeyShare) -> None:
        if not isinstance(share, KeyShare):
            raise ParameterError("a holder needs its KeyShare")
        if share.params.epoch_id_bytes != plan.old.epoch_id_bytes:
            raise ParameterError("this share is not of the plan's epoch")
        if share.index not in plan.holders:
            raise ParameterError(f"node {share.index} is not a holder of this run")
        self.plan = plan
        self.index = share.index
        self._share: KeyShare | None = share
        self._sent: dict[int, int] | None = None
        self._received: dict[int, int] = {}
        self._done = False

    def __repr__(self) -> str:
        return f"<Holder {self.index} of run {self.plan.digest.hex()[:16]}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("Holder holds secrets and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    @property
    def peers_below(self) -> tuple[int, ...]:
        """Holders whose masks this holder waits for."""
        return tuple(i for i in self.plan.holders if i < self.index)

    @property
    def peers_above(self) -> tuple[int, ...]:
        """Holders this holder sends a mask to."""
        return tuple(i for i in self.plan.holders if i > self.index)

    def send_masks(self) -> tuple[tuple[MaskCommitment, ...], dict[int, PrivateValue]]:
        """Round 1: public commitments, and one private mask per holder above."""
        if self._sent is not None or self._done:
            raise ParameterError("masks were already made for this run")
        plan = self.plan
        bits = plan.bounds.mask_bits
        self._sent = {}
        commitments, private = [], {}
        for peer in self.peers_above:
            m = _uniform_positive(bits)
            self._sent[peer] = m
            w = powmod_secret(plan.old.V, mpz(m), plan.old.N)
            commitments.append(MaskCommitment(self.index, peer, int(w)))
            private[peer] = PrivateValue("mask", self.index, peer, m)
        return tuple(commitments), private

    def receive_mask(self, commitment: MaskCommitment, value: PrivateValue) -> None:
        """Accept the mask from a holder below, after checking it against its commitment.

        Raises :class:`ReshareError` naming the sender if it does not match (the holder
        then complains; see :func:`~ittc.scheme.reshare.verify.judge_mask_complaint`).
        """
        if self._done:
            raise ParameterError("this holder has already contributed")
        sender = commitment.sender
        if (
            commitment.recipient != self.index
            or sender not in self.peers_below
            or value.kind != "mask"
            or value.sender != sender
            or value.recipient != self.index
        ):
            raise ParameterError("this mask is not for this holder from a holder below it")
        if sender in self._received:
            raise ParameterError(f"a mask from holder {sender} was already accepted")
        check_mask(self.plan, commitment, value)
        self._received[sender] = value.dangerously_export()

    def contribute(self) -> tuple[Contribution, dict[int, PrivateValue]]:
        """Round 2: the public contribution and one private sub-share per new member."""
        if self._done or self._sent is None or self._share is None:
            raise ParameterError("send the masks first, once")
        missing = [i for i in self.peers_below if i not in self._received]
        if missing:
            raise ParameterError(f"no mask yet from holders {missing}")
        plan, b = self.plan, self.plan.bounds
        N, V = plan.old.N, plan.old.V
        u = _uniform_positive(b.u_bits)
        coefficients = [_uniform_positive(b.coefficient_bits) for _ in range(plan.k - 1)]
        mask_sum = sum(self._sent.values()) - sum(self._received.values())
        a_i = plan.lambdas[self.index] * self._share.dangerously_export_secret()
        masked = a_i - b.divisor * u + mask_sum
        constant = powmod_secret(V, mpz(u), N)
        commitments = tuple(int(powmod_secret(V, mpz(a), N)) for a in coefficients)
        sub_shares = {}
        for j in range(1, plan.n + 1):
            y = plan.new_delta * u
            power = 1
            for a in coefficients:
                power *= j
                y += a * power
            sub_shares[j] = PrivateValue("sub-share", self.index, j, y)
        # Drop every secret of this run (Python cannot wipe the integers themselves).
        self._done = True
        self._share = None
        self._sent = None
        self._received = {}
        del u, coefficients, a_i, mask_sum
        return Contribution(self.index, masked, int(constant), commitments), sub_shares
