"""The cluster's public parameters: everything a combiner or verifier may know.

``N, e`` (the RSA public key), ``v`` and the verification keys ``v_i = v^{s_i}``, the
number of nodes ``n``, the threshold ``k``, and how the secret was shared:

* ``"shoup"``: a key dealt by ittc from safe primes; shares live in ``Z_m`` with
  ``m = p'q'`` and Shoup's proofs of correctness are sound.
* ``"integer"``: an existing RSA key split by ittc; its primes are not safe, so the
  secret ``Δ·d`` is shared over the integers (statistically hiding) and proofs are *not*
  sound. Robustness then rests on the final ``y^e == x`` check and on trying other
  ``k``-subsets.

The key id is a SHA-256 fingerprint of all of the above, so a node, a share file and a
request that name the same key id agree on every public value.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import gmpy2
from cryptography.hazmat.primitives.asymmetric import rsa

from ittc.errors import ParameterError
from ittc.scheme.ct import mpz

__all__ = ["MAX_NODES", "MIN_MODULUS_BITS", "PublicParams", "Sharing"]

Sharing = Literal["shoup", "integer"]

#: Moduli below this size are refused unless a test asks for them explicitly.
MIN_MODULUS_BITS = 2048
#: Smallest modulus accepted at all (only behind the test-only flag below 2048).
_ABSOLUTE_MIN_BITS = 256
#: ``Δ = n!`` grows fast; far more nodes than any deployment needs.
MAX_NODES = 64

_FORMAT = "ittc.public-params"
_VERSION = 1


def _encode_ints(*values: int) -> bytes:
    """Length-prefixed big-endian encoding: unambiguous, unlike plain concatenation."""
    out = bytearray()
    for value in values:
        raw = int(value).to_bytes((int(value).bit_length() + 7) // 8 or 1, "big")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


@dataclass(frozen=True, eq=True)
class PublicParams:
    """Public parameters of one shared key. Validated on construction."""

    modulus: int
    e: int
    v: int
    verification_keys: tuple[int, ...]
    n: int
    k: int
    sharing: Sharing = "shoup"
    #: Upper bound on the bit length of any share ``s_i`` (sizes proof nonces and checks).
    share_bits: int = 0
    _mpz: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modulus", int(self.modulus))
        object.__setattr__(self, "e", int(self.e))
        object.__setattr__(self, "v", int(self.v))
        object.__setattr__(self, "verification_keys", tuple(int(x) for x in self.verification_keys))
        if self.share_bits == 0:
            object.__setattr__(self, "share_bits", self.modulus.bit_length())
        self._validate()
        self._mpz["N"] = mpz(self.modulus)
        self._mpz["v"] = mpz(self.v)
        self._mpz["vks"] = tuple(mpz(x) for x in self.verification_keys)

    def _validate(self) -> None:
        N, n, k, e = self.modulus, self.n, self.k, self.e
        if N.bit_length() < _ABSOLUTE_MIN_BITS or N % 2 == 0:
            raise ParameterError("modulus must be odd and at least 256 bits")
        if not 1 <= n <= MAX_NODES:
            raise ParameterError(f"number of nodes must be in 1..{MAX_NODES}, got {n}")
        if not 1 <= k <= n:
            raise ParameterError(f"threshold must be in 1..{n}, got {k}")
        if not (e > n and gmpy2.is_prime(e)):
            raise ParameterError("public exponent must be a prime larger than the number of nodes")
        if self.sharing not in ("shoup", "integer"):
            raise ParameterError(f"unknown sharing {self.sharing!r}")
        if len(self.verification_keys) != n:
            raise ParameterError(
                f"expected {n} verification keys, got {len(self.verification_keys)}")
        for name, value in [("v", self.v)] + [
            (f"v_{i}", x) for i, x in enumerate(self.verification_keys, 1)
        ]:
            if not 1 < value < N or math.gcd(value, N) != 1:
                raise ParameterError(f"{name} is not a unit of Z_N other than 1")
        if not N.bit_length() <= self.share_bits <= 4 * N.bit_length() + 1024:
            raise ParameterError("share_bits out of range")

    # -- derived values -------------------------------------------------------------

    @property
    def N(self) -> mpz:  # noqa: N802 - the paper's name
        return self._mpz["N"]

    @property
    def V(self) -> mpz:  # noqa: N802
        return self._mpz["v"]

    def vk(self, index: int) -> mpz:
        """``v_index`` as an mpz (index checked)."""
        self.check_index(index)
        return self._mpz["vks"][index - 1]

    @property
    def bits(self) -> int:
        return self.modulus.bit_length()

    @property
    def size_bytes(self) -> int:
        """Length of a signature in bytes (the modulus length)."""
        return (self.modulus.bit_length() + 7) // 8

    @cached_property
    def delta(self) -> int:
        """``Δ = n!``."""
        return math.factorial(self.n)

    @property
    def proofs_sound(self) -> bool:
        """Whether Shoup's share proofs mean anything for this key (safe primes only)."""
        return self.sharing == "shoup"

    @property
    def robust(self) -> bool:
        """Shoup's robustness condition ``n - (k-1) >= k``: honest nodes alone reach ``k``."""
        return self.n - (self.k - 1) >= self.k

    @cached_property
    def combine_exponent(self) -> int:
        """``e'`` such that combining ``k`` shares yields ``x^{e'·d}``.

        ``4Δ²`` for Shoup's sharing of ``d`` over ``Z_m``; ``4Δ³`` for the integer
        sharing, whose secret is ``Δ·d``.
        """
        return 4 * self.delta**2 if self.sharing == "shoup" else 4 * self.delta**3

    @cached_property
    def key_id_bytes(self) -> bytes:
        h = hashlib.sha256(b"ittc/v1/key-id\x00")
        h.update(self.sharing.encode())
        h.update(_encode_ints(self.modulus, self.e, self.v, self.n, self.k, self.share_bits))
        h.update(_encode_ints(*self.verification_keys))
        return h.digest()

    @property
    def key_id(self) -> str:
        """Hex fingerprint of every public value; names the key everywhere."""
        return self.key_id_bytes.hex()

    @property
    def short_id(self) -> str:
        return self.key_id[:16]

    def public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.e, self.modulus).public_key()

    def check_index(self, index: int) -> None:
        """Raise unless ``index`` names a node of this key (1-based)."""
        if not isinstance(index, int) or not 1 <= index <= self.n:
            raise ParameterError(f"node index must be in 1..{self.n}")

    def verification_key(self, index: int) -> int:
        self.check_index(index)
        return self.verification_keys[index - 1]

    # -- serialization -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "key_id": self.key_id,
            "sharing": self.sharing,
            "n": self.n,
            "k": self.k,
            "e": self.e,
            "modulus": format(self.modulus, "x"),
            "v": format(self.v, "x"),
            "verification_keys": [format(x, "x") for x in self.verification_keys],
            "share_bits": self.share_bits,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> PublicParams:
        if not isinstance(data, dict):
            raise ParameterError("public parameters must be a mapping")
        if data.get("format") != _FORMAT:
            raise ParameterError("not an ittc public-parameters document")
        if data.get("version") != _VERSION:
            raise ParameterError(f"unsupported public-parameters version {data.get('version')!r}")
        expected = {"format", "version", "key_id", "sharing", "n", "k", "e", "modulus", "v",
                    "verification_keys", "share_bits"}
        if set(data) != expected:
            raise ParameterError(f"public parameters have fields {sorted(set(data) ^ expected)} "
                                 "missing or unexpected")
        try:
            params = cls(
                modulus=_hex(data["modulus"]),
                e=_int(data["e"]),
                v=_hex(data["v"]),
                verification_keys=tuple(_hex(x) for x in _list(data["verification_keys"])),
                n=_int(data["n"]),
                k=_int(data["k"]),
                sharing=data["sharing"],
                share_bits=_int(data["share_bits"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise ParameterError(f"malformed public parameters: {exc}") from None
        if data["key_id"] != params.key_id:
            raise ParameterError("key id does not match the parameters (altered or corrupt file)")
        return params

    @classmethod
    def from_json(cls, text: str | bytes) -> PublicParams:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParameterError(f"public parameters are not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError("expected an integer")
    return value


def _hex(value: Any) -> int:
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ParameterError("expected a hex string")
    try:
        return int(value, 16)
    except ValueError:
        raise ParameterError("expected a hex string") from None


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_NODES:
        raise ParameterError("expected a list of at most 64 values")
    return value
