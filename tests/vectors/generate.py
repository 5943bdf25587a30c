"""Regenerate the known-answer vectors: ``python tests/vectors/generate.py``.

The vectors hold a small *test-only* key (1536 bits, its primes included so that tests
can compare with the whole key) dealt into 5 shares with threshold 3, signatures made
through the shares for both paddings and every hash, and invalid shares and proofs
beside the valid ones. Nothing here protects anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.scheme import dealer, primes
from ittc.scheme.combine import combine
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.proofs import Proof

HERE = pathlib.Path(__file__).parent
HASH = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


def main() -> None:
    p, q = primes.generate_safe_prime_pair(768, processes=1)
    dealt = dealer.deal_shoup(p, q, 65537, 5, 3)
    params = dealt.params
    whole = dealer.rsa_key_from_primes(p, q, 65537)
    valid, invalid = [], []
    for scheme in Scheme:
        for hash_name, algorithm in HASH.items():
            message = f"ittc vector {scheme.value} {hash_name}".encode()
            digest = hashlib.new(hash_name, message).digest()
            salt = (
                hashlib.sha512(message).digest()[: algorithm.digest_size]
                if scheme is Scheme.PSS
                else b""
            )
            x = encode(scheme, hash_name, digest, params.bits, salt)
            shares = [s.signature_share(x, proof=True) for s in dealt.shares]
            signature = combine(params, x, shares[:3])
            if scheme is Scheme.PKCS1V15:
                assert signature == whole.sign(digest, padding.PKCS1v15(), Prehashed(algorithm))
            valid.append(
                {
                    "scheme": scheme.value,
                    "hash": hash_name,
                    "message": message.hex(),
                    "digest": digest.hex(),
                    "salt": salt.hex(),
                    "x": format(x, "x"),
                    "shares": [
                        {
                            "index": s.index,
                            "value": format(s.value, "x"),
                            "c": format(s.proof.c, "x"),
                            "z": format(s.proof.z, "x"),
                        }
                        for s in shares
                    ],
                    "signature": signature.hex(),
                }
            )
    base = valid[0]
    x = int(base["x"], 16)
    good = dealt.shares[1].signature_share(x, proof=True)
    other = dealt.shares[1].signature_share(int(valid[1]["x"], 16), proof=True)
    N = params.modulus
    cases = {
        "value times 2": dataclasses.replace(good, value=good.value * 2 % N),
        "value of another message": dataclasses.replace(other, proof=good.proof),
        "share and proof of another message": other,
        "challenge plus one": dataclasses.replace(
            good, proof=Proof(good.proof.c + 1, good.proof.z)
        ),
        "response plus one": dataclasses.replace(good, proof=Proof(good.proof.c, good.proof.z + 1)),
        "claims index 3": dataclasses.replace(good, index=3),
        "value zero": dataclasses.replace(good, value=0),
        "value N": dataclasses.replace(good, value=N),
        "value shares a factor with N (N itself times 2 mod nothing)": dataclasses.replace(
            good, value=p
        ),
        "index 0": dataclasses.replace(good, index=0),
        "index 6": dataclasses.replace(good, index=6),
        "huge response": dataclasses.replace(good, proof=Proof(good.proof.c, 1 << 4000)),
        "huge challenge": dataclasses.replace(good, proof=Proof(1 << 256, good.proof.z)),
    }
    for case, share in cases.items():
        invalid.append(
            {
                "case": case,
                "x": base["x"],
                "index": share.index,
                "value": format(share.value, "x"),
                "c": format(share.proof.c, "x"),
                "z": format(share.proof.z, "x"),
            }
        )
    doc = {
        "description": "ittc known-answer vectors; TEST-ONLY 1536-bit key, never use it",
        "p": format(p, "x"),
        "q": format(q, "x"),
        "params": params.to_dict(),
        "shares": [format(s.dangerously_export_secret(), "x") for s in dealt.shares],
        "valid": valid,
        "invalid": invalid,
    }
    (HERE / "shoup_1536.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
