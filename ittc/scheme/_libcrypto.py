"""Modular exponentiation on OpenSSL's libcrypto, loaded with :mod:`ctypes`.

Nothing is compiled at install time: the system's ``libcrypto`` (OpenSSL 1.1.0 or later)
is opened at run time. Secret exponents go to ``BN_mod_exp_mont_consttime`` with
``BN_FLG_CONSTTIME`` set on the exponent, the function OpenSSL's own RSA uses for its
private key; public exponents may go to ``BN_mod_exp_mont``, which is faster and leaks
the exponent's bits through timing.

The Montgomery context of each modulus is built once and kept (a small cache keyed by
the modulus; moduli are public). It is read-only after it is built, so threads share
it, as OpenSSL's RSA shares its own. Each thread has its own ``BN_CTX`` and BIGNUMs for
the base and the result (public values), reused from call to call; ctypes releases the
GIL for the duration of the foreign call, so threads exponentiate in parallel.

Memory: the secret exponent gets a BIGNUM of its own for each call, freed with
``BN_clear_free`` (zeroed first) as soon as the call returns; OpenSSL zeroes its table of
powers (where the secret-dependent products live) before freeing it. The exponent
reaches OpenSSL through one short-lived Python ``bytes`` object (``mpz.to_bytes``),
which Python frees without zeroing, as it frees every temporary of the gmpy2 path.

Only :mod:`ittc.scheme.ct` uses this module; it decides whether the library may be used
(a known-answer test against gmpy2 first).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

import gmpy2
from gmpy2 import mpz

__all__ = ["LibCrypto", "load"]

_P = ctypes.c_void_p
_INT = ctypes.c_int
#: ``BN_FLG_CONSTTIME`` from ``openssl/bn.h``.
_BN_FLG_CONSTTIME = 0x04
#: Montgomery contexts kept (a node has one modulus; a client a few).
_CACHE_SIZE = 16

#: (symbol, result type, argument types) of every function used.
_SIGNATURES: tuple[tuple[str, object, tuple[object, ...]], ...] = (
    ("OpenSSL_version", ctypes.c_char_p, (_INT,)),
    ("ERR_clear_error", None, ()),
    ("BN_new", _P, ()),
    ("BN_free", None, (_P,)),
    ("BN_clear_free", None, (_P,)),
    ("BN_bin2bn", _P, (ctypes.c_char_p, _INT, _P)),
    ("BN_bn2binpad", _INT, (_P, ctypes.c_char_p, _INT)),
    ("BN_set_flags", None, (_P, _INT)),
    ("BN_CTX_new", _P, ()),
    ("BN_CTX_free", None, (_P,)),
    ("BN_MONT_CTX_new", _P, ()),
    ("BN_MONT_CTX_set", _INT, (_P, _P, _P)),
    ("BN_MONT_CTX_free", None, (_P,)),
    ("BN_mod_exp_mont_consttime", _INT, (_P, _P, _P, _P, _P, _P)),
    ("BN_mod_exp_mont", _INT, (_P, _P, _P, _P, _P, _P)),
)


def candidates() -> list[str]:
    """Library names to try, in order: versioned names first (a plain ``dlopen``).

    ``ctypes.util.find_library`` may run ``ldconfig`` or a compiler to search, so it is
    asked only when no versioned name opens.
    """
    if sys.platform == "darwin":
        # Never the unversioned /usr/lib/libcrypto.dylib: macOS aborts the process that
        # opens it.
        return ["libcrypto.3.dylib", "libcrypto.1.1.dylib"]
    if sys.platform == "win32":
        return ["libcrypto-3-x64.dll", "libcrypto-3.dll", "libcrypto-1_1-x64.dll"]
    return ["libcrypto.so.3", "libcrypto.so.1.1"]


def _open(path: str | None) -> tuple[ctypes.CDLL, str]:
    if path is not None:
        return ctypes.CDLL(path), path
    errors = []
    for name in candidates():
        try:
            return ctypes.CDLL(name), name
        except OSError as exc:
            errors.append(str(exc))
    found = ctypes.util.find_library("crypto")
    if found and not (sys.platform == "darwin" and found.endswith("libcrypto.dylib")):
        return ctypes.CDLL(found), found
    raise OSError("no libcrypto found (" + "; ".join(errors) + ")")


def load(path: str | None = None) -> LibCrypto:
    """Open libcrypto (``path``, or the system's) and bind the functions used.

    Raises :class:`OSError` if the library is missing and :class:`AttributeError` if it
    lacks a function (OpenSSL older than 1.1.0, or not OpenSSL).
    """
    lib, name = _open(path)
    for symbol, restype, argtypes in _SIGNATURES:
        function = getattr(lib, symbol)
        function.restype = restype
        function.argtypes = argtypes
    return LibCrypto(lib, name)


class _Modulus:
    """A modulus as a BIGNUM and its Montgomery context; freed when the last user drops it."""

    __slots__ = ("bn", "mont", "size", "_lib")

    def __init__(self, lib: ctypes.CDLL, modulus: mpz) -> None:
        self._lib = lib
        self.size = (modulus.bit_length() + 7) // 8
        self.bn = self.mont = None
        data = modulus.to_bytes(self.size, "big")
        self.bn = lib.BN_bin2bn(data, self.size, None)
        self.mont = lib.BN_MONT_CTX_new()
        ctx = lib.BN_CTX_new()
        try:
            if not (
                self.bn and self.mont and ctx and lib.BN_MONT_CTX_set(self.mont, self.bn, ctx) == 1
            ):
                lib.ERR_clear_error()
                raise MemoryError("libcrypto could not set up a Montgomery context")
        finally:
            lib.BN_CTX_free(ctx)

    def __del__(self) -> None:
        if self.mont:
            self._lib.BN_MONT_CTX_free(self.mont)
        if self.bn:
            self._lib.BN_free(self.bn)


class _Scratch:
    """One thread's ``BN_CTX``, base and result BIGNUMs and output buffers, reused.

    Only public values pass through them (the base, the result, the base's Montgomery
    form in the ``BN_CTX``); the secret exponent gets a BIGNUM of its own, zeroed and
    freed after each call. Freed (zeroed) when the thread ends.
    """

    __slots__ = ("ctx", "a", "r", "_buffers", "_lib")

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self.ctx, self.a, self.r = lib.BN_CTX_new(), lib.BN_new(), lib.BN_new()
        self._buffers: dict[int, ctypes.Array[ctypes.c_char]] = {}
        if not (self.ctx and self.a and self.r):
            raise MemoryError("libcrypto could not allocate")

    def buffer(self, size: int) -> ctypes.Array[ctypes.c_char]:
        out = self._buffers.get(size)
        if out is None:
            out = self._buffers[size] = ctypes.create_string_buffer(size)
        return out

    def __del__(self) -> None:
        lib = self._lib
        if self.ctx:
            lib.BN_CTX_free(self.ctx)
        if self.r:
            lib.BN_clear_free(self.r)
        if self.a:
            lib.BN_clear_free(self.a)


class LibCrypto:
    """Exponentiations through one opened libcrypto."""

    name = "openssl"

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self._lib = lib
        self.path = path
        version = lib.OpenSSL_version(0)
        self.version = version.decode("ascii", "replace") if version else "unknown"
        self.description = f"openssl ({self.version}, {path}, BN_mod_exp_mont_consttime)"
        self._moduli: collections.OrderedDict[mpz, _Modulus] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    def _modulus(self, modulus: mpz) -> _Modulus:
        """The cached Montgomery context of ``modulus`` (built on first use)."""
        with self._lock:
            entry = self._moduli.get(modulus)
            if entry is not None:
                self._moduli.move_to_end(modulus)
                return entry
        entry = _Modulus(self._lib, modulus)
        with self._lock:
            # Another thread may have built it meanwhile: keep one (the other is freed).
            entry = self._moduli.setdefault(modulus, entry)
            self._moduli.move_to_end(modulus)
            while len(self._moduli) > _CACHE_SIZE:
                # Threads still using an evicted context hold a reference to it.
                self._moduli.popitem(last=False)
        return entry

    def cached_moduli(self) -> int:
        """How many Montgomery contexts are kept (for tests)."""
        with self._lock:
            return len(self._moduli)

    def _scratch(self) -> _Scratch:
        """This thread's own ``BN_CTX`` and BIGNUMs for the public operands."""
        scratch: _Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _Scratch(self._lib)
        return scratch

    def _exp(
        self, function: Callable[..., int], base: mpz, exponent: mpz, modulus: mpz, consttime: bool
    ) -> mpz:
        lib = self._lib
        m = self._modulus(modulus)
        t = self._scratch()
        if not 0 <= base < modulus:
            base = base % modulus
        size = m.size
        secret = exponent.to_bytes((exponent.bit_length() + 7) // 8, "big")
        p = lib.BN_bin2bn(secret, len(secret), None)
        del secret
        try:
            if not p or not lib.BN_bin2bn(base.to_bytes(size, "big"), size, t.a):
                raise MemoryError("libcrypto could not allocate")
            if consttime:
                lib.BN_set_flags(p, _BN_FLG_CONSTTIME)
            out = t.buffer(size)
            if function(t.r, t.a, p, m.bn, t.ctx, m.mont) != 1 or (
                lib.BN_bn2binpad(t.r, out, size) != size
            ):
                lib.ERR_clear_error()
                raise ArithmeticError("libcrypto exponentiation failed")
            return mpz.from_bytes(out, "big")
        finally:
            lib.BN_clear_free(p)

    def powmod_secret(self, base: mpz, exponent: mpz, modulus: mpz) -> mpz:
        """``base^exponent mod modulus``, constant time in the exponent's value.

        The caller checks ``exponent > 0`` and ``modulus`` odd and greater than 1.
        """
        return self._exp(
            self._lib.BN_mod_exp_mont_consttime, mpz(base), mpz(exponent), mpz(modulus), True
        )

    def powmod_public(self, base: mpz, exponent: mpz, modulus: mpz) -> mpz:
        """``base^exponent mod modulus`` in variable time; a negative exponent inverts first.

        The caller checks ``modulus`` odd and greater than 1.
        """
        base, exponent, modulus = mpz(base), mpz(exponent), mpz(modulus)
        if exponent < 0:
            base, exponent = gmpy2.invert(base, modulus), -exponent
        if exponent == 0:
            return mpz(1)
        return self._exp(self._lib.BN_mod_exp_mont, base, exponent, modulus, False)
