"""Properties of the robust combiner over generated liars (hypothesis).

Any ``k`` honest shares among those given, plus any independent liars (as many as
``n-k``), in any order: a valid signature, and exactly the liars named. Small keys
(512-bit safe primes, 1024-bit split) at n=9, k=5 and n=7, k=3.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from ittc.errors import NotEnoughShares
from ittc.scheme.combine import combine_robust
from tests import liars as L

LIES = ["random unit", "another node's share", "another message", "random value", "minus itself"]


@st.composite
def lying_shares(draw):
    kind = draw(st.sampled_from(["safe", "split"]))
    n, k = draw(st.sampled_from([(9, 5), (7, 3)]))
    nodes = list(range(1, n + 1))
    given_ = draw(st.lists(st.sampled_from(nodes), min_size=k, max_size=n, unique=True))
    most = len(given_) - k  # at least k of the shares given are honest
    liars = draw(st.lists(st.sampled_from(given_), max_size=most, unique=True))
    lies = {i: draw(st.sampled_from(LIES)) for i in liars}
    order = draw(st.permutations(given_))
    seed = draw(st.integers(0, 2**32))
    return kind, n, k, order, lies, seed


@settings(max_examples=60, deadline=None)
@given(lying_shares())
def test_k_honest_shares_and_independent_liars_sign_and_name_exactly_the_liars(case):
    kind, n, k, order, lies, seed = case
    dealt = L.key(kind, n, k)
    N = dealt.params.modulus
    msg = L.message(dealt, f"property {seed}")
    other = L.message(dealt, f"another message {seed}")
    units = iter(L.random_units(N, 2 * n, seed))
    shares = []
    for index in order:
        share = msg.shares[index - 1]
        lie = lies.get(index)
        if lie == "random unit":
            share = L.times(share, next(units), N)
        elif lie == "another node's share":
            source = next(i for i in order if i != index and i not in lies)
            share = dataclasses.replace(share, value=msg.shares[source - 1].value)
        elif lie == "another message":
            share = other.shares[index - 1]
        elif lie == "random value":
            share = dataclasses.replace(share, value=next(units))
        elif lie == "minus itself":
            share = dataclasses.replace(share, value=N - share.value)
        shares.append(share)
    result = combine_robust(dealt.params, msg.x, shares, use_proofs=False)
    assert L.verifies(dealt.params, msg, result.signature)
    wrong = {i for i, lie in lies.items() if lie != "minus itself"}
    assert set(result.bad) == wrong
    assert result.ambiguous == () and result.complete
    assert not set(result.used) & wrong


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["safe", "split"]), st.integers(0, 4), st.integers(0, 2**32))
def test_never_a_signature_from_fewer_than_k_honest_shares_unless_k_combine(kind, honest, seed):
    """With fewer than ``k`` honest shares and independent liars, no ``k`` shares
    combine: a typed error, never a wrong signature."""
    n, k = 9, 5
    dealt = L.key(kind, n, k)
    msg = L.message(dealt, f"too few {seed}")
    liars = range(honest + 1, n + 1)
    try:
        combine_robust(
            dealt.params,
            msg.x,
            L.independent(msg, liars, dealt.params.modulus, seed),
            use_proofs=False,
        )
    except NotEnoughShares as exc:
        assert exc.needed == k
    else:
        raise AssertionError("signed from fewer than k honest shares")
