"""The dealer: makes a key (or takes an existing one) and splits it into ``n`` shares.

Two paths (docs/design.md, section 1):

* :func:`generate` — safe primes, ``d = e^{-1} mod m`` with ``m = p'q'``, Shamir over
  ``Z_m`` (Shoup). Share proofs are sound.
* :func:`split` — an existing ``RSAPrivateKey`` whose primes are not safe. ``Δ·d`` is
  shared over the integers with coefficients drawn from a range ``2^(128+n)`` times
  larger than any shift a coalition of ``k-1`` could detect, which hides it
  statistically; the key is marked as having no sound share proofs.

Either way the dealer signs a test message through every share and through several
``k``-subsets before it returns, and ``p, q, d, m`` never leave this module's frames.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import gmpy2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.errors import InvalidSignature, ParameterError
from ittc.scheme import primes
from ittc.scheme.combine import combine
from ittc.scheme.ct import mpz, powmod_secret
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import _ABSOLUTE_MIN_BITS, MAX_NODES, MIN_MODULUS_BITS, PublicParams
from ittc.scheme.proofs import verify_share

__all__ = [
    "DealtKey",
    "check_exponent",
    "consistency_check",
    "deal_integer",
    "deal_shoup",
    "generate",
    "split",
]

Progress = Callable[[str], None]

#: Statistical hiding parameter for integer sharing (bits).
HIDING_BITS = 128
SUPPORTED_BITS = (2048, 3072, 4096)


@dataclass(frozen=True, repr=False)
class DealtKey:
    """What the dealer hands out: public parameters and the ``n`` secret shares."""

    params: PublicParams
    shares: tuple[KeyShare, ...]
    #: Things the operator must be told (non-robust threshold, unsound proofs...).
    warnings: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        return (
            f"<DealtKey {self.params.short_id}: {self.params.bits}-bit, "
            f"k={self.params.k} of n={self.params.n}, {self.params.sharing} sharing>"
        )


def check_exponent(e: int, n: int) -> None:
    """Shoup's scheme needs the public exponent ``e`` prime and larger than ``n``.

    Raises :class:`ParameterError` saying what ``e`` is and how many nodes it allows.
    """
    if e < 3 or not gmpy2.is_prime(e):
        raise ParameterError(
            f"public exponent e = {e} is not prime: threshold RSA (Shoup) needs a prime e "
            "larger than the number of nodes (65537 is the usual choice)"
        )
    if e <= n:
        raise ParameterError(
            f"public exponent e = {e} is too small for {n} nodes: threshold RSA (Shoup) "
            f"needs e > n, so this e allows at most {e - 1} nodes"
        )


def _check_shape(n: int, k: int, e: int) -> list[str]:
    if not 1 <= n <= MAX_NODES:
        raise ParameterError(f"number of nodes must be in 1..{MAX_NODES}")
    if not 1 <= k <= n:
        raise ParameterError(f"threshold must be in 1..n (n={n}), got {k}")
    check_exponent(e, n)
    warnings = []
    if k == 1:
        warnings.append(
            f"threshold k=1: each of the {n} node(s) can sign alone, so every site holds the "
            "whole signing power (one stolen share file and passphrase, or one compromised "
            "node, is the key); this is replication, not threshold protection"
        )
    if n - (k - 1) < k:
        warnings.append(
            f"threshold k={k} with n={n} is not robust: {k - 1} corrupt nodes "
            f"leave only {n - k + 1} honest ones, fewer than k; Shoup's "
            "robustness needs n - (k-1) >= k"
        )
    return warnings


def _random_square(N: int, check: Callable[[mpz], bool] | None = None) -> int:
    while True:
        r = mpz(secrets.randbelow(N - 3) + 2)
        if math.gcd(int(r), N) != 1:  # pragma: no cover - would factor N
            continue
        v = r * r % N
        if v != 1 and (check is None or check(v)):
            return int(v)


def _verification_keys(N: int, v: int, secrets_: list[int]) -> tuple[int, ...]:
    vm, Nm = mpz(v), mpz(N)
    return tuple(int(powmod_secret(vm, mpz(s), Nm)) for s in secrets_)


def _evaluate(coefficients: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coefficients):
        acc = acc * x + c
    return acc


def deal_shoup(p: int, q: int, e: int = 65537, n: int = 5, k: int = 3) -> DealtKey:
    """Shoup's dealing from two distinct safe primes ``p, q``."""
    warnings = _check_shape(n, k, e)
    if p == q or not (primes.is_safe_prime(p) and primes.is_safe_prime(q)):
        raise ParameterError("Shoup's dealing needs two distinct safe primes")
    N = p * q
    pp, qp = (p - 1) // 2, (q - 1) // 2
    m = pp * qp
    if math.gcd(e, m) != 1:
        raise ParameterError("public exponent divides the group order; pick another")
    d = pow(e, -1, m)
    coefficients = [d] + [secrets.randbelow(m) for _ in range(k - 1)]
    values = [_evaluate(coefficients, i) % m for i in range(1, n + 1)]
    for i, s in enumerate(values, 1):
        if s == 0:  # pragma: no cover - probability ~ n/m
            raise ParameterError(f"share {i} is zero; deal again")
    Nm = mpz(N)

    def generates(v: mpz) -> bool:  # v generates Q_N iff its order is neither p' nor q'
        return bool(gmpy2.powmod(v, pp, Nm) != 1 and gmpy2.powmod(v, qp, Nm) != 1)

    v = _random_square(N, generates)
    params = PublicParams(
        modulus=N,
        e=e,
        v=v,
        verification_keys=_verification_keys(N, v, values),
        n=n,
        k=k,
        sharing="shoup",
        share_bits=N.bit_length(),
    )
    dealt = DealtKey(
        params, tuple(KeyShare(params, i, s) for i, s in enumerate(values, 1)), tuple(warnings)
    )
    consistency_check(dealt, reference=rsa_key_from_primes(p, q, e))
    return dealt


def deal_integer(N: int, e: int, d: int, n: int = 5, k: int = 3) -> DealtKey:
    """Share ``Δ·d`` over the integers (for keys whose primes are not safe)."""
    warnings = _check_shape(n, k, e)
    warnings.append(
        "this key's primes are not safe primes: share proofs are not sound, so "
        "bad shares are found by the final signature check and by trying other "
        "k-subsets, not by proofs"
    )
    delta = math.factorial(n)
    bound = (1 << (HIDING_BITS + n)) * delta * N
    coefficients = [delta * d] + [secrets.randbelow(bound) for _ in range(k - 1)]
    values = [_evaluate(coefficients, i) for i in range(1, n + 1)]
    share_bits = max(_evaluate([delta * N] + [bound] * (k - 1), n).bit_length(), N.bit_length())
    v = _random_square(N)
    params = PublicParams(
        modulus=N,
        e=e,
        v=v,
        verification_keys=_verification_keys(N, v, values),
        n=n,
        k=k,
        sharing="integer",
        share_bits=share_bits,
    )
    dealt = DealtKey(
        params, tuple(KeyShare(params, i, s) for i, s in enumerate(values, 1)), tuple(warnings)
    )
    consistency_check(dealt)
    return dealt


def generate(
    bits: int = 2048,
    n: int = 5,
    k: int = 3,
    e: int = 65537,
    *,
    progress: Progress | None = None,
    processes: int | None = None,
    insecure_allow_small_modulus_for_tests: bool = False,
) -> DealtKey:
    """Generate a fresh key from safe primes and deal it into ``n`` shares.

    ``bits`` is 2048, 3072 or 4096. Anything else needs
    ``insecure_allow_small_modulus_for_tests=True`` and must never protect anything.
    """
    if bits not in SUPPORTED_BITS:
        if not insecure_allow_small_modulus_for_tests:
            raise ParameterError(f"modulus size must be one of {SUPPORTED_BITS}")
        if bits < _ABSOLUTE_MIN_BITS or bits % 2:
            raise ParameterError("even modulus sizes of at least 256 bits only")
    _check_shape(n, k, e)
    if progress is not None:
        progress(f"generating two {bits // 2}-bit safe primes")
    small = bits < MIN_MODULUS_BITS
    p, q = primes.generate_safe_prime_pair(
        bits // 2, progress=progress, processes=1 if small else processes
    )
    if progress is not None:
        progress(f"dealing {n} shares, threshold {k}")
    dealt = deal_shoup(p, q, e, n, k)
    if progress is not None:
        progress("test signature verified through every share")
    return dealt


def split(
    key: rsa.RSAPrivateKey, n: int = 5, k: int = 3, *, progress: Progress | None = None
) -> DealtKey:
    """Split an existing RSA key into ``n`` shares with threshold ``k``."""
    numbers = key.private_numbers()
    N, e, d = numbers.public_numbers.n, numbers.public_numbers.e, numbers.d
    if N.bit_length() < MIN_MODULUS_BITS:
        raise ParameterError(f"keys below {MIN_MODULUS_BITS} bits are not split")
    if progress is not None:
        progress(f"splitting a {N.bit_length()}-bit key into {n} shares, threshold {k}")
    return deal_integer(N, e, d, n, k)


def rsa_key_from_primes(p: int, q: int, e: int) -> rsa.RSAPrivateKey:
    """The ordinary RSA key for ``p, q, e`` (used to cross-check the dealing)."""
    d = pow(e, -1, (p - 1) * (q - 1) // math.gcd(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=d % (p - 1),
        dmq1=d % (q - 1),
        iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


def consistency_check(dealt: DealtKey, reference: rsa.RSAPrivateKey | None = None) -> None:
    """Sign a test message through every share and several ``k``-subsets; verify all.

    Raises :class:`InvalidSignature` (or :class:`~ittc.errors.InvalidProof`) if any
    share is inconsistent with the public parameters.
    """
    params = dealt.params
    digest = hashlib.sha256(b"ittc dealer consistency check " + params.key_id_bytes).digest()
    x = encode(Scheme.PKCS1V15, "sha256", digest, params.bits)
    shares = [s.signature_share(x, proof=True) for s in dealt.shares]
    for share in shares:
        verify_share(params, x, share)
    k, n = params.k, params.n
    subsets = {tuple(range(k)), tuple(range(n - k, n)), tuple(range(n))[1 : k + 1]}
    subsets = {s for s in subsets if len(s) == k}
    public = params.public_key()
    for subset in sorted(subsets):
        signature = combine(params, x, [shares[i] for i in subset])
        try:
            public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        except Exception:
            raise InvalidSignature(
                "dealer self-check: combined signature does not verify"
            ) from None
        if (
            reference is not None
            and reference.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())) != signature
        ):
            raise InvalidSignature("dealer self-check: signature differs from the whole key's")
