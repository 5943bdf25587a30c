"""Properties of the scheme over generated inputs (hypothesis)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ittc.errors import IttcError, NotEnoughShares
from ittc.scheme.combine import combine, combine_robust
from ittc.scheme.encoding import HASHES, Scheme, encode
from ittc.scheme.proofs import Proof, SignatureShare, verify_share

digests = st.sampled_from(sorted(HASHES)).flatmap(
    lambda h: st.tuples(
        st.just(h), st.binary(min_size=HASHES[h].digest_size, max_size=HASHES[h].digest_size)
    )
)


@settings(max_examples=15, deadline=None)
@given(digests, st.sampled_from(list(Scheme)))
def test_every_k_subset_gives_the_same_signature(vkey, hashed, scheme):
    hash_name, digest = hashed
    params = vkey.params
    salt = b"\x07" * HASHES[hash_name].digest_size if scheme is Scheme.PSS else b""
    x = encode(scheme, hash_name, digest, params.bits, salt)
    shares = [s.signature_share(x) for s in vkey.shares]
    signatures = {
        combine(params, x, list(subset)) for subset in itertools.combinations(shares, params.k)
    }
    assert len(signatures) == 1


@settings(max_examples=15, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 4), st.integers(0, 4))
def test_k_minus_1_shares_never_sign(vkey, digest, drop_a, drop_b):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", digest, params.bits)
    shares = [s.signature_share(x) for s in vkey.shares]
    few = [s for i, s in enumerate(shares) if i not in (drop_a, drop_b)][: params.k - 1]
    with pytest.raises(NotEnoughShares):
        combine_robust(params, x, few)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["value", "c", "z"]), st.integers(0, 1535), st.integers(0, 4))
def test_flipping_any_bit_of_a_share_or_proof_is_detected(vkey, part, bit, who):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", b"\x42" * 32, params.bits)
    share = vkey.shares[who].signature_share(x, proof=True)
    assert share.proof is not None
    if part == "value":
        flipped = dataclasses.replace(share, value=share.value ^ (1 << bit))
    elif part == "c":
        flipped = dataclasses.replace(
            share, proof=Proof(share.proof.c ^ (1 << (bit % 256)), share.proof.z)
        )
    else:
        flipped = dataclasses.replace(share, proof=Proof(share.proof.c, share.proof.z ^ (1 << bit)))
    with pytest.raises(IttcError):
        verify_share(params, x, flipped)
    # And without proofs, the final check still refuses the flipped value.
    if part == "value":
        others = [s.signature_share(x) for s in vkey.shares if s.index != share.index][:2]
        with pytest.raises(IttcError):
            combine(params, x, others + [SignatureShare(flipped.index, flipped.value)])
