"""Combining ``k`` signature shares into a standard RSA signature (Shoup, section 2).

``w = Π x_j^{2λ_j}`` with the integer Lagrange coefficients ``λ_j = Δ·Π (0-j')/(j-j')``;
``w^e = x^{e'}`` for ``e' = 4Δ²`` (or ``4Δ³`` for integer sharing); with
``a·e' + b·e = 1``, ``y = w^a·x^b`` satisfies ``y^e = x``. That final equation is checked
before any signature leaves this module.

:func:`combine` takes exactly ``k`` shares. :func:`combine_robust` takes any number,
some possibly wrong, finds a valid signature and names the wrong shares: first cheaply
(combine and check; other ``k``-subsets), and with proofs when the key has sound ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import gmpy2

from ittc.errors import CombineError, IttcError, NotEnoughShares, ParameterError
from ittc.scheme.ct import mpz, powmod_public
from ittc.scheme.keyshare import check_representative
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare, check_share, verify_share

__all__ = [
    "CombineError",
    "CombineResult",
    "MAX_SUBSETS",
    "combine",
    "combine_robust",
    "lagrange_coefficients",
]

#: How many ``k``-subsets a robust combine tries before giving up.
MAX_SUBSETS = 2000


@dataclass(frozen=True)
class CombineResult:
    signature: bytes
    #: The node indices whose shares made the signature.
    used: tuple[int, ...]
    #: Node index -> why its share was excluded.
    bad: dict[int, str] = field(default_factory=dict)
    method: Literal["optimistic", "proofs", "subsets"] = "optimistic"
    #: Without proofs, colluding liars can leave it open which of these shares lied.
    ambiguous: tuple[int, ...] = ()


@lru_cache(maxsize=4096)
def lagrange_coefficients(indices: tuple[int, ...], delta: int) -> tuple[int, ...]:
    """``λ_{0,j} = Δ · Π_{j' ≠ j} (0 - j') / (j - j')`` for each ``j`` in ``indices``.

    Integers because ``Δ = n!`` clears every denominator (Shoup, Lemma 1).
    """
    out = []
    for j in indices:
        num, den = delta, 1
        for jp in indices:
            if jp != j:
                num *= -jp
                den *= j - jp
        if num % den:
            raise ParameterError("indices exceed n: Lagrange coefficient is not an integer")
        out.append(num // den)
    return tuple(out)


@lru_cache(maxsize=64)
def _bezout(e_prime: int, e: int) -> tuple[int, int]:
    g, a, b = gmpy2.gcdext(e_prime, e)
    if g != 1:
        raise ParameterError("gcd(e', e) != 1: e must be a prime larger than n")
    return int(a), int(b)


def _combine_unchecked(params: PublicParams, x: mpz, shares: Sequence[SignatureShare]) -> mpz:
    N = params.N
    indices = tuple(s.index for s in shares)
    lambdas = lagrange_coefficients(indices, params.delta)
    a, b = _bezout(params.combine_exponent, params.e)
    # w = Π x_j^{2 λ_j} with small exponents; positive and negative powers apart so one
    # modular inverse serves them all. Then y = w^a · x^b.
    num, den = mpz(1), mpz(1)
    for share, lam in zip(shares, lambdas, strict=True):
        if lam > 0:
            num = num * powmod_public(mpz(share.value), 2 * lam, N) % N
        elif lam < 0:
            den = den * powmod_public(mpz(share.value), -2 * lam, N) % N
    top, bottom = (num, den) if a > 0 else (den, num)
    w_a = powmod_public(top * gmpy2.invert(bottom, N) % N, abs(a), N)
    return w_a * powmod_public(x, b, N) % N


def _is_signature(params: PublicParams, y: mpz, x: mpz) -> bool:
    return bool(powmod_public(y, params.e, params.N) == x)


def _to_bytes(params: PublicParams, y: mpz) -> bytes:
    # Left-padded to the modulus length: a shorter signature is a known bug elsewhere.
    return int(y).to_bytes(params.size_bytes, "big")


def combine(
    params: PublicParams, x: int, shares: Sequence[SignatureShare], *, check: bool = True
) -> bytes:
    """The signature on representative ``x`` from exactly ``k`` shares of distinct nodes.

    Raises :class:`CombineError` if the result is not a valid signature. ``check=False``
    skips that final check and exists only for benchmarks: never release such a value.
    """
    if not 0 < x < params.modulus:
        check_representative(params, x)
    if len(shares) != params.k:
        raise ParameterError(f"combine takes exactly k={params.k} shares, got {len(shares)}")
    for share in shares:
        check_share(params, share, unit=False)
    if len({s.index for s in shares}) != len(shares):
        raise ParameterError("shares must come from distinct nodes")
    # One gcd for all: x·Π x_j is a unit iff each factor is. Name the culprit if not.
    product = mpz(x)
    for share in shares:
        product = product * share.value % params.N
    if gmpy2.gcd(product, params.N) != 1:
        check_representative(params, x)
        for share in shares:
            check_share(params, share)
    xm = mpz(x)
    y = _combine_unchecked(params, xm, shares)
    if check and not _is_signature(params, y, xm):
        raise CombineError([s.index for s in shares])
    return _to_bytes(params, y)


class _SubsetOracle:
    """Memoized "do these k shares combine to a valid signature?"."""

    def __init__(self, params: PublicParams, xm: mpz, shares: dict[int, SignatureShare]) -> None:
        self.params, self.xm, self.shares = params, xm, shares
        self.results: dict[tuple[int, ...], mpz | None] = {}

    def __call__(self, subset: tuple[int, ...]) -> mpz | None:
        if subset not in self.results:
            if len(self.results) >= MAX_SUBSETS:
                raise _TooManySubsets
            y = _combine_unchecked(self.params, self.xm, [self.shares[i] for i in subset])
            self.results[subset] = y if _is_signature(self.params, y, self.xm) else None
        return self.results[subset]


class _TooManySubsets(Exception):
    pass


def _consistent(oracle: _SubsetOracle, members: tuple[int, ...], k: int) -> bool:
    return all(oracle(sub) is not None for sub in itertools.combinations(members, k))


def _largest_consistent_sets(
    oracle: _SubsetOracle, indices: list[int], k: int
) -> list[tuple[int, ...]]:
    """The largest sets of shares every ``k`` of which combine to a valid signature.

    Honest shares always form such a set. Colluding liars whose errors cancel can form
    one too; when two sets of the same size exist, the data cannot tell who lied.
    """
    for size in range(len(indices), k - 1, -1):
        found = [t for t in itertools.combinations(indices, size) if _consistent(oracle, t, k)]
        if found:
            return found
    return []


def combine_robust(
    params: PublicParams,
    x: int,
    shares: Sequence[SignatureShare],
    *,
    use_proofs: bool | None = None,
) -> CombineResult:
    """A valid signature from any number of shares, some of which may be wrong.

    Shares that fail range checks, conflict with another share from the same node, fail
    their proof, or are left out of the largest set of mutually consistent shares are
    named in ``result.bad``. Without proofs, colluding liars can make who lied
    ambiguous (never the signature): those shares are named in ``result.ambiguous``.
    ``use_proofs``: ``None`` verifies proofs when every share carries one and the key's
    proofs are sound; ``True`` demands them; ``False`` ignores them.

    Raises :class:`NotEnoughShares` when no ``k`` shares make a valid signature; never
    returns a wrong one.
    """
    xm = mpz(x)
    # One gcd for x and all shares together; per-value gcds only if that finds a non-unit.
    product = xm
    for share in shares:
        if isinstance(share.value, int) and 0 < share.value < params.modulus:
            product = product * share.value % params.N
    units_checked = 0 < x < params.modulus and gmpy2.gcd(product, params.N) == 1
    if not units_checked:
        check_representative(params, x)
    k = params.k
    bad: dict[int, str] = {}
    candidates: dict[int, SignatureShare] = {}
    for share in shares:
        try:
            check_share(params, share, unit=not units_checked)
        except IttcError as exc:
            if isinstance(share.index, int) and 1 <= share.index <= params.n:
                bad[share.index] = getattr(exc, "reason", str(exc))
            continue
        prior = candidates.get(share.index)
        if prior is not None and prior.value != share.value:
            bad[share.index] = "sent two different shares for one message"
        elif share.index not in bad:
            candidates[share.index] = share
    for index in bad:
        candidates.pop(index, None)

    if use_proofs is None:
        use_proofs = params.proofs_sound and all(s.proof is not None for s in candidates.values())
    if use_proofs:
        for index, share in list(candidates.items()):
            try:
                verify_share(params, x, share)
            except IttcError as exc:
                bad[index] = getattr(exc, "reason", str(exc))
                del candidates[index]

    if len(candidates) < k:
        raise NotEnoughShares(k, len(candidates), bad)

    oracle = _SubsetOracle(params, xm, candidates)
    first = tuple(sorted(candidates)[:k])
    y = oracle(first)
    if y is not None and (use_proofs or len(candidates) == k):
        return CombineResult(
            _to_bytes(params, y), first, bad, "proofs" if use_proofs else "optimistic"
        )

    indices = sorted(candidates)
    try:
        largest = _largest_consistent_sets(oracle, indices, k)
    except _TooManySubsets:
        largest = _greedy_consistent_set(oracle, indices, k)
    if not largest:
        # Which of the candidates lied is unknown: ``bad`` names only proven culprits.
        raise NotEnoughShares(k, 0, bad)
    union = set().union(*largest)
    for index in indices:
        if index not in union:
            bad[index] = "share does not combine with the others to a valid signature"
    common = set(largest[0]).intersection(*largest[1:])
    ambiguous = tuple(sorted(union - common))
    good = largest[0][:k]
    y = oracle(good)
    assert y is not None
    method: Literal["optimistic", "proofs", "subsets"] = (
        "optimistic" if good == first else "subsets"
    )
    return CombineResult(_to_bytes(params, y), good, bad, method, ambiguous)


def _greedy_consistent_set(
    oracle: _SubsetOracle, indices: list[int], k: int
) -> list[tuple[int, ...]]:
    """For very many shares: grow one valid subset by every share that fits with it."""
    try:
        for subset in itertools.combinations(indices, k):
            if oracle(subset) is not None:
                members = list(subset)
                for j in indices:
                    if j not in members and oracle(tuple(sorted(members[1:k] + [j]))) is not None:
                        members.append(j)
                return [tuple(sorted(members))]
    except _TooManySubsets:
        pass
    return []
