"""The threshold scheme without a network: encodings, shares, combine, robust combine."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pickle
import subprocess

import pytest
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.errors import CombineError, EncodingError, IttcError, NotEnoughShares, ParameterError
from ittc.scheme import dealer
from ittc.scheme.combine import combine, combine_robust, lagrange_coefficients
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare

HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


def _padding(scheme: Scheme, algorithm, salt_len: int):
    if scheme is Scheme.PKCS1V15:
        return padding.PKCS1v15()
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt_len)


def _sign(key, scheme, hash_name, message, salt=b"", subset=(0, 1, 2)):
    params = key.params
    digest = hashlib.new(hash_name, message).digest()
    x = encode(scheme, hash_name, digest, params.bits, salt)
    shares = [key.shares[i].signature_share(x) for i in subset]
    return digest, combine(params, x, shares)


@pytest.mark.parametrize("scheme", list(Scheme))
@pytest.mark.parametrize("hash_name", list(HASHES))
def test_signature_verifies_with_cryptography_and_openssl(vkey, scheme, hash_name, tmp_path):
    algorithm = HASHES[hash_name]
    salt = bytes(range(algorithm.digest_size)) if scheme is Scheme.PSS else b""
    message = b"threshold signed " + hash_name.encode()
    digest, signature = _sign(vkey, scheme, hash_name, message, salt)
    assert len(signature) == vkey.params.size_bytes
    public = vkey.params.public_key()
    public.verify(signature, message, _padding(scheme, algorithm, len(salt)), algorithm)
    public.verify(signature, digest, _padding(scheme, algorithm, len(salt)), Prehashed(algorithm))
    if scheme is Scheme.PKCS1V15:
        assert signature == vkey.whole.sign(message, padding.PKCS1v15(), algorithm)

    (tmp_path / "pub.pem").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(signature)
    cmd = [
        "openssl",
        "dgst",
        f"-{hash_name}",
        "-verify",
        str(tmp_path / "pub.pem"),
        "-signature",
        str(tmp_path / "sig"),
    ]
    if scheme is Scheme.PSS:
        cmd += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", f"rsa_pss_saltlen:{len(salt)}"]
    ok = subprocess.run(cmd + [str(tmp_path / "msg")], capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stdout + ok.stderr
    (tmp_path / "msg").write_bytes(message + b"!")
    bad = subprocess.run(cmd + [str(tmp_path / "msg")], capture_output=True, text=True)
    assert bad.returncode != 0


def test_signature_is_left_padded_to_modulus_length(vkey):
    # Find a message whose signature has a leading zero byte (about 1 in 256).
    for i in range(4000):
        _, signature = _sign(vkey, Scheme.PKCS1V15, "sha256", b"pad %d" % i)
        if signature[0] == 0:
            break
    else:  # pragma: no cover
        pytest.fail("no signature with a leading zero byte in 4000 tries")
    assert len(signature) == vkey.params.size_bytes
    vkey.params.public_key().verify(signature, b"pad %d" % i, padding.PKCS1v15(), hashes.SHA256())


def test_encoding_rejects_bad_input(vkey):
    bits = vkey.params.bits
    with pytest.raises(EncodingError):
        encode(Scheme.PKCS1V15, "sha256", b"\x00" * 31, bits)
    with pytest.raises(EncodingError):
        encode(Scheme.PKCS1V15, "md5", b"\x00" * 16, bits)
    with pytest.raises(EncodingError):
        encode(Scheme.PKCS1V15, "sha256", b"\x00" * 32, bits, salt=b"x")
    with pytest.raises(EncodingError):
        encode(Scheme.PSS, "sha256", b"\x00" * 32, bits, salt=b"x" * 513)
    with pytest.raises(EncodingError):
        encode(Scheme.PSS, "sha512", b"\x00" * 64, 512, salt=b"x" * 64)
    assert issubclass(EncodingError, ValueError) and issubclass(EncodingError, IttcError)


def test_combine_needs_exactly_k_distinct_shares(vkey):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), params.bits)
    shares = [s.signature_share(x) for s in vkey.shares]
    with pytest.raises(ParameterError):
        combine(params, x, shares[:2])
    with pytest.raises(ParameterError):
        combine(params, x, [shares[0], shares[0], shares[1]])
    wrong = dataclasses.replace(shares[1], value=shares[1].value * 4 % params.modulus)
    with pytest.raises(CombineError) as info:
        combine(params, x, [shares[0], wrong, shares[2]])
    assert info.value.indices == (1, 2, 3)


def test_lagrange_coefficients_interpolate_at_zero():
    delta = 120
    for subset in [(1, 2, 3), (1, 3, 5), (2, 4, 5), (1, 2, 3, 4, 5)]:
        lam = lagrange_coefficients(subset, delta)
        # Σ λ_j f(j) = Δ f(0) for f of degree < |subset|.
        for f in ([7], [7, 3], [7, 3, 11], [1, 2, 3, 4, 5][: len(subset)]):
            value = sum(
                lam_j * sum(c * j**p for p, c in enumerate(f))
                for lam_j, j in zip(lam, subset, strict=True)
            )
            assert value == delta * f[0]


@pytest.mark.parametrize("liars", [(), (2,), (1, 4), (5, 3)])
def test_robust_combine_names_exactly_the_liars(vkey, liars):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha384", bytes(48), params.bits)
    shares = [s.signature_share(x) for s in vkey.shares]
    # Each liar errs in its own way (independent errors do not cancel).
    tampered = [
        dataclasses.replace(s, value=s.value * (2 * s.index + 1) % params.modulus)
        if s.index in liars
        else s
        for s in shares
    ]
    result = combine_robust(params, x, tampered, use_proofs=False)
    assert set(result.bad) == set(liars)
    assert not set(result.used) & set(liars)
    assert result.signature == combine(params, x, shares[:3])
    assert result.ambiguous == ()


def test_colluding_liars_whose_errors_cancel_cannot_forge_or_hide(vkey):
    # Nodes 1 and 4 multiply their shares by the same factor: in the subset {1, 4, 5}
    # their Lagrange coefficients cancel (200 and -200), so that subset still yields the
    # right signature. Without proofs {1,4,5} and {2,3,5} are then indistinguishable.
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), params.bits)
    shares = [s.signature_share(x) for s in vkey.shares]
    lying = [
        dataclasses.replace(s, value=s.value * 3 % params.modulus) if s.index in (1, 4) else s
        for s in shares
    ]
    result = combine_robust(params, x, lying, use_proofs=False)
    assert result.signature == combine(params, x, shares[:3])
    assert set(result.ambiguous) == {1, 2, 3, 4}
    # With proofs the liars are named exactly.
    proved = [s.signature_share(x, proof=True) for s in vkey.shares]
    lying = [
        dataclasses.replace(s, value=s.value * 3 % params.modulus) if s.index in (1, 4) else s
        for s in proved
    ]
    result = combine_robust(params, x, lying)
    assert set(result.bad) == {1, 4} and result.ambiguous == ()


def test_robust_combine_with_proofs_names_liars(vkey):
    params = vkey.params
    x = encode(Scheme.PSS, "sha256", bytes(32), params.bits, salt=b"s" * 32)
    shares = [s.signature_share(x, proof=True) for s in vkey.shares]
    other_x = encode(Scheme.PSS, "sha256", bytes(32), params.bits, salt=b"t" * 32)
    replayed = vkey.shares[0].signature_share(other_x, proof=True)
    shares[0] = replayed  # a share (with a valid proof) for another message
    shares[3] = dataclasses.replace(shares[3], value=shares[3].value + 1)
    result = combine_robust(params, x, shares)
    assert result.method == "proofs"
    assert set(result.bad) == {1, 4}
    assert "proof" in result.bad[1]


def test_robust_combine_fails_typed_with_fewer_than_k_good(vkey):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), params.bits)
    shares = [s.signature_share(x) for s in vkey.shares]
    for i in (0, 1, 2):
        shares[i] = dataclasses.replace(shares[i], value=shares[i].value * (5 + i) % params.modulus)
    with pytest.raises(NotEnoughShares) as info:
        combine_robust(params, x, shares, use_proofs=False)
    assert info.value.needed == 3
    with pytest.raises(NotEnoughShares):
        combine_robust(params, x, shares[3:], use_proofs=False)


def test_robust_combine_rejects_conflicting_duplicates(vkey):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), params.bits)
    shares = [s.signature_share(x) for s in vkey.shares]
    twin = dataclasses.replace(shares[0], value=shares[0].value * 2 % params.modulus)
    result = combine_robust(params, x, [shares[0], twin] + shares[1:], use_proofs=False)
    assert 1 in result.bad and 1 not in result.used


def test_keyshare_keeps_its_secret(vkey):
    share = vkey.shares[0]
    secret = share.dangerously_export_secret()
    for text in (repr(share), str(share), f"{share}"):
        assert format(secret, "x") not in text and str(secret) not in text
        assert "node 1" in text
    with pytest.raises(TypeError):
        pickle.dumps(share)
    with pytest.raises(TypeError):
        copy.deepcopy(share)
    with pytest.raises(TypeError):
        hash(share)
    same = KeyShare(vkey.params, 1, secret)
    assert same == share and same is not share
    assert KeyShare(vkey.params, 1, secret + 1) != share
    assert KeyShare(vkey.params, 2, secret) != share


def test_keyshare_self_test_catches_a_wrong_share(vkey):
    vkey.shares[2].self_test()
    wrong = KeyShare(vkey.params, 3, vkey.shares[2].dangerously_export_secret() + 1)
    with pytest.raises(IttcError):
        wrong.self_test()


def test_precomputed_nonces_are_used_and_proofs_still_verify(vkey):
    from ittc.scheme.proofs import verify_share

    share = KeyShare(vkey.params, 4, vkey.shares[3].dangerously_export_secret())
    share.precompute_nonces(2)
    assert share.precomputed_nonces == 2
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), vkey.params.bits)
    verify_share(vkey.params, x, share.signature_share(x, proof=True))
    assert share.precomputed_nonces == 1


def test_public_params_round_trip_and_tamper(vkey):
    params = vkey.params
    again = PublicParams.from_json(params.to_json())
    assert again == params and again.key_id == params.key_id
    doc = json.loads(params.to_json())
    doc["verification_keys"][0] = format(int(doc["verification_keys"][0], 16) + 1, "x")
    with pytest.raises(ParameterError, match="key id"):
        PublicParams.from_dict(doc)
    for broken in (
        {**json.loads(params.to_json()), "version": 3},
        {**json.loads(params.to_json()), "version": 1},
        {**json.loads(params.to_json()), "legacy_key_id": 1},
        {**json.loads(params.to_json()), "epoch": -1},
        {**json.loads(params.to_json()), "kind": "other"},
        {**json.loads(params.to_json()), "extra": 1},
        {**json.loads(params.to_json()), "n": "5"},
        {**json.loads(params.to_json()), "modulus": "zz"},
    ):
        with pytest.raises(ParameterError):
            PublicParams.from_dict(broken)
    with pytest.raises(ParameterError):
        PublicParams.from_json("{not json")
    with pytest.raises(ParameterError):
        dataclasses.replace(params, k=6)
    with pytest.raises(ParameterError):
        dataclasses.replace(params, e=4)


def test_generate_small_key_behind_flag_only():
    with pytest.raises(ParameterError):
        dealer.generate(1024)
    dealt = dealer.generate(512, n=4, k=2, insecure_allow_small_modulus_for_tests=True)
    assert dealt.params.bits == 512 and dealt.params.n == 4 and dealt.params.k == 2
    assert dealt.params.sharing == "shoup" and not dealt.warnings
    assert "k=2 of n=4" in repr(dealt)


def test_non_robust_threshold_is_reported():
    dealt = dealer.generate(512, n=4, k=3, insecure_allow_small_modulus_for_tests=True)
    assert any("not robust" in w for w in dealt.warnings)
    assert not dealt.params.robust


@pytest.mark.parametrize("bad", [dict(n=0), dict(k=0), dict(k=6), dict(e=3), dict(e=65536)])
def test_generate_rejects_bad_shapes(bad):
    with pytest.raises(ParameterError):
        dealer.generate(512, insecure_allow_small_modulus_for_tests=True, **bad)


@pytest.mark.slow
def test_generate_2048_bit_key_and_sign():
    messages = []
    dealt = dealer.generate(2048, progress=messages.append)
    assert dealt.params.bits == 2048 and messages
    digest, signature = _sign(
        dealt, Scheme.PSS, "sha256", b"full size", salt=b"\x01" * 32, subset=(4, 2, 0)
    )
    dealt.params.public_key().verify(
        signature, b"full size", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )


def test_split_existing_key_signs_like_the_original():
    key = rsa.generate_private_key(65537, 2048)
    dealt = dealer.split(key, n=5, k=3)
    assert dealt.params.sharing == "integer" and not dealt.params.proofs_sound
    assert any("not safe primes" in w for w in dealt.warnings)
    assert dealt.params.modulus == key.public_key().public_numbers().n
    for subset in [(0, 1, 2), (2, 3, 4), (0, 2, 4), (1, 3, 4)]:
        digest, signature = _sign(dealt, Scheme.PKCS1V15, "sha512", b"root", subset=subset)
        assert signature == key.sign(b"root", padding.PKCS1v15(), hashes.SHA512())
    # Bad shares from a split key are still found, by subsets.
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), dealt.params.bits)
    shares = [s.signature_share(x) for s in dealt.shares]
    shares[1] = dataclasses.replace(shares[1], value=shares[1].value * 7 % dealt.params.modulus)
    result = combine_robust(dealt.params, x, shares)
    assert set(result.bad) == {2}
    dealt.params.public_key().verify(
        result.signature, bytes(32), padding.PKCS1v15(), Prehashed(hashes.SHA256())
    )


def test_split_refuses_small_keys():
    with pytest.raises(ParameterError):
        dealer.split(rsa.generate_private_key(65537, 1024))


def test_wrong_signature_never_verifies(vkey):
    params = vkey.params
    digest, signature = _sign(vkey, Scheme.PKCS1V15, "sha256", b"a")
    with pytest.raises(CryptoInvalidSignature):
        params.public_key().verify(signature, b"b", padding.PKCS1v15(), hashes.SHA256())


def test_share_from_wire_with_unchecked_index_is_refused(vkey):
    params = vkey.params
    x = encode(Scheme.PKCS1V15, "sha256", bytes(32), params.bits)
    shares = [s.signature_share(x) for s in vkey.shares[:2]]
    with pytest.raises(IttcError):
        combine(params, x, shares + [SignatureShare(-1, 5)])
    with pytest.raises(IttcError):
        combine(params, x, shares + [SignatureShare(99, 5)])
