"""The one door through which secret exponents pass.

Every exponentiation whose exponent is secret (a share ``s_i``, a proof nonce ``r``)
goes through :func:`powmod_secret`, which uses GMP's constant-time ``mpn_sec_powm``.
Public exponentiations use :func:`powmod_public`, which is faster and may leak the
exponent's bits through timing: never give it a secret.

Python integers and gmpy2 ``mpz`` values cannot be wiped from memory; see the docs.
"""

from __future__ import annotations

import gmpy2
from gmpy2 import mpz

__all__ = ["mpz", "powmod_public", "powmod_secret", "release_gil"]


def release_gil() -> None:
    """Let this thread's big-number work run without holding the GIL.

    gmpy2 keeps its context per thread, so every worker thread calls this once.
    """
    gmpy2.get_context().allow_release_gil = True


def powmod_secret(base: mpz, exponent: mpz, modulus: mpz) -> mpz:
    """``base ** exponent % modulus`` in time independent of the exponent's value.

    The exponent must be positive and the modulus odd (an RSA modulus is).
    """
    return gmpy2.powmod_sec(base, exponent, modulus)


def powmod_public(base: mpz, exponent: mpz | int, modulus: mpz) -> mpz:
    """``base ** exponent % modulus`` for public exponents; negative ones invert first."""
    return gmpy2.powmod(base, exponent, modulus)
