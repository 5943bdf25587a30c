"""Resharing to a new epoch (ittc.scheme.reshare): signatures, epochs, sizes, bad input and
a cheater in every role, at small sizes. Properties over many runs: tests/hypothesis."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import secrets
from dataclasses import dataclass, field

import pytest

from ittc.errors import IttcError, NotEnoughShares, ParameterError, ReshareError
from ittc.scheme.combine import combine_robust, lagrange_coefficients
from ittc.scheme.ct import mpz
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.proofs import SignatureShare, verify_share
from ittc.scheme.reshare import (
    RUN_ID_BYTES,
    Contribution,
    Holder,
    MaskCommitment,
    Outcome,
    PrivateValue,
    ResharePlan,
    acceptance_representative,
    acceptance_share,
    assemble_share,
    check_acceptance,
    judge_mask_complaint,
    judge_sub_share_complaint,
    mask_table,
    verify_contributions,
)
from ittc.scheme.reshare.local import reshare_in_one_process
from tests.reshare_keys import (
    digest_of,
    every_subset_signs,
    generated_key,
    key_of_kind,
    sign_with,
    split_key,
    whole_signature,
)

KINDS = ["generated", "split"]


def plan_for(shares, n, k, holders=None) -> ResharePlan:
    old = shares[0].params
    chosen = tuple(holders or sorted(s.index for s in shares)[: old.k])
    return ResharePlan(old, chosen, n, k, secrets.token_bytes(RUN_ID_BYTES))


@dataclass
class Run:
    """A run driven step by step, so a test can cheat between steps."""

    plan: ResharePlan
    holders: dict[int, Holder]
    commitments: list[MaskCommitment] = field(default_factory=list)
    masks: dict[int, list[tuple[MaskCommitment, PrivateValue]]] = field(default_factory=dict)
    contributions: dict[int, Contribution] = field(default_factory=dict)
    sub_shares: dict[int, dict[int, PrivateValue]] = field(default_factory=dict)

    @classmethod
    def start(cls, shares, n, k, holders=None) -> Run:
        plan = plan_for(shares, n, k, holders)
        by_index = {s.index: s for s in shares}
        run = cls(plan, {i: Holder(plan, by_index[i]) for i in plan.holders})
        run.masks = {i: [] for i in plan.holders}
        for holder in run.holders.values():
            made, private = holder.send_masks()
            run.commitments.extend(made)
            for c in made:
                run.masks[c.recipient].append((c, private[c.recipient]))
        return run

    def deliver_masks(self) -> None:
        for i, holder in self.holders.items():
            for commitment, value in self.masks[i]:
                holder.receive_mask(commitment, value)

    def contribute(self) -> None:
        self.sub_shares = {j: {} for j in range(1, self.plan.n + 1)}
        for i, holder in self.holders.items():
            self.contributions[i], subs = holder.contribute()
            for j, value in subs.items():
                self.sub_shares[j][i] = value

    def outcome(self) -> Outcome:
        return verify_contributions(self.plan, self.contributions.values(), self.commitments)

    def new_shares(self, outcome: Outcome) -> list[KeyShare]:
        return [
            assemble_share(outcome, j, self.sub_shares[j].values())
            for j in range(1, self.plan.n + 1)
        ]


def full_run(shares, n, k, holders=None) -> tuple[Run, Outcome]:
    run = Run.start(shares, n, k, holders)
    run.deliver_masks()
    run.contribute()
    return run, run.outcome()


def replace_private(value: PrivateValue, new: int) -> PrivateValue:
    return PrivateValue(value.kind, value.sender, value.recipient, new)


# -- it works ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_refresh_signs_exactly_like_the_whole_key(kind):
    key = key_of_kind(kind)
    outcome, new = reshare_in_one_process(key.shares, 5, 3)
    p = outcome.params
    assert p.key_id == key.dealt.params.key_id and p.epoch == 1
    assert p.modulus == key.dealt.params.modulus and p.v == key.dealt.params.v
    assert p.epoch_id != key.dealt.params.epoch_id and p.sharing == "integer"
    assert every_subset_signs(key, new, b"refreshed") == 10
    # The old epoch still signs with its own shares (until the layers above destroy them).
    assert sign_with(key.shares[:3], b"refreshed") == whole_signature(key, b"refreshed")


@pytest.mark.parametrize("kind", KINDS)
def test_membership_up_down_and_threshold_changes(kind):
    key = key_of_kind(kind)
    shares = key.shares
    for n, k, holders in [
        (7, 4, (2, 4, 5)),
        (5, 3, (1, 3, 6, 7)),
        (5, 2, None),
        (4, 4, (2, 5)),
        (2, 2, None),
    ]:
        outcome, shares = reshare_in_one_process(shares, n, k, holders=holders)
        p = outcome.params
        assert (p.n, p.k, len(shares)) == (n, k, n)
        assert p.key_id == key.dealt.params.key_id
        assert [s.index for s in shares] == list(range(1, n + 1))
        every_subset_signs(key, shares, f"{n}/{k}".encode())
    assert p.epoch == 5


def test_first_reshare_of_a_generated_key_converts_it():
    key = generated_key()
    old = key.dealt.params
    holders = (2, 3, 5)
    outcome, new = reshare_in_one_process(key.shares, 7, 4, holders=holders)
    p = outcome.params
    lambdas = lagrange_coefficients(holders, 120)
    assert (old.sharing, p.sharing) == ("shoup", "integer")
    assert p.kind == "generated" and p.proofs_sound
    assert p.secret_multiplier == math.factorial(5)
    assert p.secret_bits == old.share_bits + sum(abs(x) for x in lambdas).bit_length()
    assert p.combine_exponent == 4 * math.factorial(7) ** 3 * 120
    # Proofs stay sound and verify with integer shares.
    x = encode(Scheme.PKCS1V15, "sha256", digest_of(b"proofs"), p.bits)
    for share in new:
        verify_share(p, x, share.signature_share(x, proof=True))
    # The next reshare keeps A: same multiplier and secret bits.
    again, _ = reshare_in_one_process(new, 5, 3)
    assert again.params.secret_multiplier == 120
    assert again.params.secret_bits == p.secret_bits


def test_a_split_key_keeps_multiplier_one():
    key = split_key()
    outcome, _ = reshare_in_one_process(key.shares, 6, 3)
    p = outcome.params
    assert p.kind == "split" and not p.proofs_sound
    assert (p.secret_multiplier, p.secret_bits) == (1, p.bits)


@pytest.mark.parametrize("kind", KINDS)
def test_new_shares_stay_within_the_public_bound(kind):
    key = key_of_kind(kind)
    outcome, new = reshare_in_one_process(key.shares, 5, 3)
    p = outcome.params
    assert all(0 < s.dangerously_export_secret() < (1 << p.share_bits) for s in new)
    assert p.share_bits <= p.bits + 2 * 128 + 64
    assert p.share_bits == outcome.plan.bounds.share_bits


def test_independent_verifiers_agree_and_the_transcript_binds_every_value():
    key = split_key()
    run, outcome = full_run(key.shares, 5, 3)
    again = verify_contributions(
        run.plan, list(run.contributions.values())[::-1], run.commitments[::-1]
    )
    assert again.params == outcome.params and again.transcript == outcome.transcript
    # A different run id is a different run, even with identical values.
    other_plan = dataclasses.replace(run.plan, run_id=bytes(RUN_ID_BYTES))
    other = verify_contributions(other_plan, run.contributions.values(), run.commitments)
    assert other.transcript != outcome.transcript
    assert other.params.epoch_id == outcome.params.epoch_id


# -- epochs never mix ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_old_and_new_shares_never_combine(kind):
    key = key_of_kind(kind)
    old = key.dealt.params
    outcome, new = reshare_in_one_process(key.shares, 5, 3)
    p = outcome.params
    x = encode(Scheme.PKCS1V15, "sha256", digest_of(b"mixed"), p.bits)
    new_sig = [s.signature_share(x) for s in new[: p.k - 1]]
    old_sig = [s.signature_share(x) for s in key.shares]
    # k'-1 new shares, with old-epoch shares standing in for every other index.
    used = {s.index for s in new_sig}
    fill = [
        SignatureShare(j, s.value)
        for j, s in zip([j for j in range(1, p.n + 1) if j not in used], old_sig, strict=False)
    ]
    with pytest.raises(NotEnoughShares):
        combine_robust(p, x, new_sig + fill, use_proofs=False)
    # ...and the same the other way round, under the old epoch's parameters.
    used = {s.index for s in old_sig[: old.k - 1]}
    fill = [
        SignatureShare(j, s.value)
        for j, s in zip(
            [j for j in range(1, old.n + 1) if j not in used], new_sig + new_sig, strict=False
        )
    ]
    with pytest.raises(NotEnoughShares):
        combine_robust(old, x, old_sig[: old.k - 1] + fill, use_proofs=False)


def test_a_holder_refuses_a_share_of_another_epoch():
    key = split_key()
    outcome, new = reshare_in_one_process(key.shares, 5, 3)
    plan = plan_for(key.shares, 5, 3)
    with pytest.raises(ParameterError, match="epoch"):
        Holder(plan, new[0])


# -- plans ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        dict(holders=(1, 2)),
        dict(holders=(1, 2, 2)),
        dict(holders=(3, 2, 1)),
        dict(holders=(0, 1, 2)),
        dict(holders=(1, 2, 6)),
        dict(holders=[1, 2, 3]),
        dict(holders=(1, 2, True)),
        dict(n=5, k=1),
        dict(n=3, k=4),
        dict(n=65, k=3),
        dict(run_id=b"short"),
        dict(run_id="x" * 32),
    ],
)
def test_bad_plans_are_refused(change):
    key = split_key()
    base = dict(old=key.dealt.params, holders=(1, 2, 3), n=5, k=3, run_id=bytes(RUN_ID_BYTES))
    base.update(change)
    with pytest.raises(ParameterError):
        ResharePlan(**base)


def test_holder_steps_in_order_only():
    key = split_key()
    plan = plan_for(key.shares, 5, 3)
    holder = Holder(plan, key.shares[1])
    with pytest.raises(ParameterError):
        holder.contribute()
    holder.send_masks()
    with pytest.raises(ParameterError):
        holder.send_masks()
    with pytest.raises(ParameterError, match="no mask yet"):
        holder.contribute()
    with pytest.raises(ParameterError):
        Holder(plan, key.shares[4])  # node 5 is not a holder of this run


# -- secrets stay in their types -----------------------------------------------------------


def test_private_values_and_holders_keep_their_secrets():
    key = split_key()
    run = Run.start(key.shares, 5, 3)
    _, value = run.masks[2][0]
    holder = run.holders[1]
    for obj in (value, holder):
        digits = str(value.dangerously_export())
        assert digits not in repr(obj) and digits[:12] not in str(obj)
        with pytest.raises(TypeError):
            pickle.dumps(obj)
    with pytest.raises(TypeError):
        copy.copy(value)
    with pytest.raises(TypeError):
        copy.deepcopy(value)
    raw = value.to_bytes(run.plan)
    assert len(raw) == PrivateValue.width(run.plan, "mask")
    back = PrivateValue.from_bytes(run.plan, "mask", value.sender, value.recipient, raw)
    assert back == value and back != replace_private(value, 1)
    with pytest.raises(ReshareError) as err:
        PrivateValue.from_bytes(run.plan, "mask", 1, 2, raw + b"\x00")
    assert err.value.holders == (1,)


# -- a cheater in every role ----------------------------------------------------------------


def blamed(exc: ReshareError) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return exc.holders, exc.members


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_mask_is_caught_by_its_recipient_and_the_complaint_names_the_sender(kind):
    key = key_of_kind(kind)
    run = Run.start(key.shares, 5, 3)
    commitment, value = run.masks[3][0]  # from holder 1 to holder 3
    bad = replace_private(value, value.dangerously_export() + 1)
    with pytest.raises(ReshareError) as err:
        run.holders[3].receive_mask(commitment, bad)
    assert blamed(err.value) == ((1,), ()) and err.value.check == "mask"
    assert blamed(judge_mask_complaint(run.plan, commitment, bad)) == ((1,), ())
    # A holder who complains about a good mask convicts itself.
    assert blamed(judge_mask_complaint(run.plan, commitment, value)) == ((3,), ())


def test_a_bad_mask_commitment_is_caught_by_its_recipient():
    key = split_key()
    run = Run.start(key.shares, 5, 3)
    commitment, value = run.masks[2][0]
    forged = dataclasses.replace(commitment, value=commitment.value * 4 % key.dealt.params.modulus)
    with pytest.raises(ReshareError) as err:
        run.holders[2].receive_mask(forged, value)
    assert blamed(err.value) == ((1,), ())
    # Two different signed commitments for one pair convict the sender.
    with pytest.raises(ReshareError) as err:
        mask_table(run.plan, run.commitments + [forged])
    assert blamed(err.value) == ((1,), ())


@pytest.mark.parametrize("mask", [0, -1, 1 << 5000])
def test_an_out_of_range_mask_names_its_sender(mask):
    key = split_key()
    run = Run.start(key.shares, 5, 3)
    commitment, value = run.masks[3][1]  # from holder 2
    with pytest.raises(ReshareError) as err:
        run.holders[3].receive_mask(commitment, replace_private(value, mask))
    assert blamed(err.value) == ((2,), ())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "how",
    [
        "plus one",
        "plus D",
        "U from elsewhere",
        "out of range",
        "a bool",
        "too few commitments",
        "commitments not a tuple",
        "commitment not a unit",
        "U a string",
    ],
)
def test_a_bad_contribution_is_caught_by_the_public_checks(kind, how):
    key = key_of_kind(kind)
    run = Run.start(key.shares, 5, 3)
    run.deliver_masks()
    run.contribute()
    c = run.contributions[2]
    N = key.dealt.params.modulus
    changed = {
        "plus one": dict(masked=c.masked + 1),
        "plus D": dict(masked=c.masked + run.plan.bounds.divisor),
        "U from elsewhere": dict(constant=run.contributions[1].constant),
        "out of range": dict(masked=run.plan.bounds.contribution_bound),
        "a bool": dict(masked=True),
        "too few commitments": dict(coefficients=c.coefficients[:-1]),
        "commitments not a tuple": dict(coefficients=None),
        "commitment not a unit": dict(coefficients=(N,) + c.coefficients[1:]),
        "U a string": dict(constant=str(c.constant)),
    }[how]
    run.contributions[2] = dataclasses.replace(c, **changed)
    with pytest.raises(ReshareError) as err:
        run.outcome()
    assert blamed(err.value) == ((2,), ()) and err.value.check == "contribution"


def test_a_contribution_outside_the_plan_or_missing_convicts_nobody():
    key = split_key()
    run = Run.start(key.shares, 5, 3)
    run.deliver_masks()
    run.contribute()
    stranger = dataclasses.replace(run.contributions[1], holder=4)
    with pytest.raises(ReshareError) as err:
        verify_contributions(run.plan, [*run.contributions.values(), stranger], run.commitments)
    assert blamed(err.value) == ((), ())
    with pytest.raises(ReshareError) as err:
        verify_contributions(
            run.plan, [run.contributions[1], run.contributions[2]], run.commitments
        )
    assert blamed(err.value) == ((), ()) and "holders [3]" in str(err.value)
    with pytest.raises(ReshareError) as err:
        run.outcome.__func__(dataclasses.replace(run, commitments=run.commitments[1:]))
    assert blamed(err.value) == ((), ())
    two = dataclasses.replace(run.contributions[3], masked=run.contributions[3].masked + 1)
    with pytest.raises(ReshareError) as err:
        verify_contributions(run.plan, [*run.contributions.values(), two], run.commitments)
    assert blamed(err.value) == ((3,), ())


@pytest.mark.parametrize("kind", KINDS)
def test_an_oversized_share_of_a_is_refused_before_anything_is_dealt(kind):
    """A holder who shifts u_i consistently (c_i and U_i agree) passes its own check, but
    the sum leaves its range: nobody can be convicted, and the run stops."""
    key = key_of_kind(kind)
    run = Run.start(key.shares, 5, 3)
    run.deliver_masks()
    run.contribute()
    plan, old = run.plan, key.dealt.params
    shift = 1 << (plan.bounds.u_bits + 8)
    c = run.contributions[3]
    run.contributions[3] = dataclasses.replace(
        c,
        masked=c.masked - plan.bounds.divisor * shift,
        constant=int(mpz(c.constant) * pow(old.v, shift, old.modulus) % old.modulus),
    )
    with pytest.raises(ReshareError) as err:
        run.outcome()
    assert blamed(err.value) == ((), ()) and err.value.check == "sum"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["plus one", "zero", "too large", "another member's"])
def test_a_bad_sub_share_is_caught_by_its_member_and_the_complaint_names_the_holder(kind, how):
    key = key_of_kind(kind)
    run, outcome = full_run(key.shares, 5, 3)
    good = run.sub_shares[4][1]
    y = good.dangerously_export()
    new = {
        "plus one": y + 1,
        "zero": 0,
        "too large": run.plan.bounds.sub_share_bound,
        "another member's": run.sub_shares[5][1].dangerously_export(),
    }[how]
    bad = replace_private(good, new)
    run.sub_shares[4][1] = bad
    with pytest.raises(ReshareError) as err:
        assemble_share(outcome, 4, run.sub_shares[4].values())
    assert blamed(err.value) == ((1,), ()) and err.value.check == "sub-share"
    assert blamed(judge_sub_share_complaint(outcome, bad)) == ((1,), ())
    assert blamed(judge_sub_share_complaint(outcome, good)) == ((), (4,))
    # The other members are unaffected.
    for j in (1, 2, 3, 5):
        assemble_share(outcome, j, run.sub_shares[j].values())


def test_bad_polynomial_commitments_are_caught_at_every_member():
    """V_{i,1} from elsewhere: the contribution check cannot see it (it covers c_i and U_i),
    every member's sub-share check can."""
    key = generated_key()
    run = Run.start(key.shares, 5, 3)
    run.deliver_masks()
    run.contribute()
    c = run.contributions[1]
    run.contributions[1] = dataclasses.replace(
        c, coefficients=(run.contributions[2].coefficients[0],) + c.coefficients[1:]
    )
    outcome = run.outcome()
    for j in range(1, 6):
        with pytest.raises(ReshareError) as err:
            assemble_share(outcome, j, run.sub_shares[j].values())
        assert blamed(err.value) == ((1,), ())


def test_two_holders_cheating_at_once_are_both_named():
    key = split_key(7, 4)
    run = Run.start(key.shares, 5, 3, holders=(2, 3, 5, 7))
    run.deliver_masks()
    run.contribute()
    for i in (3, 7):
        run.contributions[i] = dataclasses.replace(
            run.contributions[i], masked=run.contributions[i].masked - 2
        )
    with pytest.raises(ReshareError) as err:
        run.outcome()
    assert blamed(err.value) == ((3, 7), ())


def test_sub_shares_with_a_missing_holder_or_for_another_member_are_refused():
    key = split_key()
    run, outcome = full_run(key.shares, 5, 3)
    subs = run.sub_shares[2]
    with pytest.raises(ReshareError) as err:
        assemble_share(outcome, 2, [subs[1], subs[2]])
    assert blamed(err.value) == ((), ())
    with pytest.raises(ParameterError):
        assemble_share(outcome, 3, subs.values())
    with pytest.raises(ParameterError):
        assemble_share(outcome, 6, subs.values())


@pytest.mark.parametrize("kind", KINDS)
def test_a_member_lying_in_the_acceptance_test_is_named(kind):
    key = key_of_kind(kind)
    run, outcome = full_run(key.shares, 5, 3)
    new = run.new_shares(outcome)
    shares = [acceptance_share(outcome, s) for s in new]
    x = acceptance_representative(outcome)
    assert check_acceptance(outcome, shares)
    wrong = new[1].signature_share(
        x * 4 % outcome.params.modulus, proof=outcome.params.proofs_sound
    )
    shares[1] = SignatureShare(2, wrong.value, wrong.proof)
    with pytest.raises(ReshareError) as err:
        check_acceptance(outcome, shares)
    assert blamed(err.value) == ((), (2,)) and err.value.check == "acceptance"
    with pytest.raises(ReshareError) as err:
        check_acceptance(outcome, shares[:4])
    assert blamed(err.value) == ((), ())
    with pytest.raises(ParameterError):
        acceptance_share(outcome, key.shares[0])


def test_errors_are_typed_and_name_no_secret():
    key = split_key()
    run, outcome = full_run(key.shares, 5, 3)
    good = run.sub_shares[1][2]
    bad = replace_private(good, good.dangerously_export() + 5)
    err = judge_sub_share_complaint(outcome, bad)
    assert isinstance(err, IttcError) and not isinstance(err, ValueError)
    assert str(bad.dangerously_export()) not in str(err)
    assert str(good.dangerously_export())[:20] not in str(err)
    assert "holder 2" in str(err) and "sub-share" in str(err)
