"""Shoup's non-interactive proof that a signature share is correct (section 2, step 3).

The prover shows ``log_v(v_i) == log_{x~}(x_i^2)`` with ``x~ = x^{4Δ}``, by Fiat–Shamir
over SHA-256 (``L1 = 256``). The challenge hash is domain-separated by key id and node
index and encodes every group element at the modulus's fixed width, so no two inputs
hash alike.

Only the verifier lives here; the prover needs the secret share and lives in
:mod:`ittc.scheme.keyshare`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from ittc.errors import InvalidProof, InvalidShare
from ittc.scheme.ct import mpz, powmod_public
from ittc.scheme.params import PublicParams

__all__ = [
    "L1",
    "Proof",
    "SignatureShare",
    "challenge",
    "check_share",
    "nonce_bits",
    "verify_share",
]

#: Bits of the Fiat–Shamir challenge (Shoup's ``L1``).
L1 = 256
_DOMAIN = b"ittc/v1/share-proof\x00"


@dataclass(frozen=True)
class Proof:
    """``(c, z)``: challenge and response."""

    c: int
    z: int


@dataclass(frozen=True)
class SignatureShare:
    """``x_i = x^{2Δ s_i} mod N`` from node ``index``, with an optional proof.

    ``index`` is the node the share came from, as the transport authenticated it; the
    network layer never takes it from the share's own claim.
    """

    index: int
    value: int
    proof: Proof | None = None


def nonce_bits(params: PublicParams) -> int:
    """Bit length of the proof nonce ``r``: share size plus ``2·L1`` to hide ``s_i·c``."""
    return params.share_bits + 2 * L1


def _z_bound_bits(params: PublicParams) -> int:
    return nonce_bits(params) + 1


def challenge(
    params: PublicParams, index: int, x_tilde: int, xi_sq: int, v_prime: int, x_prime: int
) -> int:
    """``H'(v, x~, v_i, x_i^2, v', x')`` as an integer of ``L1`` bits."""
    width = params.size_bytes
    h = hashlib.sha256(_DOMAIN)
    h.update(params.key_id_bytes)
    h.update(index.to_bytes(2, "big"))
    for value in (params.v, x_tilde, params.verification_key(index), xi_sq, v_prime, x_prime):
        h.update(int(value).to_bytes(width, "big"))
    return int.from_bytes(h.digest(), "big")


def check_share(params: PublicParams, share: SignatureShare, *, unit: bool = True) -> None:
    """Range checks on a share from outside, before any arithmetic with it.

    ``1 <= index <= n``, ``0 < x_i < N``, ``gcd(x_i, N) = 1`` (``unit=False`` leaves
    that to a caller who checks a whole product at once), and the proof's numbers within
    the sizes an honest prover produces.
    """
    index = share.index
    if not isinstance(index, int) or not 1 <= index <= params.n:
        raise InvalidShare(None, f"node index out of range 1..{params.n}")
    value = share.value
    if not isinstance(value, int) or not 0 < value < params.modulus:
        raise InvalidShare(index, "share value out of range 0 < x_i < N")
    if unit and math.gcd(value, params.modulus) != 1:
        raise InvalidShare(index, "share value is not a unit modulo N")
    if share.proof is not None:
        c, z = share.proof.c, share.proof.z
        if not isinstance(c, int) or not 0 <= c < (1 << L1):
            raise InvalidProof(index, "proof challenge out of range")
        if not isinstance(z, int) or not 0 <= z < (1 << _z_bound_bits(params)):
            raise InvalidProof(index, "proof response out of range")


def verify_share(params: PublicParams, x: int, share: SignatureShare) -> None:
    """Check ``share``'s proof against message representative ``x``. Raises or returns.

    Note that for keys split from existing (non-safe-prime) keys a passing proof is
    not a guarantee; see :attr:`PublicParams.proofs_sound`.
    """
    check_share(params, share)
    if share.proof is None:
        raise InvalidProof(share.index, "share carries no proof")
    N = params.N
    x_tilde = powmod_public(mpz(x), 4 * params.delta, N)
    xi = mpz(share.value)
    xi_sq = xi * xi % N
    c, z = share.proof.c, share.proof.z
    vi = params.vk(share.index)
    v_prime = powmod_public(params.V, z, N) * powmod_public(vi, -c, N) % N
    x_prime = powmod_public(x_tilde, z, N) * powmod_public(xi_sq, -c, N) % N
    if challenge(params, share.index, int(x_tilde), int(xi_sq), int(v_prime), int(x_prime)) != c:
        raise InvalidProof(share.index, "proof of correctness does not verify")
