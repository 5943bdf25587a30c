"""The checks of a run, which anyone holding its public values can run, and a new
member's assembly of its share.

Public checks (coordinator, every holder, every new member, an auditor):

* a mask commitment matches the mask (run by its recipient, or by anyone once a complaint
  reveals the mask): ``v^m == W``;
* each contribution is consistent with its holder's old verification key:
  ``v^{c_i} · U_i^D == v_i^{λ_i} · Π_{i<i'} W_{i,i'} · Π_{i'<i} W_{i',i}^{-1}``;
* the masked values sum to a multiple of ``D`` and ``T' = Σ c_i / D`` lies in its range;
* the sum relation with the old epoch: ``(v^{Δ'T'} · Π U_i^{Δ'})^D == (Π v_i^{λ_i})^{Δ'}``;
* the new verification keys ``v'_j = v^{Δ'T' + Z·j} · Π_i U_i^{Δ'} · Π_t (Π_i V_{i,t})^{j^t}``.

A new member checks each sub-share against its holder's commitments
(``v^{y_{i,j}} == U_i^{Δ'} · Π_t V_{i,t}^{j^t}``) and takes
``s'_j = Δ'T' + Z·j + Σ_i y_{i,j}``.

Every value that came from a participant is range-, length- and index-checked before
any arithmetic. A failed check raises :class:`ReshareError` naming who the evidence
convicts, and nobody else.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import gmpy2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.errors import IttcError, NotEnoughShares, ParameterError, ReshareError
from ittc.scheme.combine import combine, combine_robust
from ittc.scheme.ct import mpz, powmod_public, powmod_secret
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare, check_share, verify_share
from ittc.scheme.reshare.messages import (
    Contribution,
    MaskCommitment,
    PrivateValue,
    encode_signed,
)
from ittc.scheme.reshare.plan import ResharePlan

__all__ = [
    "Outcome",
    "acceptance_digest",
    "acceptance_representative",
    "acceptance_share",
    "assemble_share",
    "check_acceptance",
    "check_contribution",
    "check_mask",
    "check_sub_share",
    "check_epoch_acceptance",
    "epoch_acceptance_digest",
    "judge_mask_complaint",
    "judge_sub_share_complaint",
    "mask_table",
    "verify_contributions",
]

_TRANSCRIPT = b"ittc/v2/reshare/transcript\x00"
_ACCEPTANCE = b"ittc/v2/reshare/acceptance\x00"

MaskTable = dict[tuple[int, int], MaskCommitment]


def _is_unit(params: PublicParams, value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 1 < value < params.modulus
        and math.gcd(value, params.modulus) == 1
    )


# -- masks ---------------------------------------------------------------------------


def _check_mask_commitment(plan: ResharePlan, commitment: MaskCommitment) -> None:
    sender, recipient = commitment.sender, commitment.recipient
    if not (isinstance(sender, int) and sender in plan.holders):
        raise ReshareError("mask", "a mask commitment names a sender outside the holders")
    if not (isinstance(recipient, int) and recipient in plan.holders and sender < recipient):
        raise ReshareError(
            "mask",
            f"holder {sender} committed to a mask for a holder it does not send one to",
            holders=(sender,),
        )
    if not _is_unit(plan.old, commitment.value):
        raise ReshareError(
            "mask", f"holder {sender}'s mask commitment is not a unit mod N", holders=(sender,)
        )


def check_mask(plan: ResharePlan, commitment: MaskCommitment, value: PrivateValue) -> None:
    """The mask matches its commitment: ``1 <= m < 2^mask_bits`` and ``v^m == W``.

    Raises :class:`ReshareError` naming the sender.
    """
    _check_mask_commitment(plan, commitment)
    sender = commitment.sender
    m = value.dangerously_export()
    if value.kind != "mask" or value.sender != sender or value.recipient != commitment.recipient:
        raise ParameterError("the mask and the commitment are not for the same pair")
    if not 1 <= m < (1 << plan.bounds.mask_bits):
        raise ReshareError("mask", f"holder {sender}'s mask is out of range", holders=(sender,))
    if powmod_secret(plan.old.V, mpz(m), plan.old.N) != commitment.value:
        raise ReshareError(
            "mask", f"holder {sender}'s mask does not match its commitment", holders=(sender,)
        )


def judge_mask_complaint(
    plan: ResharePlan, commitment: MaskCommitment, revealed: PrivateValue
) -> ReshareError:
    """Holder ``commitment.recipient`` complained about its mask and revealed it (signed
    by the sender, which the layer above checked). The error convicting whoever lied."""
    try:
        check_mask(plan, commitment, revealed)
    except ReshareError as exc:
        return exc
    return ReshareError(
        "complaint",
        f"holder {commitment.recipient} complained about a "
        f"mask from holder {commitment.sender} that is correct",
        holders=(commitment.recipient,),
    )


def mask_table(plan: ResharePlan, commitments: Iterable[MaskCommitment]) -> MaskTable:
    """Exactly one commitment per pair of holders ``(i, i')``, ``i < i'``; checked."""
    table: MaskTable = {}
    for commitment in commitments:
        _check_mask_commitment(plan, commitment)
        pair = (commitment.sender, commitment.recipient)
        if pair in table and table[pair] != commitment:
            raise ReshareError(
                "mask",
                f"holder {pair[0]} committed to two masks for holder {pair[1]}",
                holders=(pair[0],),
            )
        table[pair] = commitment
    missing = [(i, j) for i, j in itertools.combinations(plan.holders, 2) if (i, j) not in table]
    if missing:
        raise ReshareError("mask", f"no mask commitments for the pairs {missing}")
    return table


# -- contributions ---------------------------------------------------------------------


def _check_contribution_ranges(plan: ResharePlan, contribution: Contribution) -> None:
    i = contribution.holder
    if not (isinstance(i, int) and i in plan.holders):
        raise ReshareError("contribution", "a contribution names a holder outside the plan")
    c = contribution.masked
    if not isinstance(c, int) or isinstance(c, bool) or not abs(c) < plan.bounds.contribution_bound:
        raise ReshareError(
            "contribution", f"holder {i}'s masked value is out of range", holders=(i,)
        )
    coefficients = contribution.coefficients
    if not isinstance(coefficients, tuple) or len(coefficients) != plan.k - 1:
        count = len(coefficients) if isinstance(coefficients, tuple) else "malformed"
        raise ReshareError(
            "contribution",
            f"holder {i} sent {count} commitments, not k'-1 = {plan.k - 1}",
            holders=(i,),
        )
    if not all(_is_unit(plan.old, x) for x in (contribution.constant, *coefficients)):
        raise ReshareError(
            "contribution", f"holder {i}'s commitments are not units mod N", holders=(i,)
        )


def check_contribution(plan: ResharePlan, contribution: Contribution, masks: MaskTable) -> None:
    """``v^{c_i} · U_i^D == v_i^{λ_i} · v^{M_i}``, with ``v^{M_i}`` from the public mask
    commitments. Raises :class:`ReshareError` naming the holder."""
    _check_contribution_ranges(plan, contribution)
    old, i = plan.old, contribution.holder
    N = old.N
    lhs = (
        powmod_public(old.V, contribution.masked, N)
        * powmod_public(mpz(contribution.constant), plan.bounds.divisor, N)
        % N
    )
    up, down = mpz(1), mpz(1)
    for (sender, recipient), commitment in masks.items():
        if sender == i:
            up = up * commitment.value % N
        elif recipient == i:
            down = down * commitment.value % N
    rhs = powmod_public(old.vk(i), plan.lambdas[i], N) * up * gmpy2.invert(down, N) % N
    if lhs != rhs:
        raise ReshareError(
            "contribution",
            f"holder {i}'s masked value does not match its verification key and commitments",
            holders=(i,),
        )


@dataclass(frozen=True)
class Outcome:
    """What a run's public values decide: ``T'``, the new epoch's parameters, and the
    transcript digest that acknowledgements and the acceptance test sign."""

    plan: ResharePlan
    total: int
    params: PublicParams
    contributions: tuple[Contribution, ...]
    transcript: bytes

    def public_part(self, member: int) -> int:
        """``P(j) = Δ'T' + Z·j``: the public polynomial every new share includes."""
        self.params.check_index(member)
        return self.plan.new_delta * self.total + self.plan.bounds.linear_term * member

    def contribution(self, holder: int) -> Contribution:
        for c in self.contributions:
            if c.holder == holder:
                return c
        raise ParameterError(f"no contribution from holder {holder}")

    def expected(self, holder: int, member: int) -> mpz:
        """``v^{G_i(j)}`` as holder ``i``'s commitments fix it: ``U_i^{Δ'}·Π V_{i,t}^{j^t}``."""
        self.params.check_index(member)
        c = self.contribution(holder)
        N = self.plan.old.N
        acc = powmod_public(mpz(c.constant), self.plan.new_delta, N)
        for t, commitment in enumerate(c.coefficients, 1):
            acc = acc * powmod_public(mpz(commitment), member**t, N) % N
        return acc


def _transcript(
    plan: ResharePlan, masks: MaskTable, contributions: Sequence[Contribution]
) -> bytes:
    width = plan.old.size_bytes
    signed = (plan.bounds.contribution_bound.bit_length() + 7) // 8
    h = hashlib.sha256(_TRANSCRIPT)
    h.update(plan.digest)
    for (sender, recipient), commitment in sorted(masks.items()):
        h.update(sender.to_bytes(2, "big") + recipient.to_bytes(2, "big"))
        h.update(commitment.value.to_bytes(width, "big"))
    for c in contributions:
        h.update(c.holder.to_bytes(2, "big") + encode_signed(c.masked, signed))
        for value in (c.constant, *c.coefficients):
            h.update(value.to_bytes(width, "big"))
    return h.digest()


def verify_contributions(
    plan: ResharePlan, contributions: Iterable[Contribution], commitments: Iterable[MaskCommitment]
) -> Outcome:
    """Every public check of a run; the new epoch's parameters if they all pass.

    Every participant runs this on the signed values it received, never trusting another
    party's result. Raises :class:`ReshareError` (naming holders where the evidence does).
    """
    masks = mask_table(plan, commitments)
    by_holder: dict[int, Contribution] = {}
    for contribution in contributions:
        _check_contribution_ranges(plan, contribution)
        prior = by_holder.get(contribution.holder)
        if prior is not None and prior != contribution:
            raise ReshareError(
                "contribution",
                f"holder {contribution.holder} sent two different contributions",
                holders=(contribution.holder,),
            )
        by_holder[contribution.holder] = contribution
    missing = [i for i in plan.holders if i not in by_holder]
    if missing:
        raise ReshareError("contribution", f"no contribution from holders {missing}")
    ordered = tuple(by_holder[i] for i in plan.holders)
    failed: list[int] = []
    for contribution in ordered:
        try:
            check_contribution(plan, contribution, masks)
        except ReshareError:
            failed.append(contribution.holder)
    if failed:
        raise ReshareError(
            "contribution",
            "masked values do not match the holders' verification keys and commitments",
            holders=failed,
        )

    b, old = plan.bounds, plan.old
    N = old.N
    total_sum = sum(c.masked for c in ordered)
    # With every contribution checked, these hold unless someone knows a multiple of the
    # order of v; they are checked anyway, and convict nobody.
    if total_sum % b.divisor:
        raise ReshareError("sum", "the masked values do not sum to a multiple of D")
    total = total_sum // b.divisor
    if not b.total_low < total < b.total_high:
        raise ReshareError(
            "sum", "the sum of the masked values is out of range (a holder used an oversized u_i)"
        )
    delta_new = plan.new_delta
    u_product = mpz(1)
    for c in ordered:
        u_product = u_product * c.constant % N
    base = powmod_public(old.V, delta_new * total, N) * powmod_public(u_product, delta_new, N) % N
    old_side = mpz(1)
    for i in plan.holders:
        old_side = old_side * powmod_public(old.vk(i), plan.lambdas[i], N) % N
    if powmod_public(base, b.divisor, N) != powmod_public(old_side, delta_new, N):
        raise ReshareError("sum", "the commitments do not share the old epoch's secret")

    # v'_j = base · v^{Z·j} · Π_t (Π_i V_{i,t})^{j^t}
    linear = powmod_public(old.V, b.linear_term, N)
    per_power = []
    for t in range(plan.k - 1):
        acc = mpz(1)
        for c in ordered:
            acc = acc * c.coefficients[t] % N
        per_power.append(acc)
    keys = []
    for j in range(1, plan.n + 1):
        acc = base * powmod_public(linear, j, N) % N
        for t, value in enumerate(per_power, 1):
            acc = acc * powmod_public(value, j**t, N) % N
        keys.append(int(acc))
    try:
        params = plan.new_params(tuple(keys))
    except ParameterError:
        raise ReshareError("sum", "a new verification key is degenerate; run again") from None
    return Outcome(plan, total, params, ordered, _transcript(plan, masks, ordered))


# -- a new member --------------------------------------------------------------------


def _check_sub_share_range(outcome: Outcome, value: PrivateValue) -> int:
    plan = outcome.plan
    if value.kind != "sub-share" or value.sender not in plan.holders:
        raise ParameterError("not a sub-share from a holder of this run")
    outcome.params.check_index(value.recipient)
    y = value.dangerously_export()
    if not 1 <= y < plan.bounds.sub_share_bound:
        raise ReshareError(
            "sub-share",
            f"holder {value.sender}'s sub-share for member {value.recipient} is out of range",
            holders=(value.sender,),
        )
    return y


def check_sub_share(outcome: Outcome, value: PrivateValue) -> None:
    """``v^{y_{i,j}} == U_i^{Δ'}·Π_t V_{i,t}^{j^t}``. Raises naming the holder."""
    y = _check_sub_share_range(outcome, value)
    plan = outcome.plan
    if powmod_secret(plan.old.V, mpz(y), plan.old.N) != outcome.expected(
        value.sender, value.recipient
    ):
        raise ReshareError(
            "sub-share",
            f"holder {value.sender}'s sub-share for member "
            f"{value.recipient} does not match its commitments",
            holders=(value.sender,),
        )


def assemble_share(outcome: Outcome, member: int, sub_shares: Iterable[PrivateValue]) -> KeyShare:
    """New member ``member``'s share ``s'_j = Δ'T' + Z·j + Σ_i y_{i,j}``, every sub-share
    checked.

    One constant-time exponentiation checks all sub-shares at once; only if that fails is
    each checked alone, to name the holders whose sub-shares are wrong.
    """
    plan = outcome.plan
    outcome.params.check_index(member)
    values: dict[int, int] = {}
    received: dict[int, PrivateValue] = {}
    for value in sub_shares:
        if value.recipient != member:
            raise ParameterError(f"a sub-share for member {value.recipient}, not {member}")
        y = _check_sub_share_range(outcome, value)
        if value.sender in values:
            raise ParameterError(f"two sub-shares from holder {value.sender}")
        values[value.sender] = y
        received[value.sender] = value
    missing = [i for i in plan.holders if i not in values]
    if missing:
        raise ReshareError("sub-share", f"member {member} has no sub-share from holders {missing}")
    N = plan.old.N
    total = sum(values.values())
    public = outcome.public_part(member)
    if powmod_secret(plan.old.V, mpz(total), N) * powmod_public(
        plan.old.V, public, N
    ) % N != outcome.params.vk(member):
        bad = []
        for i in plan.holders:
            try:
                check_sub_share(outcome, received[i])
            except ReshareError:
                bad.append(i)
        raise ReshareError(
            "sub-share", f"sub-shares for member {member} do not match the commitments", holders=bad
        )
    share = public + total
    if not 0 < share < (1 << outcome.params.share_bits):  # pragma: no cover - the bounds
        raise ReshareError("share-range", f"member {member}'s new share is out of range")
    return KeyShare(outcome.params, member, share)


def judge_sub_share_complaint(outcome: Outcome, revealed: PrivateValue) -> ReshareError:
    """Member ``revealed.recipient`` complained about holder ``revealed.sender``'s sub-share
    and revealed it (signed by the holder). The error convicting whoever lied."""
    try:
        check_sub_share(outcome, revealed)
    except ReshareError as exc:
        return exc
    return ReshareError(
        "complaint",
        f"member {revealed.recipient} complained about a "
        f"correct sub-share from holder {revealed.sender}",
        members=(revealed.recipient,),
    )


# -- acceptance: the new shares sign before anything commits -----------------------------


def acceptance_digest(outcome: Outcome) -> bytes:
    """SHA-256 of a fixed string, the transcript and the new epoch id: the test message.

    Signed with PKCS#1 v1.5 by every new member before the epoch commits. It names
    nothing anyone could want signed.
    """
    return epoch_acceptance_digest(outcome.params, outcome.transcript)


def epoch_acceptance_digest(params: PublicParams, transcript: bytes) -> bytes:
    """:func:`acceptance_digest` from the new epoch's parameters and the run's transcript
    alone (what a commit certificate carries)."""
    return hashlib.sha256(_ACCEPTANCE + transcript + params.epoch_id_bytes).digest()


def acceptance_representative(outcome: Outcome) -> int:
    return _representative(outcome.params, outcome.transcript)


def _representative(params: PublicParams, transcript: bytes) -> int:
    digest = epoch_acceptance_digest(params, transcript)
    return encode(Scheme.PKCS1V15, "sha256", digest, params.bits)


def check_acceptance(outcome: Outcome, shares: Sequence[SignatureShare]) -> bytes:
    """Every new member's signature share on the acceptance message combines.

    Shares must come from all ``n'`` members (indices as the transport authenticated
    them). With sound proofs every proof is verified and liars are named; every member
    then joins a ``k'``-subset that must give a valid signature. Returns the signature.
    """
    return check_epoch_acceptance(outcome.params, outcome.transcript, shares)


def check_epoch_acceptance(
    params: PublicParams, transcript: bytes, shares: Sequence[SignatureShare]
) -> bytes:
    """:func:`check_acceptance` from the new epoch's parameters and the run's transcript
    alone, so that anyone holding a commit certificate can run the test again."""
    x = _representative(params, transcript)
    by_index: dict[int, SignatureShare] = {}
    bad: list[int] = []
    for share in shares:
        try:
            check_share(params, share)
        except IttcError:
            if isinstance(share.index, int) and 1 <= share.index <= params.n:
                bad.append(share.index)
            continue
        by_index[share.index] = share
    if bad:
        raise ReshareError("acceptance", "malformed acceptance shares", members=bad)
    missing = [j for j in range(1, params.n + 1) if j not in by_index]
    if missing:
        raise ReshareError("acceptance", f"no acceptance share from members {missing}")
    if params.proofs_sound:
        for j, share in by_index.items():
            try:
                verify_share(params, x, share)
            except IttcError:
                bad.append(j)
        if bad:
            raise ReshareError("acceptance", "acceptance shares fail their proofs", members=bad)
    k = params.k
    first = list(range(1, k + 1))
    subsets = [first] + [first[:-1] + [j] for j in range(k + 1, params.n + 1)]
    signature = b""
    try:
        for subset in subsets:
            signature = combine(params, x, [by_index[j] for j in subset])
    except IttcError:
        convicted: tuple[int, ...] = ()
        if not params.proofs_sound:
            try:
                result = combine_robust(params, x, list(by_index.values()), use_proofs=False)
                if not result.ambiguous:
                    convicted = tuple(result.bad)
            except NotEnoughShares:
                pass
        raise ReshareError(
            "acceptance", "the new shares do not combine to a valid signature", members=convicted
        ) from None
    try:
        params.public_key().verify(
            signature,
            epoch_acceptance_digest(params, transcript),
            padding.PKCS1v15(),
            Prehashed(hashes.SHA256()),
        )
    except InvalidSignature:  # pragma: no cover - combine checked y^e == x already
        raise ReshareError("acceptance", "the acceptance signature does not verify") from None
    return signature


def acceptance_share(outcome: Outcome, share: KeyShare) -> SignatureShare:
    """A new member's share of the acceptance message (with a proof when proofs are sound)."""
    if share.params.epoch_id_bytes != outcome.params.epoch_id_bytes:
        raise ParameterError("this share is not of the run's new epoch")
    return share.signature_share(
        acceptance_representative(outcome), proof=outcome.params.proofs_sound
    )
