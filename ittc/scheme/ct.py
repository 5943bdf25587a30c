"""The one door through which secret exponents pass, and the backends behind it.

Every exponentiation whose exponent is secret (a share ``s_i``, a proof nonce ``r``)
goes through :func:`powmod_secret`, in time independent of the exponent's value. Public
exponentiations use :func:`powmod_public`, which is faster and may leak the exponent's
bits through timing: never give it a secret.

Two backends compute :func:`powmod_secret`:

* ``openssl``: the system's libcrypto (OpenSSL 1.1.0 or later) through ctypes,
  ``BN_mod_exp_mont_consttime`` with the modulus's Montgomery context cached. About
  twice as fast as gmpy2's constant-time exponentiation on x86-64.
* ``gmpy2``: GMP's ``mpn_sec_powm`` (``gmpy2.powmod_sec``), portable, always there.

:func:`use_backend` chooses: ``"auto"`` (the default) takes libcrypto if it opens and
answers a known-answer test exactly as gmpy2 does, else gmpy2, and logs which once;
``"openssl"`` insists on libcrypto and raises :class:`~ittc.errors.BackendError` if it is
missing or answers wrongly; ``"gmpy2"`` never opens libcrypto. A backend that gives a
wrong answer is never used; :func:`check_backend` re-checks the one in use at a given
modulus (a node does, at start, with its key's modulus).

With the openssl backend, public exponents of 64 bits or more go to OpenSSL's
``BN_mod_exp_mont`` (variable time; 1.2 times faster than ``gmpy2.powmod`` at 64 bits,
1.35 times at 256 bits and more, in thread CPU time at 2048 and 3072 bits), smaller ones
to ``gmpy2.powmod`` (as fast at 17 bits, and nothing to convert).

Python integers and gmpy2 ``mpz`` values cannot be wiped from memory; see the docs.
This module opens a shared library and does no other I/O.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Protocol

import gmpy2
from gmpy2 import mpz

from ittc.errors import BackendError, ParameterError
from ittc.scheme import _libcrypto

__all__ = [
    "BACKENDS",
    "backend",
    "backend_description",
    "check_backend",
    "mpz",
    "powmod_public",
    "powmod_secret",
    "release_gil",
    "use_backend",
]

log = logging.getLogger(__name__)

#: Names :func:`use_backend` accepts.
BACKENDS = ("auto", "openssl", "gmpy2")

#: Public exponents at least this long go to OpenSSL when it is the backend (measured).
PUBLIC_OPENSSL_MIN_BITS = 64


class Backend(Protocol):
    """What a backend provides: two exponentiations and a name to log."""

    name: str
    description: str

    def powmod_secret(self, base: mpz, exponent: mpz, modulus: mpz) -> mpz: ...

    def powmod_public(self, base: mpz, exponent: mpz, modulus: mpz) -> mpz: ...


class Gmpy2Backend:
    """GMP's ``mpn_sec_powm`` for secrets, ``mpz_powm`` for the rest."""

    name = "gmpy2"
    description = f"gmpy2 {gmpy2.version()} ({gmpy2.mp_version()}, mpn_sec_powm)"

    @staticmethod
    def powmod_secret(base: mpz, exponent: mpz, modulus: mpz) -> mpz:
        return gmpy2.powmod_sec(base, exponent, modulus)

    @staticmethod
    def powmod_public(base: mpz, exponent: mpz, modulus: mpz) -> mpz:
        return gmpy2.powmod(base, exponent, modulus)


_GMPY2 = Gmpy2Backend()

#: How to open libcrypto; tests replace it to simulate a missing or broken library.
_loader: Callable[[str | None], Backend] = _libcrypto.load

_lock = threading.Lock()
#: The backend in use; ``None`` until the first exponentiation or :func:`use_backend`.
_active: Backend | None = None
#: What was asked for: ``"auto"`` may fall back to gmpy2 later (:func:`check_backend`).
_requested = "auto"
#: What opening each libcrypto path gave: the backend if it passed the known-answer test,
#: else ``None`` and why. Kept, so switching back is cheap and a library that once gave
#: a wrong answer is never used again by this process.
_libraries: dict[str | None, tuple[Backend | None, str]] = {}


# -- the two exponentiations ---------------------------------------------------------


def release_gil() -> None:
    """Let this thread's big-number work run without holding the GIL.

    gmpy2 keeps its context per thread, so every worker thread calls this once (ctypes
    releases the GIL for libcrypto's calls on its own).
    """
    gmpy2.get_context().allow_release_gil = True


def _check_modulus(modulus: mpz | int) -> None:
    if modulus < 3 or not modulus & 1:
        raise ParameterError("modulus must be odd and greater than 1")


def powmod_secret(base: mpz, exponent: mpz, modulus: mpz) -> mpz:
    """``base ** exponent % modulus`` in time independent of the exponent's value.

    The exponent must be positive and the modulus odd (an RSA modulus is); the time
    depends on the operands' lengths only.
    """
    if exponent <= 0:
        raise ParameterError("secret exponent must be positive")
    _check_modulus(modulus)
    return (_active or _resolve()).powmod_secret(base, exponent, modulus)


def powmod_public(base: mpz, exponent: mpz | int, modulus: mpz) -> mpz:
    """``base ** exponent % modulus`` for public exponents; negative ones invert first."""
    b = _active or _resolve()
    if (
        b is not _GMPY2
        and modulus & 1
        and modulus > 1
        and (exponent if exponent >= 0 else -exponent).bit_length() >= PUBLIC_OPENSSL_MIN_BITS
    ):
        try:
            return b.powmod_public(base, mpz(exponent), modulus)
        except ZeroDivisionError:
            raise ValueError("pow() base not invertible") from None
    return gmpy2.powmod(base, exponent, modulus)


# -- choosing a backend --------------------------------------------------------------


def backend() -> str:
    """The name of the backend in use (``"openssl"`` or ``"gmpy2"``), choosing if needed."""
    return (_active or _resolve()).name


def backend_description() -> str:
    """The backend in use with its version and library, for logs and reports."""
    return (_active or _resolve()).description


def use_backend(name: str = "auto", *, libcrypto: str | None = None) -> str:
    """Choose the backend for every later exponentiation; returns the one in use.

    ``libcrypto`` is a path to a specific library (default: the system's). Raises
    :class:`BackendError` if ``"openssl"`` is asked for and libcrypto is missing or fails
    its known-answer test, :class:`ParameterError` for an unknown name.
    """
    global _active, _requested
    if name not in BACKENDS:
        raise ParameterError(
            f"unknown exponentiation backend {name!r}; choose one of " + ", ".join(BACKENDS)
        )
    with _lock:
        if name == "gmpy2":
            chosen: Backend = _GMPY2
        else:
            candidate, reason = _open_verified(libcrypto)
            if candidate is not None:
                chosen = candidate
            elif name == "openssl":
                raise BackendError(f"the openssl backend cannot be used: {reason}")
            else:
                chosen = _GMPY2
        if _active is not chosen:  # log each change once
            if name == "auto" and chosen is _GMPY2:
                log.info(
                    "libcrypto not used (%s); secret exponentiations use %s",
                    reason,
                    _GMPY2.description,
                )
            else:
                log.info("secret exponentiations use %s", chosen.description)
        _active, _requested = chosen, name
        return chosen.name


def _resolve() -> Backend:
    """The default choice (``"auto"``), made once on first use."""
    with _lock:
        if _active is not None:
            return _active
    use_backend("auto")
    assert _active is not None
    return _active


def _open_verified(path: str | None) -> tuple[Backend | None, str]:
    """libcrypto if it opens and passes the known-answer test, else why not."""
    if path not in _libraries:
        _libraries[path] = _open_and_test(path)
    return _libraries[path]


def _open_and_test(path: str | None) -> tuple[Backend | None, str]:
    try:
        candidate = _loader(path)
    except (OSError, AttributeError) as exc:
        return None, f"cannot load libcrypto: {exc}"
    failure = _known_answer_failure(candidate)
    if failure is not None:
        log.warning(
            "libcrypto (%s) failed its known-answer test: %s; it is not used",
            candidate.description,
            failure,
        )
        return None, f"libcrypto failed its known-answer test: {failure}"
    return candidate, ""


# -- self-tests ----------------------------------------------------------------------


def _stream(label: str, bits: int) -> mpz:
    """A fixed pseudo-random number of exactly ``bits`` bits (SHAKE-256 of ``label``)."""
    data = hashlib.shake_256(b"ittc/ct-known-answers/" + label.encode()).digest((bits + 7) // 8)
    return mpz(int.from_bytes(data, "big") >> (8 * len(data) - bits) | 1 << (bits - 1))


def _known_answer_cases() -> list[tuple[mpz, mpz, mpz]]:
    """Fixed inputs: edge bases and exponents, word-boundary and odd sizes, 512..2048 bits.

    The answers come from gmpy2 (a different implementation) at the time of the test.
    """
    cases = []
    for bits in (512, 520, 1024, 2048):
        n = _stream(f"modulus {bits}", bits) | 1
        x = _stream(f"base {bits}", bits - 1)
        short = _stream(f"short exponent {bits}", PUBLIC_OPENSSL_MIN_BITS + 1)
        long_exponent = _stream(f"exponent {bits}", bits + 300)
        for base in (mpz(0), mpz(1), mpz(2), n - 1):
            cases += [(base, mpz(1), n), (base, short, n)]
        cases += [(x, mpz(1), n), (x, short, n), (x, long_exponent, n), (n + x, short, n)]
        if bits <= 1024:
            cases.append((x, _stream(f"same-size exponent {bits}", bits), n))
            cases.append((x, mpz(2) ** bits - 1, n))
    return cases


def _known_answer_failure(candidate: Backend) -> str | None:
    """``None`` if ``candidate`` agrees with gmpy2 on every fixed case, else what failed."""
    try:
        for base, exponent, modulus in _known_answer_cases():
            expected = gmpy2.powmod(base, exponent, modulus)
            if candidate.powmod_secret(base, exponent, modulus) != expected:
                return f"secret exponentiation wrong at {modulus.bit_length()} bits"
            if candidate.powmod_public(base, exponent, modulus) != expected:
                return f"public exponentiation wrong at {modulus.bit_length()} bits"
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign library disqualifies it
        return f"{type(exc).__name__}: {exc}"
    return None


def check_backend(modulus: mpz | int) -> None:
    """Check the backend in use against gmpy2 at ``modulus`` (random base and exponents).

    Under ``"auto"`` a wrong answer switches to gmpy2 (logged as an error); a backend
    chosen by name raises :class:`BackendError` instead.
    """
    global _active
    b = _active or _resolve()
    if b is _GMPY2:
        return
    n = mpz(modulus)
    _check_modulus(n)
    bits = n.bit_length()
    base = mpz(secrets.randbelow(n))
    ok = True
    for exponent in (
        mpz(secrets.randbits(bits + 600) | 1 << (bits + 599)),
        mpz(secrets.randbits(PUBLIC_OPENSSL_MIN_BITS + 1)),
    ):
        if exponent == 0:  # pragma: no cover - odds 2^-65
            continue
        expected = gmpy2.powmod(base, exponent, n)
        ok = ok and b.powmod_secret(base, exponent, n) == expected
        ok = ok and b.powmod_public(base, exponent, n) == expected
    if ok:
        return
    with _lock:
        if _active is not b:
            return
        reason = f"{b.name} gave a wrong answer at {bits} bits"
        for path, (opened, _) in list(_libraries.items()):
            if opened is b:
                _libraries[path] = (None, reason)
        _active = _GMPY2
        if _requested != "auto":
            log.error("%s gave a wrong answer at %d bits; it is not used", b.description, bits)
            raise BackendError(f"the {b.name} backend gives wrong answers at {bits} bits")
        log.error(
            "%s gave a wrong answer at %d bits; secret exponentiations now use %s",
            b.description,
            bits,
            _GMPY2.description,
        )
