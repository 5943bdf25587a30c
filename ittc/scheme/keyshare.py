"""A node's secret key share ``s_i`` and the two things it does: sign and prove.

:class:`KeyShare` is a secret type: its ``repr`` names the node and key only, it refuses
pickling and copying out, compares in constant time, and its secret leaves it only
through :meth:`KeyShare.dangerously_export_secret`, which the share-file writer
calls. All exponentiations with secret exponents go through
:func:`ittc.scheme.ct.powmod_secret`.

Python cannot wipe memory: the secret lives in Python and GMP integers until the
garbage collector reuses their memory. See the docs' limitations page.
"""

from __future__ import annotations

import collections
import hmac
import math
import secrets
from typing import Any, NoReturn

from ittc.errors import InvalidProof, ParameterError
from ittc.scheme.ct import check_backend, mpz, powmod_public, powmod_secret
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import Proof, SignatureShare, challenge, nonce_bits, verify_share

__all__ = ["KeyShare", "check_representative"]


def check_representative(params: PublicParams, x: int) -> None:
    """A message representative must be a unit of ``Z_N``: ``0 < x < N``, ``gcd(x, N) = 1``."""
    if not 0 < x < params.modulus or math.gcd(x, params.modulus) != 1:
        raise ParameterError("message representative is not a unit modulo N")


class KeyShare:
    """Node ``index``'s share of the key described by ``params``."""

    __slots__ = ("params", "index", "_secret", "_exponent", "_nonces")

    def __init__(self, params: PublicParams, index: int, secret: int) -> None:
        params.check_index(index)
        if not isinstance(secret, int) or not 0 < secret < (1 << params.share_bits):
            raise ParameterError("share value out of range for this key")
        self.params = params
        self.index = index
        self._secret = mpz(secret)
        # x_i = x^{2Δ s_i}: the exponent is fixed, so compute it once.
        self._exponent = 2 * params.delta * self._secret
        self._nonces: collections.deque[tuple[mpz, mpz]] = collections.deque()

    # -- secret hygiene -------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<KeyShare node {self.index} of key {self.params.short_id}>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyShare holds a secret and cannot be pickled; write a share file")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> NoReturn:
        raise TypeError("KeyShare cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("KeyShare cannot be copied")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyShare):
            return NotImplemented
        width = (max(self.params.share_bits, other.params.share_bits) + 7) // 8
        mine = (
            self.params.epoch_id_bytes
            + self.index.to_bytes(2, "big")
            + int(self._secret).to_bytes(width, "big")
        )
        theirs = (
            other.params.epoch_id_bytes
            + other.index.to_bytes(2, "big")
            + int(other._secret).to_bytes(width, "big")
        )
        return hmac.compare_digest(mine, theirs)

    __hash__ = None  # type: ignore[assignment]

    def dangerously_export_secret(self) -> int:
        """The raw share ``s_i``.

        For the encrypted share-file writer, for handing the share to the node's own
        worker processes, and for the node's own part in a reshare
        (:class:`ittc.scheme.reshare.Holder`); nothing else should ever call this.
        """
        return int(self._secret)

    # -- signing --------------------------------------------------------------------

    def signature_share(self, x: int, *, proof: bool = False) -> SignatureShare:
        """``x_i = x^{2Δ s_i} mod N``, with Shoup's proof of correctness if asked.

        ``x`` is a message representative built by this node (never a raw integer from a
        caller); it is checked to be a unit of ``Z_N``.
        """
        check_representative(self.params, x)
        N = self.params.N
        xm = mpz(x)
        xi = powmod_secret(xm, self._exponent, N)
        return SignatureShare(self.index, int(xi), self._prove(xm, xi) if proof else None)

    def precompute_nonces(self, count: int) -> None:
        """Compute the message-independent half of ``count`` proofs (``r``, ``v^r``)."""
        for _ in range(count):
            self._nonces.append(self._fresh_nonce())

    @property
    def precomputed_nonces(self) -> int:
        return len(self._nonces)

    def _fresh_nonce(self) -> tuple[mpz, mpz]:
        r = mpz(0)
        while r == 0:  # uniform in [1, 2^bits): forcing bits (r | 1) would leak s_i's parity
            r = mpz(secrets.randbits(nonce_bits(self.params)))
        return r, powmod_secret(self.params.V, r, self.params.N)

    def _prove(self, x: mpz, xi: mpz) -> Proof:
        params = self.params
        N = params.N
        try:
            r, v_prime = self._nonces.popleft()
        except IndexError:
            r, v_prime = self._fresh_nonce()
        x_tilde = powmod_public(x, 4 * params.delta, N)
        x_prime = powmod_secret(x_tilde, r, N)
        c = challenge(
            params, self.index, int(x_tilde), int(xi * xi % N), int(v_prime), int(x_prime)
        )
        z = self._secret * c + r
        return Proof(c, int(z))

    def self_test(self) -> None:
        """Check the exponentiation backend, then sign a random value with a proof and
        check it against ``v_i``.

        Catches a backend that answers wrongly at this key's modulus (see
        :func:`ittc.scheme.ct.check_backend`) and a share that does not belong to its
        public parameters (a damaged or mismatched file) before a node serves anything.
        Raises :class:`InvalidProof` or :class:`~ittc.errors.BackendError`.
        """
        check_backend(self.params.N)
        x = secrets.randbelow(self.params.modulus - 2) + 2
        while math.gcd(x, self.params.modulus) != 1:  # pragma: no cover - negligible odds
            x = secrets.randbelow(self.params.modulus - 2) + 2
        share = self.signature_share(x, proof=True)
        try:
            verify_share(self.params, x, share)
        except InvalidProof:
            raise InvalidProof(
                self.index, "self-test failed: share does not match its verification key"
            ) from None
