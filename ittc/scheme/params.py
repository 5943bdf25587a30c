"""The cluster's public parameters: everything a combiner or verifier may know.

Two layers, because a key outlives the sites that hold it:

* **The key**, which never changes: the RSA public key ``N, e``, the base ``v`` of the
  verification keys, and its *kind*:

  - ``"generated"``: dealt by ittc from safe primes, so Shoup's share proofs are sound;
  - ``"split"``: an existing RSA key split by ittc; its primes are not safe, so proofs
    are *not* sound and robustness rests on the final ``y^e == x`` check and on trying
    other ``k``-subsets.

  The **key id** is a SHA-256 fingerprint of these values (see :attr:`key_id`).

* **The epoch**, which a reshare replaces (docs/lifecycle.md): its number, the number
  of nodes ``n``, the threshold ``k``, the verification keys ``v_i = v^{s_i}``, and how
  the secret is shared:

  - ``"shoup"``: shares of ``d`` in ``Z_m``, ``m = p'q'`` (a generated key's epoch 0);
  - ``"integer"``: an integer polynomial ``F`` with ``F(0) = Δ·A`` where ``A ≡ c·d``
    modulo the order of the squares, ``c`` the public :attr:`secret_multiplier`
    (1 for split keys; a generated key's first reshare sets it), ``|A| < 2^secret_bits``.

  The **epoch id** fingerprints the key id and every epoch value; shares, requests and
  files of one epoch are never used with another.

Keys made before epochs existed (parameters format version 1) keep the key id they were
made with, a fingerprint of all their epoch-0 values; it is checked while they are at
epoch 0 and carried unchanged to later epochs, so their share files, audit logs and
cluster files keep working.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import gmpy2
from cryptography.hazmat.primitives.asymmetric import rsa

from ittc.errors import ParameterError
from ittc.scheme.ct import mpz

__all__ = [
    "MAX_EPOCH",
    "MAX_NODES",
    "MIN_MODULUS_BITS",
    "KeyKind",
    "PublicParams",
    "Sharing",
    "encode_ints",
]

Sharing = Literal["shoup", "integer"]
KeyKind = Literal["generated", "split"]

#: Moduli below this size are refused unless a test asks for them explicitly.
MIN_MODULUS_BITS = 2048
#: Smallest modulus accepted at all (only behind the test-only flag below 2048).
_ABSOLUTE_MIN_BITS = 256
#: ``Δ = n!`` grows fast; far more nodes than any deployment needs.
MAX_NODES = 64
#: Epoch numbers are 0..MAX_EPOCH (a refresh a minute for a million years fits).
MAX_EPOCH = (1 << 63) - 1
#: Largest secret multiplier: ``Δ`` of the largest cluster, ``64! < 2^300``.
_MAX_MULTIPLIER_BITS = 300

_FORMAT = "ittc.public-params"
_VERSION = 2
_LEGACY_VERSION = 1
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def encode_ints(*values: int) -> bytes:
    """Length-prefixed big-endian encoding: unambiguous, unlike plain concatenation."""
    out = bytearray()
    for value in values:
        raw = int(value).to_bytes((int(value).bit_length() + 7) // 8 or 1, "big")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _encode_str(value: str) -> bytes:
    raw = value.encode("ascii")
    return len(raw).to_bytes(4, "big") + raw


@dataclass(frozen=True, eq=True)
class PublicParams:
    """Public parameters of one shared key at one epoch. Validated on construction."""

    modulus: int
    e: int
    v: int
    verification_keys: tuple[int, ...]
    n: int
    k: int
    sharing: Sharing = "shoup"
    #: Upper bound on the bit length of any share ``s_i`` (sizes proof nonces and checks).
    share_bits: int = 0
    #: ``"generated"`` or ``"split"``; derived from ``sharing`` when omitted at epoch 0.
    kind: KeyKind | None = None
    epoch: int = 0
    #: Integer sharing: ``|A| < 2^secret_bits`` where ``F(0) = Δ·A`` (default ``|N|``).
    secret_bits: int = 0
    #: Integer sharing: ``A ≡ c·d`` modulo the order of the squares; ``c`` is this.
    secret_multiplier: int = 1
    #: For keys made before epochs existed: the key id they were made with (hex).
    legacy_key_id: str | None = None
    _mpz: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modulus", int(self.modulus))
        object.__setattr__(self, "e", int(self.e))
        object.__setattr__(self, "v", int(self.v))
        object.__setattr__(self, "verification_keys", tuple(int(x) for x in self.verification_keys))
        if self.share_bits == 0:
            object.__setattr__(self, "share_bits", self.modulus.bit_length())
        if self.secret_bits == 0:
            object.__setattr__(self, "secret_bits", self.modulus.bit_length())
        if self.kind is None:
            if self.epoch != 0:
                raise ParameterError("the key kind must be given after epoch 0")
            object.__setattr__(self, "kind", "generated" if self.sharing == "shoup" else "split")
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
        if self.kind not in ("generated", "split"):
            raise ParameterError(f"unknown key kind {self.kind!r}")
        if not isinstance(self.epoch, int) or not 0 <= self.epoch <= MAX_EPOCH:
            raise ParameterError("epoch number out of range")
        if self.sharing == "shoup" and (self.kind != "generated" or self.epoch != 0):
            raise ParameterError("shares in Z_m exist only at epoch 0 of a generated key")
        if len(self.verification_keys) != n:
            raise ParameterError(
                f"expected {n} verification keys, got {len(self.verification_keys)}"
            )
        for name, value in [("v", self.v)] + [
            (f"v_{i}", x) for i, x in enumerate(self.verification_keys, 1)
        ]:
            if not 1 < value < N or math.gcd(value, N) != 1:
                raise ParameterError(f"{name} is not a unit of Z_N other than 1")
        if not N.bit_length() <= self.share_bits <= 4 * N.bit_length() + 2048:
            raise ParameterError("share_bits out of range")
        if not N.bit_length() <= self.secret_bits <= self.share_bits:
            raise ParameterError("secret_bits out of range")
        c = self.secret_multiplier
        if (
            not isinstance(c, int)
            or not 1 <= c
            or c.bit_length() > _MAX_MULTIPLIER_BITS
            or math.gcd(c, e) != 1
            or (self.sharing == "shoup" and c != 1)
        ):
            raise ParameterError("secret multiplier out of range")
        if self.legacy_key_id is not None:
            if not isinstance(self.legacy_key_id, str) or not _HEX_ID.fullmatch(self.legacy_key_id):
                raise ParameterError("legacy key id must be 64 lowercase hex digits")
            if self.epoch == 0 and self.legacy_key_id != self._version1_key_id().hex():
                raise ParameterError(
                    "key id does not match the parameters (altered or corrupt file)"
                )

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
        """Whether Shoup's share proofs mean anything for this key (safe primes only).

        A property of the key, not of the epoch: a generated key's proofs stay sound
        after its shares become integers.
        """
        return self.kind == "generated"

    @property
    def robust(self) -> bool:
        """Shoup's robustness condition ``n - (k-1) >= k``: honest nodes alone reach ``k``."""
        return self.n - (self.k - 1) >= self.k

    @cached_property
    def combine_exponent(self) -> int:
        """``e'`` such that combining ``k`` shares yields ``x^{e'·d}``.

        ``4Δ²`` for Shoup's sharing of ``d`` over ``Z_m``; ``4Δ³·c`` for an integer
        sharing, whose polynomial has ``F(0) = Δ·A`` with ``A ≡ c·d``.
        """
        if self.sharing == "shoup":
            return 4 * self.delta**2
        return 4 * self.delta**3 * self.secret_multiplier

    def _version1_key_id(self) -> bytes:
        """The key id as parameters format version 1 defined it (every epoch-0 value)."""
        h = hashlib.sha256(b"ittc/v1/key-id\x00")
        h.update(self.sharing.encode())
        h.update(encode_ints(self.modulus, self.e, self.v, self.n, self.k, self.share_bits))
        h.update(encode_ints(*self.verification_keys))
        return h.digest()

    @cached_property
    def key_id_bytes(self) -> bytes:
        """SHA-256 over the key kind, ``N``, ``e`` and ``v``: the same at every epoch."""
        if self.legacy_key_id is not None:
            return bytes.fromhex(self.legacy_key_id)
        assert self.kind is not None
        h = hashlib.sha256(b"ittc/v2/key-id\x00")
        h.update(_encode_str(self.kind))
        h.update(encode_ints(self.modulus, self.e, self.v))
        return h.digest()

    @property
    def key_id(self) -> str:
        """Hex fingerprint of what never changes; names the key everywhere, at every epoch."""
        return self.key_id_bytes.hex()

    @property
    def short_id(self) -> str:
        return self.key_id[:16]

    @cached_property
    def epoch_id_bytes(self) -> bytes:
        """SHA-256 over the key id and every value of this epoch."""
        assert self.kind is not None
        h = hashlib.sha256(b"ittc/v2/epoch-id\x00")
        h.update(self.key_id_bytes)
        h.update(_encode_str(self.kind) + _encode_str(self.sharing))
        h.update(
            encode_ints(
                self.modulus,
                self.e,
                self.v,
                self.epoch,
                self.n,
                self.k,
                self.share_bits,
                self.secret_bits,
                self.secret_multiplier,
            )
        )
        h.update(encode_ints(*self.verification_keys))
        return h.digest()

    @property
    def epoch_id(self) -> str:
        """Hex fingerprint of this epoch's parameters (and the key's)."""
        return self.epoch_id_bytes.hex()

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
        """Format version 2 (format version 1 documents are still read)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "key_id": self.key_id,
            "legacy_key_id": self.legacy_key_id is not None,
            "kind": self.kind,
            "epoch": self.epoch,
            "epoch_id": self.epoch_id,
            "sharing": self.sharing,
            "n": self.n,
            "k": self.k,
            "e": self.e,
            "modulus": format(self.modulus, "x"),
            "v": format(self.v, "x"),
            "verification_keys": [format(x, "x") for x in self.verification_keys],
            "share_bits": self.share_bits,
            "secret_bits": self.secret_bits,
            "secret_multiplier": self.secret_multiplier,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> PublicParams:
        if not isinstance(data, dict):
            raise ParameterError("public parameters must be a mapping")
        if data.get("format") != _FORMAT:
            raise ParameterError("not an ittc public-parameters document")
        version = data.get("version")
        if version == _LEGACY_VERSION:
            return _from_version1(data)
        if version != _VERSION:
            raise ParameterError(
                f"unsupported public-parameters version {version!r} (this "
                f"ittc reads versions {_LEGACY_VERSION} and {_VERSION})"
            )
        return _from_version2(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> PublicParams:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParameterError(f"public parameters are not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _build(**kwargs: Any) -> PublicParams:
    try:
        return PublicParams(**kwargs)
    except ParameterError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"malformed public parameters: {exc}") from None


def _check_fields(data: dict[str, Any], expected: set[str]) -> None:
    if set(data) != expected:
        raise ParameterError(
            f"public parameters have fields {sorted(set(data) ^ expected)} missing or unexpected"
        )


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


def _from_version2(data: dict[str, Any]) -> PublicParams:
    """A document of the current version."""
    expected = {
        "format",
        "version",
        "key_id",
        "legacy_key_id",
        "kind",
        "epoch",
        "epoch_id",
        "sharing",
        "n",
        "k",
        "e",
        "modulus",
        "v",
        "verification_keys",
        "share_bits",
        "secret_bits",
        "secret_multiplier",
    }
    _check_fields(data, expected)
    legacy = data["legacy_key_id"]
    if not isinstance(legacy, bool):
        raise ParameterError("legacy_key_id must be true or false")
    key_id = data["key_id"]
    params = _build(
        modulus=_hex(data["modulus"]),
        e=_int(data["e"]),
        v=_hex(data["v"]),
        verification_keys=tuple(_hex(x) for x in _list(data["verification_keys"])),
        n=_int(data["n"]),
        k=_int(data["k"]),
        sharing=data["sharing"],
        share_bits=_int(data["share_bits"]),
        kind=data["kind"],
        epoch=_int(data["epoch"]),
        secret_bits=_int(data["secret_bits"]),
        secret_multiplier=_int(data["secret_multiplier"]),
        legacy_key_id=key_id if legacy else None,
    )
    if key_id != params.key_id:
        raise ParameterError("key id does not match the parameters (altered or corrupt file)")
    if data["epoch_id"] != params.epoch_id:
        raise ParameterError("epoch id does not match the parameters (altered or corrupt file)")
    return params


def _from_version1(data: dict[str, Any]) -> PublicParams:
    """A document written before epochs existed: epoch 0, keeps its key id."""
    _check_fields(
        data,
        {
            "format",
            "version",
            "key_id",
            "sharing",
            "n",
            "k",
            "e",
            "modulus",
            "v",
            "verification_keys",
            "share_bits",
        },
    )
    key_id = data["key_id"]
    if not isinstance(key_id, str) or not _HEX_ID.fullmatch(key_id):
        raise ParameterError("key id does not match the parameters (altered or corrupt file)")
    return _build(
        modulus=_hex(data["modulus"]),
        e=_int(data["e"]),
        v=_hex(data["v"]),
        verification_keys=tuple(_hex(x) for x in _list(data["verification_keys"])),
        n=_int(data["n"]),
        k=_int(data["k"]),
        sharing=data["sharing"],
        share_bits=_int(data["share_bits"]),
        legacy_key_id=key_id,
    )
