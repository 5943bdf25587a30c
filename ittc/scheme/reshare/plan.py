"""What one reshare run is: the old epoch, the ``k`` holders who deal, the new membership,
and every public bound that follows from them (docs/lifecycle.md, "Sizes").

Notation. Old epoch: ``n`` nodes, threshold ``k``, ``Δ = n!``, shares ``s_i``. Holders
``S`` (``|S| = k``) with Lagrange coefficients ``λ_i`` at 0, so that
``Σ_{i∈S} λ_i s_i = D·A``, where ``D = Δ²`` for an integer sharing
(``F(0) = Δ·A``) and ``D = 1`` for a generated key's first epoch (shares mod ``m``;
``A`` is then defined by that sum and ``A ≡ Δ·d`` mod ``m``). New epoch: ``n'`` nodes,
threshold ``k'``, ``Δ' = n'!``, an integer polynomial ``F'`` with ``F'(0) = Δ'·A``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

from ittc.errors import ParameterError
from ittc.scheme.combine import lagrange_coefficients
from ittc.scheme.dealer import HIDING_BITS
from ittc.scheme.params import MAX_EPOCH, MAX_NODES, PublicParams, encode_ints

__all__ = ["RUN_ID_BYTES", "Bounds", "ResharePlan"]

#: Length of a run id: fresh random bytes per run, so a retry is a different run.
RUN_ID_BYTES = 32
_DOMAIN = b"ittc/v2/reshare/plan\x00"


@dataclass(frozen=True)
class Bounds:
    """Public sizes of one run. Every value from a participant is checked against these.

    Bit counts are exclusive bounds (``0 <= x < 2^bits``); ``*_bound`` values are
    exclusive bounds on magnitudes; ``total_low < T' < total_high``.
    """

    #: ``D``: ``Σ_{i∈S} λ_i s_i = D·A``.
    divisor: int
    #: ``|A| < 2^secret_bits`` (the new epoch's ``secret_bits``).
    secret_bits: int
    #: The new epoch's multiplier ``c``: ``A ≡ c·d`` modulo the order of the squares.
    secret_multiplier: int
    #: Each holder's additive share ``u_i`` of ``A``: uniform below ``2^u_bits``.
    u_bits: int
    #: The dealing polynomials' coefficients: uniform below ``2^coefficient_bits``.
    coefficient_bits: int
    #: Every sub-share ``y_{i,j}`` lies in ``[1, sub_share_bound)``.
    sub_share_bound: int
    #: Pairwise masks lie in ``[1, 2^mask_bits)``.
    mask_bits: int
    #: ``|c_i| < contribution_bound`` for every masked value.
    contribution_bound: int
    total_low: int
    total_high: int
    #: ``Z``: the public polynomial of the new sharing is ``Δ'T' + Z·X``.
    linear_term: int
    #: Every new share ``s'_j`` is below ``2^share_bits`` (the new epoch's ``share_bits``).
    share_bits: int


@dataclass(frozen=True)
class ResharePlan:
    """A run: ``holders`` of epoch ``old`` deal the same key to ``n`` new members, ``k`` of
    whom will sign. ``run_id`` is fresh per run and binds every value of the run."""

    old: PublicParams
    holders: tuple[int, ...]
    n: int
    k: int
    run_id: bytes

    def __post_init__(self) -> None:
        old = self.old
        if not isinstance(old, PublicParams):
            raise ParameterError("a reshare plan starts from the old epoch's PublicParams")
        holders = self.holders
        if (
            not isinstance(holders, tuple)
            or len(holders) != old.k
            or not all(isinstance(i, int) and 1 <= i <= old.n for i in holders)
            or list(holders) != sorted(set(holders))
        ):
            raise ParameterError(
                f"a reshare needs exactly k={old.k} distinct holders of "
                f"1..{old.n}, in increasing order"
            )
        if not (
            isinstance(self.n, int)
            and isinstance(self.k, int)
            and 2 <= self.k <= self.n <= MAX_NODES
        ):
            raise ParameterError(f"the new membership needs 2 <= k' <= n' <= {MAX_NODES}")
        if self.n >= old.e:
            raise ParameterError("the public exponent must be larger than the new n")
        if not isinstance(self.run_id, bytes) or len(self.run_id) != RUN_ID_BYTES:
            raise ParameterError(f"the run id is {RUN_ID_BYTES} bytes")
        if old.epoch >= MAX_EPOCH:
            raise ParameterError("no epoch numbers left")

    @property
    def new_epoch(self) -> int:
        return self.old.epoch + 1

    @cached_property
    def new_delta(self) -> int:
        """``Δ' = n'!``."""
        return math.factorial(self.n)

    @cached_property
    def lambdas(self) -> dict[int, int]:
        """``λ_i = Δ·Π_{i'∈S, i'≠i} i'/(i'-i)``: integers, ``Σ λ_i F(i) = Δ·F(0)``."""
        return dict(
            zip(self.holders, lagrange_coefficients(self.holders, self.old.delta), strict=True)
        )

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the plan: the old epoch, the holders, the new shape and the run id."""
        h = hashlib.sha256(_DOMAIN)
        h.update(self.old.epoch_id_bytes)
        h.update(encode_ints(len(self.holders), *self.holders, self.n, self.k))
        h.update(self.run_id)
        return h.digest()

    @cached_property
    def bounds(self) -> Bounds:
        old, sigma = self.old, HIDING_BITS
        lambdas = self.lambdas.values()
        if old.sharing == "shoup":
            # Shares live in [0, m): their combination A = Σ λ_i s_i ≡ Δ·d (mod m) is an
            # integer as large as Σ|λ_i|·m. It becomes the key's A from now on.
            divisor = 1
            secret_bits = old.share_bits + sum(abs(x) for x in lambdas).bit_length()
            multiplier = old.delta
        else:
            divisor = old.delta**2
            secret_bits = old.secret_bits
            multiplier = old.secret_multiplier
        # T' = A - Σ u_i hides A from anyone who knows all but one u_i: distance
        # |A - A*| / 2^u_bits < 2^-σ.
        u_bits = secret_bits + sigma + 1
        # Given T', u_i is fixed up to the change A* - A (< 2^(secret_bits+1)); the
        # coefficients hide that change from any k'-1 members: the shift polynomial
        # Δ'(A* - A)·Π_{j∈C}(1 - X/j) moves them by at most (k'-1)·Δ'·|A* - A| in all,
        # a distance below 2^-σ against coefficients of this many bits.
        coefficient_bits = u_bits + ((self.k - 1) * self.new_delta).bit_length()
        powers = sum(self.n**t for t in range(1, self.k))
        sub_share_bound = (self.new_delta << u_bits) + (powers << coefficient_bits)
        # |a_i - D·u_i| < 2^z_bits for a_i = λ_i s_i; the masks hide it with σ bits to
        # spare after the chain of k-1 masks between two honest holders.
        a_bits = old.share_bits + max(abs(x) for x in lambdas).bit_length()
        z_bits = max(a_bits, divisor.bit_length() + u_bits) + 1
        mask_bits = z_bits + sigma + 2 * self.old.k.bit_length()
        contribution_bound = (1 << z_bits) + (old.k - 1) * (1 << mask_bits)
        # T' = A - Σ u_i with |A| < 2^secret_bits and 0 < u_i < 2^u_bits.
        total_high = 1 << secret_bits
        total_low = -(1 << secret_bits) - old.k * (1 << u_bits)
        # The public part of F' is Δ'T' + Z·X: Z·j outweighs the most negative Δ'T', so
        # s'_j = Δ'T' + Z·j + Σ_i y_{i,j} > 0 whatever the holders send within range.
        linear_term = -self.new_delta * total_low
        # ...and s'_j < Δ'·2^secret_bits + Z·n' + k·Y.
        share_bits = (
            (self.new_delta << secret_bits) + linear_term * self.n + old.k * sub_share_bound
        ).bit_length()
        return Bounds(
            divisor=divisor,
            secret_bits=secret_bits,
            secret_multiplier=multiplier,
            u_bits=u_bits,
            coefficient_bits=coefficient_bits,
            sub_share_bound=sub_share_bound,
            mask_bits=mask_bits,
            contribution_bound=contribution_bound,
            total_low=total_low,
            total_high=total_high,
            linear_term=linear_term,
            share_bits=share_bits,
        )

    def new_params(self, verification_keys: tuple[int, ...]) -> PublicParams:
        """The new epoch's public parameters, given its verification keys."""
        old, b = self.old, self.bounds
        return PublicParams(
            modulus=old.modulus,
            e=old.e,
            v=old.v,
            verification_keys=verification_keys,
            n=self.n,
            k=self.k,
            sharing="integer",
            share_bits=b.share_bits,
            kind=old.kind,
            epoch=self.new_epoch,
            secret_bits=b.secret_bits,
            secret_multiplier=b.secret_multiplier,
            legacy_key_id=old.legacy_key_id,
        )
