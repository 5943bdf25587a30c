"""Small test keys and lying shares for the robust-combine tests (no network).

Keys are small so that a combination costs well under a millisecond: safe-prime keys
(Shoup's dealing) of 512 bits, and split keys (integer sharing of an ordinary RSA key)
of 1024 bits from ``cryptography`` or, where a test searches many subsets, of 512 bits
from two random non-safe primes. Never use any of them for anything else.

Lies are made with full knowledge of the honest shares, as a compromised node (or a
coalition of them) would: multiply its share by a unit of its choice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import random
from collections.abc import Iterable, Sequence
from functools import cache

import gmpy2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.errors import CombineError
from ittc.scheme import dealer, primes
from ittc.scheme.combine import combine, lagrange_coefficients
from ittc.scheme.dealer import DealtKey
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare

E = 65537


@cache
def _safe_primes() -> tuple[int, int]:
    return primes.generate_safe_prime(256), primes.generate_safe_prime(256)


@cache
def _split_numbers(bits: int) -> tuple[int, int]:
    """``(N, d)`` of an ordinary RSA key: from ``cryptography`` at 1024 bits and more,
    from two random (not safe) primes below that."""
    if bits >= 1024:
        numbers = rsa.generate_private_key(E, bits).private_numbers()
        return numbers.public_numbers.n, numbers.d
    rng = random.Random(bits)
    while True:
        p, q = (
            int(gmpy2.next_prime(rng.getrandbits(bits // 2) | 1 << (bits // 2 - 1)))
            for _ in range(2)
        )
        lam = math.lcm(p - 1, q - 1)
        if p != q and math.gcd(E, lam) == 1:
            return p * q, pow(E, -1, lam)


@cache
def key(kind: str, n: int, k: int) -> DealtKey:
    """``"safe"``: Shoup's dealing, 512 bits; ``"split"``: integer sharing, 1024 bits;
    ``"split512"``: integer sharing, 512 bits."""
    if kind == "safe":
        p, q = _safe_primes()
        return dealer.deal_shoup(p, q, E, n, k)
    N, d = _split_numbers(512 if kind == "split512" else 1024)
    return dealer.deal_integer(N, E, d, n, k)


@dataclasses.dataclass
class Message:
    digest: bytes
    x: int
    shares: list[SignatureShare]  # honest, one per node, node i at position i-1


def message(dealt: DealtKey, text: str, *, proofs: bool = False) -> Message:
    digest = hashlib.sha256(text.encode()).digest()
    x = encode(Scheme.PKCS1V15, "sha256", digest, dealt.params.bits)
    return Message(digest, x, [s.signature_share(x, proof=proofs) for s in dealt.shares])


def verifies(params: PublicParams, msg: Message, signature: bytes) -> bool:
    """Checked by ``cryptography`` (raises if not)."""
    params.public_key().verify(
        signature, msg.digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())
    )
    return True


def times(share: SignatureShare, unit: int, N: int) -> SignatureShare:
    return dataclasses.replace(share, value=share.value * unit % N)


def random_units(N: int, count: int, seed: int) -> list[int]:
    """Distinct random units: independent liars' errors."""
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < count:
        u = rng.randrange(2, N - 1)
        if math.gcd(u, N) == 1 and u not in out:
            out.append(u)
    return out


def independent(msg: Message, liars: Iterable[int], N: int, seed: int = 0) -> list[SignatureShare]:
    """Each liar multiplies its share by its own random unit."""
    liars = sorted(liars)
    units = dict(zip(liars, random_units(N, len(liars), seed), strict=True))
    return [times(s, units[s.index], N) if s.index in units else s for s in msg.shares]


def power(h: int, exponent: int, N: int) -> int:
    return pow(h, exponent, N) if exponent >= 0 else pow(pow(h, -1, N), -exponent, N)


def framing(
    msg: Message, liars: Iterable[int], kept: Iterable[int], N: int, h: int
) -> list[SignatureShare]:
    """Colluders on one wrong polynomial that agrees with the honest one at 0 and at the
    honest nodes ``kept`` (at most ``k-2``): liar ``t`` sends ``x_t·h^{ε(t)}`` with
    ``ε(z) = z·Π_{g∈kept}(z - g)``. Every ``k`` of liars and ``kept`` then sign (the
    errors add up to ``h^{2aΔ·ε(0)} = 1``), and the honest nodes not kept look wrong
    next to them.
    """
    liars, kept = set(liars), sorted(kept)
    return [
        times(s, power(h, s.index * math.prod(s.index - g for g in kept), N), N)
        if s.index in liars
        else s
        for s in msg.shares
    ]


def cancelling_pair(
    msg: Message, subset: Sequence[int], pair: tuple[int, int], delta: int, N: int, h: int
) -> list[SignatureShare]:
    """Two liars whose errors cancel in one ``k``-subset (and, in general, only there):
    with that subset's Lagrange coefficients ``λ1, λ2``, liar 1 multiplies by ``h^{λ2}``,
    liar 2 by ``h^{-λ1}``."""
    lam = dict(zip(subset, lagrange_coefficients(tuple(subset), delta), strict=True))
    a, b = pair
    units = {a: power(h, lam[b], N), b: power(h, -lam[a], N)}
    return [times(s, units[s.index], N) if s.index in units else s for s in msg.shares]


def oracle(
    params: PublicParams, x: int, shares: Sequence[SignatureShare]
) -> tuple[set[int], set[int]]:
    """``(bad, ambiguous)`` by brute force, from ``combine`` alone: every ``k``-subset
    is combined; the consistent sets are the maximal sets of which every ``k`` sign;
    ``bad`` is outside all of them, ``ambiguous`` in some but not all."""
    k = params.k
    by_index = {s.index: s for s in shares}
    indices = sorted(by_index)
    signing = set()
    for subset in itertools.combinations(indices, k):
        try:
            combine(params, x, [by_index[i] for i in subset])
        except CombineError:
            continue
        signing.add(subset)
    sets = set()
    for subset in signing:
        grown = set(subset) | {
            j
            for j in indices
            if j not in subset
            and all(
                tuple(sorted(rest + (j,))) in signing
                for rest in itertools.combinations(subset, k - 1)
            )
        }
        assert all(s in signing for s in itertools.combinations(sorted(grown), k))
        sets.add(frozenset(grown))
    if not sets:
        return set(), set()
    union = frozenset().union(*sets)
    common = frozenset(indices).intersection(*sets)
    return set(indices) - union, set(union - common)
