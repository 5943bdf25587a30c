"""Small keys of both kinds, with the whole RSA key beside them, for the reshare tests.

TEST ONLY: 512-bit moduli, made once per process.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.scheme import dealer, primes
from ittc.scheme.combine import combine
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare

BITS = 512


@dataclass(frozen=True)
class SmallKey:
    kind: str
    dealt: dealer.DealtKey
    whole: rsa.RSAPrivateKey

    @property
    def shares(self) -> list[KeyShare]:
        return list(self.dealt.shares)


@functools.cache
def generated_key(n: int = 5, k: int = 3) -> SmallKey:
    p, q = primes.generate_safe_prime_pair(BITS // 2, processes=1)
    return SmallKey(
        "generated", dealer.deal_shoup(p, q, 65537, n, k), dealer.rsa_key_from_primes(p, q, 65537)
    )


@functools.cache
def split_key(n: int = 5, k: int = 3) -> SmallKey:
    state = gmpy2.random_state(20240612)
    while True:
        p = int(gmpy2.next_prime(gmpy2.mpz_urandomb(state, BITS // 2) | (3 << (BITS // 2 - 2))))
        q = int(gmpy2.next_prime(gmpy2.mpz_urandomb(state, BITS // 2) | (3 << (BITS // 2 - 2))))
        if p != q and (p * q).bit_length() == BITS and gmpy2.gcd(65537, (p - 1) * (q - 1)) == 1:
            break
    whole = dealer.rsa_key_from_primes(p, q, 65537)
    d = whole.private_numbers().d
    return SmallKey("split", dealer.deal_integer(p * q, 65537, d, n, k), whole)


def key_of_kind(kind: str) -> SmallKey:
    return generated_key() if kind == "generated" else split_key()


def digest_of(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


def sign_with(shares: Sequence[KeyShare], message: bytes) -> bytes:
    """PKCS#1 v1.5 / SHA-256 signature on ``message`` from exactly ``k`` shares."""
    params = shares[0].params
    x = encode(Scheme.PKCS1V15, "sha256", digest_of(message), params.bits)
    return combine(params, x, [s.signature_share(x) for s in shares])


def whole_signature(key: SmallKey, message: bytes) -> bytes:
    return key.whole.sign(digest_of(message), padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def every_subset_signs(
    key: SmallKey, shares: Sequence[KeyShare], message: bytes, limit: int = 40
) -> int:
    """Every ``k``-subset (at most ``limit`` of them) signs exactly as the whole key does."""
    expected = whole_signature(key, message)
    k = shares[0].params.k
    count = 0
    for subset in itertools.islice(itertools.combinations(shares, k), limit):
        assert sign_with(subset, message) == expected
        count += 1
    return count
