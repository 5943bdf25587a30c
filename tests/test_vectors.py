"""Known-answer vectors: valid and invalid shares side by side (tests/vectors/)."""

from __future__ import annotations

import pytest

from ittc.errors import InvalidProof, InvalidShare
from ittc.scheme.combine import combine
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.proofs import Proof, SignatureShare, verify_share
from tests.conftest import load_vectors

DOC = load_vectors()


def _share(item: dict) -> SignatureShare:
    return SignatureShare(
        item["index"], int(item["value"], 16), Proof(int(item["c"], 16), int(item["z"], 16))
    )


@pytest.mark.parametrize("vector", DOC["valid"], ids=lambda v: f"{v['scheme']}-{v['hash']}")
def test_valid_vector(vkey, vector):
    params = vkey.params
    x = encode(
        Scheme(vector["scheme"]),
        vector["hash"],
        bytes.fromhex(vector["digest"]),
        params.bits,
        bytes.fromhex(vector["salt"]),
    )
    assert format(x, "x") == vector["x"]
    shares = [_share(s) for s in vector["shares"]]
    for share, key in zip(shares, vkey.shares, strict=True):
        verify_share(params, x, share)
        # Signature shares are deterministic; proofs are randomized.
        assert key.signature_share(x).value == share.value
    expected = bytes.fromhex(vector["signature"])
    assert combine(params, x, shares[:3]) == expected
    assert combine(params, x, shares[2:]) == expected
    assert combine(params, x, [shares[4], shares[0], shares[2]]) == expected


@pytest.mark.parametrize("vector", DOC["invalid"], ids=lambda v: v["case"])
def test_invalid_vector(vkey, vector):
    share = _share(vector)
    with pytest.raises(InvalidShare) as info:
        verify_share(vkey.params, int(vector["x"], 16), share)
    # Range failures name no node when the index itself is out of range.
    if 1 <= share.index <= vkey.params.n:
        assert info.value.index == share.index
    else:
        assert info.value.index is None
    assert isinstance(info.value, InvalidShare)


def test_invalid_vectors_cover_proof_failures():
    kinds = {v["case"] for v in DOC["invalid"]}
    assert {"challenge plus one", "response plus one", "claims index 3"} <= kinds


def test_proof_failure_is_invalid_proof(vkey):
    vector = next(v for v in DOC["invalid"] if v["case"] == "response plus one")
    with pytest.raises(InvalidProof):
        verify_share(vkey.params, int(vector["x"], 16), _share(vector))
