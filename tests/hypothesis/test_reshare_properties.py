"""Properties of resharing over generated runs (hypothesis), for both key kinds:

* any ``k'`` new shares sign, byte for byte as the whole key does;
* ``k'-1`` new shares with any number of old-epoch shares never sign;
* shares stay below ``|N| + 2·128 + 64`` bits over 100 epochs of refreshes and
  membership changes up and down, and every epoch signs.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ittc.errors import NotEnoughShares
from ittc.scheme.combine import combine_robust
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.proofs import SignatureShare
from ittc.scheme.reshare.local import reshare_in_one_process
from tests.reshare_keys import digest_of, key_of_kind, sign_with, whole_signature

KINDS = ["generated", "split"]
#: The bound the shares must respect at every epoch (|N| + 2·128 + 64)...
SLACK_BITS = 2 * 128 + 64
#: ...and the tighter one the design gives clusters of up to 7 nodes (docs/lifecycle.md).
DESIGN_SLACK_BITS = 128 + 64


@st.composite
def memberships(draw, old_n: int, old_k: int, max_n: int = 7):
    """A new (n', k') and the k holders (of 1..old_n) who deal it."""
    n = draw(st.integers(2, max_n))
    k = draw(st.integers(2, n))
    holders = tuple(sorted(draw(st.permutations(range(1, old_n + 1)))[:old_k]))
    return n, k, holders


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_any_k_new_shares_sign_like_the_whole_key(kind, data):
    key = key_of_kind(kind)
    n, k, holders = data.draw(memberships(5, 3))
    _, new = reshare_in_one_process(key.shares, n, k, holders=holders, acceptance=False)
    subset = data.draw(st.permutations(new))[:k]
    message = data.draw(st.binary(max_size=64))
    assert sign_with(subset, message) == whole_signature(key, message)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_fewer_than_k_new_shares_with_old_shares_never_sign(kind, data):
    key = key_of_kind(kind)
    old = key.dealt.params
    n, k, holders = data.draw(memberships(5, 3))
    outcome, new = reshare_in_one_process(key.shares, n, k, holders=holders, acceptance=False)
    p = outcome.params
    x = encode(Scheme.PKCS1V15, "sha256", digest_of(data.draw(st.binary(max_size=16))), p.bits)
    few = [s.signature_share(x) for s in data.draw(st.permutations(new))[: k - 1]]
    olds = [s.signature_share(x) for s in key.shares]
    olds = data.draw(st.permutations(olds))[: data.draw(st.integers(0, old.n))]
    # Old shares presented as new members' shares, at whatever free indices.
    free = [j for j in range(1, p.n + 1) if j not in {s.index for s in few}]
    relabelled = [
        SignatureShare(j, s.value)
        for j, s in zip(data.draw(st.permutations(free)), olds, strict=False)
    ]
    with pytest.raises(NotEnoughShares):
        combine_robust(p, x, few + relabelled, use_proofs=False)
    # And new shares presented as old ones, beside k-1 genuine old shares.
    genuine = [s.signature_share(x) for s in key.shares[: old.k - 1]]
    free_old = [j for j in range(1, old.n + 1) if j not in {s.index for s in genuine}]
    posing = [SignatureShare(j, s.value) for j, s in zip(free_old, few, strict=False)]
    with pytest.raises(NotEnoughShares):
        combine_robust(old, x, genuine + posing, use_proofs=False)


def random_membership(rng: random.Random, old_n: int, old_k: int) -> tuple[int, int, tuple]:
    n = rng.randint(2, 7)
    k = rng.randint(2, n)
    return n, k, tuple(sorted(rng.sample(range(1, old_n + 1), old_k)))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**64))
def test_shares_stay_bounded_over_100_epochs(kind, seed):
    # A seeded generator, not hypothesis draws: the first example is then as varied as
    # any other, not the minimal one (2 of 2 at every epoch).
    rng = random.Random(seed)
    key = key_of_kind(kind)
    shares = key.shares
    bits = key.dealt.params.bits
    # The named changes first (5->7 with k 3->4, then 7->5), then whatever is drawn.
    script = [(7, 4, None), (5, 3, None), (5, 3, None)]
    sizes: list[int] = []
    shapes: set[tuple[int, int]] = set()
    for epoch in range(1, 101):
        params = shares[0].params
        if script:
            n, k, holders = script.pop(0)
        else:
            n, k, holders = random_membership(rng, params.n, params.k)
        outcome, shares = reshare_in_one_process(shares, n, k, holders=holders, acceptance=False)
        p = outcome.params
        assert p.epoch == epoch and p.key_id == key.dealt.params.key_id
        assert p.share_bits <= bits + DESIGN_SLACK_BITS <= bits + SLACK_BITS
        assert all(0 < s.dangerously_export_secret() < 1 << p.share_bits for s in shares)
        sizes.append(max(s.dangerously_export_secret().bit_length() for s in shares))
        shapes.add((n, k))
        if epoch % 10 == 0 or epoch <= 3:
            subset = rng.sample(shares, k)
            assert sign_with(subset, b"epoch %d" % epoch) == whole_signature(
                key, b"epoch %d" % epoch
            )
    # Flat, not growing: the last epochs are no larger than the first ones allowed.
    assert max(sizes) <= bits + SLACK_BITS
    assert max(sizes[-10:]) <= max(sizes[:10]) + 32
    assert len(shapes) >= 10  # up and down, many shapes


def test_every_k_subset_of_a_refreshed_split_key_signs():
    key = key_of_kind("split")
    _, new = reshare_in_one_process(key.shares, 6, 3, holders=(1, 4, 5))
    expected = whole_signature(key, b"all subsets")
    for subset in itertools.combinations(new, 3):
        assert sign_with(subset, b"all subsets") == expected
