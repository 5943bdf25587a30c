"""Combining ``k`` signature shares into a standard RSA signature (Shoup, section 2).

``w = Π x_j^{2λ_j}`` with the integer Lagrange coefficients ``λ_j = Δ·Π (0-j')/(j-j')``;
``w^e = x^{e'}`` for ``e' = 4Δ²`` (or ``4Δ³`` for integer sharing); with
``a·e' + b·e = 1``, ``y = w^a·x^b`` satisfies ``y^e = x``. That final equation is checked
before any signature leaves this module.

:func:`combine` takes exactly ``k`` shares. :func:`combine_robust` takes any number,
some possibly wrong, returns a valid signature whenever ``k`` of them make one, and names
the wrong shares: with proofs when the key has sound ones, otherwise by finding one
``k``-subset that combines and checking every other share against it alone.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import gmpy2

from ittc.errors import (
    CombineError,
    IttcError,
    NotEnoughShares,
    ParameterError,
    SearchStopped,
)
from ittc.scheme.ct import mpz, powmod_public
from ittc.scheme.keyshare import check_representative
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare, check_share, verify_share

__all__ = [
    "CombineError",
    "CombineResult",
    "combine",
    "combine_robust",
    "interpolation_coefficients",
    "lagrange_coefficients",
]

Method = Literal["optimistic", "proofs", "subsets"]

_WRONG = "share does not combine with the others to a valid signature"


@dataclass(frozen=True)
class CombineResult:
    signature: bytes
    #: The node indices whose shares made the signature.
    used: tuple[int, ...]
    #: Node index -> why its share was excluded. Never an honest node (see combine_robust).
    bad: dict[int, str] = field(default_factory=dict)
    #: ``"optimistic"``: the first ``k`` shares made the signature and every other share
    #: was checked against them alone; ``"proofs"``: shares were proven (sound proofs);
    #: ``"subsets"``: other ``k``-subsets were combined, to find one that signs or to
    #: rule out colluding liars before naming anyone.
    method: Method = "optimistic"
    #: Nodes that may have lied but that the shares cannot convict: colluding liars whose
    #: errors cancel, the honest nodes they make look wrong, and (if the search was
    #: stopped) every suspect not yet settled.
    ambiguous: tuple[int, ...] = ()
    #: How many ``k``-subsets were combined.
    subsets: int = 1
    #: False when a deadline or ``should_stop`` cut the search for colluding liars
    #: short: the signature is valid, but suspects are in ``ambiguous``, not ``bad``.
    complete: bool = True


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


@lru_cache(maxsize=4096)
def interpolation_coefficients(indices: tuple[int, ...], at: int) -> tuple[int, tuple[int, ...]]:
    """``(D, c)``: the smallest ``D > 0`` and integers ``c_i`` with
    ``D·f(at) = Σ c_i·f(i)`` for every polynomial ``f`` of degree below ``len(indices)``.

    ``c_i = D·Π_{i' ≠ i} (at - i') / (i - i')``; ``D`` divides ``Δ`` when every index is
    in ``1..n`` (Shoup, Lemma 1), and is often 1 (always, for consecutive indices).
    """
    fractions = []
    for i in indices:
        num, den = 1, 1
        for ip in indices:
            if ip != i:
                num *= at - ip
                den *= i - ip
        fractions.append(Fraction(num, den))
    scale = math.lcm(*(f.denominator for f in fractions))
    return scale, tuple(int(f * scale) for f in fractions)


@lru_cache(maxsize=64)
def _bezout(e_prime: int, e: int) -> tuple[int, int]:
    g, a, b = gmpy2.gcdext(e_prime, e)
    if g != 1:
        raise ParameterError("gcd(e', e) != 1: e must be a prime larger than n")
    return int(a), int(b)


#: Small powers of a share are made by multiplying, larger ones by exponentiation.
_MULTIPLY_UP_TO = 4


@lru_cache(maxsize=4096)
def _reduced_lagrange(indices: tuple[int, ...], delta: int) -> tuple[int, tuple[int, ...]]:
    """``(g, c)`` with ``λ_j = g·c_j`` for the Lagrange coefficients of ``indices``:
    ``g`` their greatest common divisor (a large part of ``Δ``), the ``c_j`` small."""
    lambdas = lagrange_coefficients(indices, delta)
    g = math.gcd(*lambdas)
    return g, tuple(lam // g for lam in lambdas)


def _w_to_the_a(params: PublicParams, shares: Sequence[SignatureShare]) -> mpz:
    """``w^a`` for ``w = Π x_j^{2λ_j}`` (the part of ``y`` that depends on the shares).

    Computed as ``(Π x_j^{c_j})^{2·g·a}`` with ``λ_j = g·c_j`` (the same number): the
    small ``c_j`` cost a multiplication or two each, and one exponentiation by
    ``2·g·|a|`` replaces ``k`` exponentiations by ``2·λ_j`` and one by ``|a|``
    (2048-bit, k=3 of 5: 90 µs instead of 146 µs, measured in thread CPU time).
    """
    N = params.N
    g, cs = _reduced_lagrange(tuple(s.index for s in shares), params.delta)
    a, _ = _bezout(params.combine_exponent, params.e)
    # Positive and negative powers apart, so that one modular inverse serves them all.
    num, den = mpz(1), mpz(1)
    for share, c in zip(shares, cs, strict=True):
        power = value = mpz(share.value)
        if abs(c) > _MULTIPLY_UP_TO:
            power = powmod_public(value, abs(c), N)
        else:  # faster than an exponentiation's setup (2048-bit: 3.7 µs for c = 3, not 7.6)
            for _ in range(abs(c) - 1):
                power = power * value % N
        if c > 0:
            num = num * power % N
        else:
            den = den * power % N
    top, bottom = (num, den) if a > 0 else (den, num)
    return powmod_public(top * gmpy2.invert(bottom, N) % N, 2 * g * abs(a), N)


def _combine_unchecked(params: PublicParams, x: mpz, shares: Sequence[SignatureShare]) -> mpz:
    _, b = _bezout(params.combine_exponent, params.e)
    return _w_to_the_a(params, shares) * powmod_public(x, b, params.N) % params.N


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


# -- the robust combiner --------------------------------------------------------------------


class _Stopped(Exception):
    pass


class _Search:
    """The shares of one message, and the two questions asked of them.

    ``signs(subset)``: do these ``k`` shares combine to a valid signature? (memoized)
    ``on_polynomial(ref, j)``: is share ``j`` the value that the ``k`` shares ``ref``
    interpolate at ``j``? Both are exact checks on the shares given; nothing here trusts
    a share.
    """

    def __init__(
        self,
        params: PublicParams,
        xm: mpz,
        shares: dict[int, SignatureShare],
        stop: Callable[[], bool],
    ) -> None:
        self.params, self.xm, self.stop = params, xm, stop
        self.shares = shares
        self.values = {i: mpz(s.value) for i, s in shares.items()}
        self.x_b = powmod_public(xm, _bezout(params.combine_exponent, params.e)[1], params.N)
        self.valid: dict[tuple[int, ...], mpz] = {}
        self.invalid: set[tuple[int, ...]] = set()
        self._last_miss: tuple[tuple[int, ...], mpz] = ((), mpz(0))

    @property
    def tried(self) -> int:
        return len(self.valid) + len(self.invalid)

    def signs(self, subset: tuple[int, ...]) -> mpz | None:
        if subset in self.valid:
            return self.valid[subset]
        if subset in self.invalid:
            return None
        if self.valid or self.invalid:  # the first subset is always tried
            if self.stop():
                raise _Stopped
        y = self._combine(subset)
        y_e = powmod_public(y, self.params.e, self.params.N)
        if y_e == self.xm:
            self.valid[subset] = y
            return y
        self.invalid.add(subset)
        self._last_miss = (subset, y_e)
        return None

    def power_of(self, subset: tuple[int, ...]) -> mpz:
        """``y^e`` for the ``y`` that ``subset`` combines to (``x`` if it signs)."""
        if self._last_miss[0] == subset:
            return self._last_miss[1]
        return powmod_public(self._combine(subset), self.params.e, self.params.N)

    def _combine(self, subset: tuple[int, ...]) -> mpz:
        w_a = _w_to_the_a(self.params, [self.shares[i] for i in subset])
        return w_a * self.x_b % self.params.N

    def on_polynomial(self, ref: tuple[int, ...], j: int) -> bool:
        left, right, _ = self.relation(ref, j)
        return bool(left == right)

    def deviation(self, ref: tuple[int, ...], j: int) -> tuple[mpz, int]:
        """``(u^{2D}, D)`` for share ``j = (its value on ref's polynomial)·u``."""
        left, right, scale = self.relation(ref, j)
        return left * gmpy2.invert(right, self.params.N) % self.params.N, scale

    def relation(self, ref: tuple[int, ...], j: int) -> tuple[mpz, mpz, int]:
        # x_j^{2D} == Π x_i^{2c_i}, with the negative powers moved to the left. Squared
        # like the combination: a share off by a sign changes no signature and is not
        # wrong here either (Shoup's proofs cannot see the sign).
        scale, coefficients = interpolation_coefficients(ref, j)
        N, values = self.params.N, self.values
        left = powmod_public(values[j], 2 * scale, N)
        right = mpz(1)
        for i, c in zip(ref, coefficients, strict=True):
            if c > 0:
                right = right * powmod_public(values[i], 2 * c, N) % N
            elif c < 0:
                left = left * powmod_public(values[i], -2 * c, N) % N
        return left, right, scale

    def consistent_with(self, ref: tuple[int, ...]) -> frozenset[int]:
        """Every share on the polynomial through the ``k`` shares ``ref``."""
        members = set(ref)
        for j in self.shares:
            if j not in members:
                if self.stop():
                    raise _Stopped
                if self.on_polynomial(ref, j):
                    members.add(j)
        return frozenset(members)


def _colex(ranked: Sequence[int], k: int) -> Iterator[tuple[int, ...]]:
    """Every ``k``-subset of ``ranked`` once, those made of the best-ranked shares first.

    Subsets come in order of the rank of their worst member (colex order): level ``r``
    holds the ``C(k+r-1, r)`` subsets that skip ``r`` of the first ``k+r-1`` shares. If
    the first ``k+f`` shares hold ``f`` wrong ones, a subset of right ones comes within
    the first ``C(k+f, f)``: ``k+1`` subsets for one liar.
    """
    for r in range(len(ranked) - k + 1):
        head, last = ranked[: k + r - 1], ranked[k + r - 1]
        for skip in itertools.combinations(range(len(head) - 1, -1, -1), r):
            skipped = set(skip)
            yield tuple(sorted([s for p, s in enumerate(head) if p not in skipped] + [last]))


def _other_signers(
    search: _Search,
    plan: Literal["none", "pair", "all"],
    signer: tuple[int, ...],
    good: frozenset[int],
    suspects: list[int],
    k: int,
) -> Iterator[tuple[int, ...]]:
    """``k``-subsets that could sign for a second consistent set beside ``good``.

    Two consistent sets (each on one polynomial of degree ``k-1`` with the right value
    at 0) share at most ``k-2`` shares, so any other one holds ``k``-subsets with at
    least two suspects and at most ``k-2`` members of ``good``: all of them, or (two
    suspects) those a meet-in-the-middle search finds, or none when the scheme's bound on
    wrong shares rules a second set out and looking would cost more than ``m²``
    combinations (see :func:`_plan`).
    """
    if plan == "pair":
        yield from _pair_signers(search, signer, good, suspects[0], suspects[1], k)
    elif plan == "all":
        members = sorted(good)
        for b in range(2, min(k, len(suspects)) + 1):
            for picked in itertools.combinations(suspects, b):
                for rest in itertools.combinations(members, k - b):
                    yield tuple(sorted(picked + rest))


#: The two-suspect search holds ``2^(g/2)`` group elements for ``g`` consistent shares.
_PAIR_MAX_GOOD = 32


def _plan(suspects: int, good: int, k: int) -> Literal["none", "pair", "all"]:
    """How to look for a second consistent set (costs in small exponentiations).

    Every ``k``-subset with two or more suspects: ``k`` each. Two suspects, meeting in
    the middle: about ``2^(g/2+1)``. None: a second set would hold at most
    ``suspects + k - 2`` shares, leaving ``k`` or more outside it, which cannot be while
    at most ``k-1`` shares are wrong (the scheme's bound on compromised nodes; the set
    found needs only ``suspects <= k-1``); then looking is skipped unless it costs at
    most ``m²`` combinations, so that colluders beyond the bound (who hold the key) are
    still caught where that is cheap.
    """
    if suspects < 2:
        return "none"
    m = suspects + good
    every = k * sum(
        math.comb(suspects, b) * math.comb(good, k - b) for b in range(2, min(k, suspects) + 1)
    )
    pair = 1 << ((good + 1) // 2 + 1) if suspects == 2 and good <= _PAIR_MAX_GOOD else every
    plan: Literal["pair", "all"] = "pair" if pair < every else "all"
    ruled_out = suspects <= k - 1 and suspects + k - 2 < m - (k - 1)
    if ruled_out and min(pair, every) > k * m * m:
        return "none"
    return plan


def _pair_signers(
    search: _Search, signer: tuple[int, ...], good: frozenset[int], t1: int, t2: int, k: int
) -> Iterator[tuple[int, ...]]:
    """The subsets ``{t1, t2} ∪ Z`` (``Z`` in ``good``, ``|Z| = k-2``) that may sign.

    Let ``u1, u2`` be the errors of ``t1, t2`` against the polynomial of ``good``. The
    subset signs iff ``u1^{λ1}·u2^{λ2} = 1`` with its Lagrange coefficients at 0, i.e.
    (clearing common factors) iff ``u1^{t2·A} = u2^{t1·B}``, ``A = Π_Z (g - t2)``,
    ``B = Π_Z (g - t1)``. Split ``good`` into halves ``G1, G2`` and raise both sides to
    ``Π_{G1∖Z}(g - t1)·Π_{G2∖Z}(g - t2)``: the left side then depends on ``Z ∩ G1`` only
    and the right on ``Z ∩ G2`` only, so a table of one half's values meets the other's.
    Every match is combined before it counts.
    """
    N = search.params.N
    d1, s1 = search.deviation(signer, t1)
    d2, s2 = search.deviation(signer, t2)
    members = sorted(good)
    half = members[: len(members) // 2], members[len(members) // 2 :]
    m1 = math.prod(g - t1 for g in half[0])
    m2 = math.prod(g - t2 for g in half[1])
    # Both deviations to u^{2·s1·s2}, then to the fixed parts of each side's exponent.
    left_base = _signed_power(d1, s2 * t2 * m2, N)
    right_base = _signed_power(d2, s1 * t1 * m1, N)
    table: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    for z1, value in _subset_powers(search, left_base, half[0], t2, t1, k - 2):
        table.setdefault((value, len(z1)), []).append(z1)
    for z2, value in _subset_powers(search, right_base, half[1], t1, t2, k - 2):
        for z1 in table.get((value, k - 2 - len(z2)), ()):
            yield tuple(sorted((t1, t2) + z1 + z2))


def _signed_power(base: mpz, exponent: int, N: mpz) -> mpz:
    value = powmod_public(base, abs(exponent), N)
    return gmpy2.invert(value, N) if exponent < 0 else value


def _subset_powers(
    search: _Search, base: mpz, items: list[int], t_in: int, t_out: int, most: int
) -> Iterator[tuple[tuple[int, ...], int]]:
    """``(Z, base^{Π_{g∈Z}(g - t_in)·Π_{g∉Z}(g - t_out)})`` for every ``Z ⊆ items`` of at
    most ``most`` members, one small exponentiation per step of a depth-first walk."""
    N = search.params.N

    def walk(
        pos: int, value: mpz, negative: bool, chosen: tuple[int, ...]
    ) -> Iterator[tuple[tuple[int, ...], int]]:
        if pos == len(items):
            if search.stop():
                raise _Stopped
            yield chosen, int(gmpy2.invert(value, N) if negative else value)
            return
        g = items[pos]
        if len(chosen) < most:
            f = g - t_in
            yield from walk(
                pos + 1, powmod_public(value, abs(f), N), negative ^ (f < 0), chosen + (g,)
            )
        f = g - t_out
        yield from walk(pos + 1, powmod_public(value, abs(f), N), negative ^ (f < 0), chosen)

    yield from walk(0, base, False, ())


def combine_robust(
    params: PublicParams,
    x: int,
    shares: Sequence[SignatureShare],
    *,
    use_proofs: bool | None = None,
    deadline: float | None = None,
    blame_deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    should_stop: Callable[[], bool] | None = None,
) -> CombineResult:
    """A valid signature from any number of shares, some of which may be wrong.

    Returns a valid signature whenever ``k`` of the shares make one, and never a wrong
    one; raises :class:`NotEnoughShares` when none do, and :class:`SearchStopped` (a
    subclass) when ``deadline`` (compared with ``clock()``, monotonic seconds by default)
    passed or ``should_stop()`` said so before any ``k`` shares were found to sign (the
    first ``k`` are always tried). ``blame_deadline`` (default: ``deadline``) bounds the
    work after a signature is in hand; cut short, it leaves the signature valid,
    ``complete=False`` and every unsettled suspect in ``ambiguous``.

    ``use_proofs``: ``None`` verifies proofs when every share carries one and the key's
    proofs are sound, and otherwise uses any proofs only as a hint of which shares to try
    first; ``True`` demands sound proofs; ``False`` ignores proofs.

    **Blame.** ``result.bad`` names shares that fail range checks, conflict with another
    share from the same node, fail a sound proof, or are off the polynomial through ``k``
    shares that sign while no other consistent set (shares every ``k`` of which sign)
    holds them. Colluding liars can make such a second set, with up to ``k-2`` honest
    nodes; the data cannot tell which set is honest, and every node in some consistent
    set but not in all is in ``result.ambiguous``, not ``bad``. ``bad`` never names an
    honest node while at least ``k`` of the shares are honest and at most ``k-1`` wrong,
    provided no liar can make a unit of small order other than -1 (that takes the
    factorization of ``N``). A share off by its sign is not wrong: it changes no
    signature, and Shoup's proofs accept it too.

    **Cost**, for ``m`` shares, in combinations of ``k`` (each ``k`` small
    exponentiations; a check of one share against ``k`` others costs the same):

    * a subset that signs: the first ``k``. If they fail and up to four of them lie
      (and as many ranked after them do not), the liars are found by algebra
      (:func:`_liars_among`: ``C(k, f)·f`` small exponentiations for ``f`` liars) and a
      second subset signs. Otherwise subsets of the best-ranked shares first (shares
      whose proofs verify, once the first ``k`` failed): ``f`` liars among the first
      ``k+f`` ranked cost at most ``C(k+f, f)`` subsets; ``m-k`` liars and no useful
      hint, up to ``C(m, k)``.
    * naming: ``m-k`` checks, each share against that subset.
    * ruling out a second consistent set, if there are ``s ≥ 2`` suspects: skipped when
      it would leave ``k`` or more shares outside it (impossible for the honest set
      within the threat model) unless looking costs at most ``m²`` combinations; for two
      suspects, a meet-in-the-middle search of ``2^(g/2+1)`` small exponentiations over
      the ``g ≤ 32`` consistent shares; otherwise every ``k``-subset with two or more
      suspects, ``Σ_{b≥2} C(s, b)·C(m-s, k-b)``. The largest consistent set found is
      the reference, so colluders who make the first subset sign gain nothing.

    So a fixed number of independent liars costs time polynomial in ``n`` unless three
    or more (two at odd ``n > 34``) must be ruled out as colluders at ``k ≈ n/2``; ``n-k``
    liars (independent or colluding) without proofs cost a search over subsets, up to
    about ``C(n, k)`` (12,870 at n=16, k=8; 184,756 at n=20, k=10). With sound proofs:
    ``m`` proof checks, exact blame, no search.
    """
    stopped = _stopper(deadline, clock, should_stop)
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

    hints = use_proofs is not False
    if use_proofs is None:
        use_proofs = (
            params.proofs_sound
            and bool(candidates)
            and all(s.proof is not None for s in candidates.values())
        )
    if use_proofs:
        for index, share in list(candidates.items()):
            try:
                verify_share(params, x, share)
            except IttcError as exc:
                bad[index] = getattr(exc, "reason", str(exc))
                del candidates[index]
    if len(candidates) < k:
        raise NotEnoughShares(k, len(candidates), bad)

    search = _Search(params, xm, candidates, stopped)
    ranked = sorted(candidates)
    first = tuple(ranked[:k])
    try:
        y = search.signs(first)
        if y is not None and (use_proofs or len(candidates) == k):
            return CombineResult(
                _to_bytes(params, y), first, bad, "proofs" if use_proofs else "optimistic"
            )
        if (
            y is None
            and hints
            and not use_proofs
            and any(s.proof is not None for s in candidates.values())
        ):
            ranked = _ranked_by_proofs(params, x, candidates, stopped)
        signer = first if y is not None else _find_signer(search, ranked, k)
    except _Stopped:
        raise SearchStopped(k, search.tried, bad) from None
    if signer is None:
        # Which of the candidates lied is unknown: ``bad`` names only proven culprits.
        raise NotEnoughShares(k, 0, bad)

    y = search.valid[signer]
    search.stop = _stopper(
        blame_deadline if blame_deadline is not None else deadline, clock, should_stop
    )
    first_only = search.tried == 1
    sets, complete, searched = _consistent_sets(search, signer, k)
    union = frozenset().union(*sets)
    common = frozenset(candidates).intersection(*sets)
    ambiguous = set(union - common)
    if complete:
        for index in sorted(set(candidates) - union):
            bad[index] = _WRONG
    else:
        ambiguous |= set(candidates) - common
    method: Method = "optimistic" if first_only and not searched else "subsets"
    return CombineResult(
        _to_bytes(params, y), signer, bad, method, tuple(sorted(ambiguous)), search.tried, complete
    )


def _consistent_sets(
    search: _Search, signer: tuple[int, ...], k: int
) -> tuple[list[frozenset[int]], bool, bool]:
    """The consistent sets (each the shares on one polynomial through ``k`` shares that
    sign), whether the list is complete, and whether other subsets had to be searched.

    Starts from the set through ``signer`` and looks for others beside the largest one
    known: a larger one found becomes the reference (fewer suspects, a cheaper search),
    so colluders who make the first subset tried sign cost no more than those who don't.
    """
    try:
        reference = search.consistent_with(signer)
    except _Stopped:
        return [frozenset(signer)], False, False
    sets = [reference]
    searched = False
    try:
        while True:
            suspects = sorted(set(search.shares) - reference)
            plan = _plan(len(suspects), len(reference), k)
            searched = searched or plan != "none"
            for subset in _other_signers(search, plan, signer, reference, suspects, k):
                if any(known.issuperset(subset) for known in sets):
                    continue
                if search.signs(subset) is not None:
                    found = search.consistent_with(subset)
                    sets.append(found)
                    if len(found) > len(reference):
                        reference, signer = found, subset
                        break
            else:
                return sets, True, searched
    except _Stopped:
        return sets, False, True


def _stopper(
    deadline: float | None, clock: Callable[[], float], should_stop: Callable[[], bool] | None
) -> Callable[[], bool]:
    if deadline is None and should_stop is None:
        return _never
    return lambda: (
        (deadline is not None and clock() >= deadline)
        or (should_stop is not None and should_stop())
    )


def _never() -> bool:
    return False


def _ranked_by_proofs(
    params: PublicParams, x: int, candidates: dict[int, SignatureShare], stopped: Callable[[], bool]
) -> list[int]:
    """Indices with verifying proofs first, then without proofs, then failing ones.

    A hint only: for keys whose proofs are not sound a liar can forge one, and nothing
    is trusted or blamed on the strength of a proof here.
    """

    def rank(index: int) -> int:
        share = candidates[index]
        if share.proof is None:
            return 1
        if stopped():
            raise _Stopped
        try:
            verify_share(params, x, share)
        except IttcError:
            return 2
        return 0

    return sorted(candidates, key=lambda i: (rank(i), i))


def _find_signer(search: _Search, ranked: list[int], k: int) -> tuple[int, ...] | None:
    """A ``k``-subset that signs: the ``k`` best-ranked shares; else, if up to four of
    them lie (and as many after them do not), the subset without the liars that
    :func:`_liars_among` finds; else every subset, the best-ranked first
    (:func:`_colex`)."""
    top = tuple(sorted(ranked[:k]))
    if search.signs(top) is not None:
        return top
    for f in range(1, min(_LOCATED, k, len(ranked) - k) + 1):
        probes = ranked[k : k + f]
        for liars in _liars_among(search, top, probes):
            subset = tuple(sorted(set(top).difference(liars).union(probes)))
            if search.signs(subset) is not None:
                return subset
    for subset in _colex(ranked, k):
        if search.signs(subset) is not None:
            return subset
    return None


#: Up to how many liars among the first ``k`` shares :func:`_liars_among` looks for.
_LOCATED = 4


def _liars_among(
    search: _Search, failed: tuple[int, ...], probes: Sequence[int]
) -> Iterator[tuple[int, ...]]:
    """The sets ``Q`` of ``f = len(probes)`` shares of ``failed`` that hold all its liars,
    if the ``probes`` are right: found by algebra, not by combining subsets.

    Let ``x_l = (right value)·u_l``, ``P(z) = Π_{i∈failed}(z - i)``,
    ``π_l = Π_{i≠l}(l - i)`` and, in the exponent, ``R(z) = Σ_l e_l/((z - l)·π_l)`` over
    the liars (``u_l = g^{e_l}``): a rational function with poles at the liars. What
    ``failed`` combined to shows ``R(0)`` (``y^e/x = g^{2aeΔ·P(0)·R(0)}``, ``a`` from
    ``a·e' + b·e = 1``), and each right probe ``p`` shows ``R(p)`` (its distance from the
    polynomial of ``failed`` is ``g^{-2D·P(p)·R(p)}``). If ``Q`` holds every liar, then
    ``σ_Q(z)·R(z)`` with ``σ_Q(z) = Π_{l∈Q}(z - l)`` is a polynomial of degree below
    ``f``, so its ``f``-th divided difference over the ``f+1`` points ``0, probes``
    vanishes: ``Π_t T_t^{σ_t} = 1`` for group elements ``T_t`` computed once and the
    small integer coefficients ``σ_t`` of ``σ_Q``. A ``Q`` that misses a liar fails that
    (unless liars chose their errors to collude). So each ``Q`` costs ``f`` small
    exponentiations: ``C(k, f)·f`` for ``f`` liars among ``k``, against up to
    ``C(k+f, f)`` combinations of ``k`` shares by trying subsets. A ``Q`` is only a
    candidate: the subset without it is combined before it counts.
    """
    params, N = search.params, search.params.N
    a, _ = _bezout(params.combine_exponent, params.e)
    points = [0, *probes]
    # Each point's observed group element and the integer that scales R(z) into it.
    observed = [search.power_of(failed) * gmpy2.invert(search.xm, N) % N]
    scales = [a * params.e * params.delta * math.prod(-i for i in failed)]
    for p in probes:
        left, right, scale = search.relation(failed, p)
        observed.append(left * gmpy2.invert(right, N) % N)
        scales.append(-scale * math.prod(p - i for i in failed))
    # Divided-difference weights over the points, each divided by its point's scale.
    weights = [
        Fraction(1, scales[j] * math.prod(z - w for w in points if w != z))
        for j, z in enumerate(points)
    ]
    common = math.lcm(*(w.denominator for w in weights))
    exponents = [int(w * common) for w in weights]
    f = len(probes)
    powers = [
        math.prod(  # T_t = Π_z observed_z^{weight_z·z^t}
            (
                _signed_power(value, exponent * z**t, N)
                for value, exponent, z in zip(observed, exponents, points, strict=True)
            ),
            start=mpz(1),
        )
        % N
        for t in range(f + 1)
    ]
    inverses = [gmpy2.invert(t, N) for t in powers]
    for liars in itertools.combinations(failed[::-1], f):
        if search.stop():
            raise _Stopped
        product = powers[f]  # σ is monic
        for t, c in enumerate(_monic_coefficients(liars)[:-1]):
            if c:
                product = (
                    product * powmod_public(powers[t] if c > 0 else inverses[t], abs(c), N) % N
                )
        if product == 1:
            yield liars


def _monic_coefficients(roots: Sequence[int]) -> list[int]:
    """Coefficients of ``Π (z - r)``, lowest degree first."""
    out = [1]
    for r in roots:
        out = [
            (out[t - 1] if t else 0) - r * (out[t] if t < len(out) else 0)
            for t in range(len(out) + 1)
        ]
    return out
