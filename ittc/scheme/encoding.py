"""Message encodings of RFC 8017: EMSA-PKCS1-v1_5 and EMSA-PSS with MGF1.

A node builds the integer it exponentiates from ``(scheme, hash, digest, salt)`` itself:
it never raises a caller's integer to its share, so whoever can reach ``k`` nodes cannot
use them to decrypt RSA ciphertexts or sign other structures (docs/design.md). Inputs are
always digests ("prehashed"); hashing the data is the caller's side (:meth:`SignItem.make`).

:data:`HASHES` is the one table of the hashes ittc signs with: name, digest size,
DigestInfo prefix, and the matching ``hashlib`` and ``cryptography`` algorithms.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from ittc.errors import EncodingError

__all__ = [
    "HASHES",
    "MAX_SALT_BYTES",
    "HashSpec",
    "Scheme",
    "SignItem",
    "encode",
    "hash_spec",
    "mgf1",
]

#: The longest PSS salt a node accepts (RFC 8017 allows up to ``emLen - hLen - 2``).
MAX_SALT_BYTES = 512


class Scheme(enum.Enum):
    PKCS1V15 = "pkcs1v15"
    PSS = "pss"


@dataclass(frozen=True)
class HashSpec:
    name: str
    digest_size: int
    digest_info: bytes  # DER DigestInfo prefix for EMSA-PKCS1-v1_5
    new: Callable[[], hashlib._Hash]
    #: The same hash as a ``cryptography`` algorithm class.
    algorithm: type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]


HASHES: dict[str, HashSpec] = {
    spec.name: spec
    for spec in (
        HashSpec(
            "sha256",
            32,
            bytes.fromhex("3031300d060960864801650304020105000420"),
            hashlib.sha256,
            hashes.SHA256,
        ),
        HashSpec(
            "sha384",
            48,
            bytes.fromhex("3041300d060960864801650304020205000430"),
            hashlib.sha384,
            hashes.SHA384,
        ),
        HashSpec(
            "sha512",
            64,
            bytes.fromhex("3051300d060960864801650304020305000440"),
            hashlib.sha512,
            hashes.SHA512,
        ),
    )
}


def hash_spec(name: str) -> HashSpec:
    try:
        return HASHES[name]
    except (KeyError, TypeError):
        raise EncodingError(f"unsupported hash {name!r}; use one of {sorted(HASHES)}") from None


def mgf1(seed: bytes, length: int, spec: HashSpec) -> bytes:
    """MGF1 of RFC 8017 appendix B.2.1."""
    out = bytearray()
    for counter in range(math.ceil(length / spec.digest_size)):
        h = spec.new()
        h.update(seed + counter.to_bytes(4, "big"))
        out += h.digest()
    return bytes(out[:length])


def _emsa_pkcs1_v15(digest: bytes, spec: HashSpec, em_len: int) -> bytes:
    t = spec.digest_info + digest
    if em_len < len(t) + 11:
        raise EncodingError("modulus too short for this hash with PKCS#1 v1.5")
    return b"\x00\x01" + b"\xff" * (em_len - len(t) - 3) + b"\x00" + t


def _emsa_pss(digest: bytes, spec: HashSpec, salt: bytes, em_bits: int) -> bytes:
    em_len = (em_bits + 7) // 8
    h_len = spec.digest_size
    if em_len < h_len + len(salt) + 2:
        raise EncodingError("modulus too short for this hash and salt length with PSS")
    m_prime = b"\x00" * 8 + digest + salt
    h_obj = spec.new()
    h_obj.update(m_prime)
    h = h_obj.digest()
    db = b"\x00" * (em_len - len(salt) - h_len - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, mgf1(h, em_len - h_len - 1, spec), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


def encode(
    scheme: Scheme, hash_name: str, digest: bytes, modulus_bits: int, salt: bytes = b""
) -> int:
    """The integer ``x`` to be signed, per RFC 8017 section 9.

    ``digest`` is the message's hash under ``hash_name``; ``salt`` is used by PSS only
    and must be empty for PKCS#1 v1.5.
    """
    spec = hash_spec(hash_name)
    if not isinstance(digest, bytes | bytearray) or len(digest) != spec.digest_size:
        raise EncodingError(f"a {spec.name} digest is {spec.digest_size} bytes")
    if not isinstance(salt, bytes | bytearray):
        raise EncodingError("salt must be bytes")
    if scheme is Scheme.PKCS1V15:
        if salt:
            raise EncodingError("PKCS#1 v1.5 takes no salt")
        em = _emsa_pkcs1_v15(bytes(digest), spec, (modulus_bits + 7) // 8)
    elif scheme is Scheme.PSS:
        if len(salt) > MAX_SALT_BYTES:
            raise EncodingError(f"PSS salt longer than {MAX_SALT_BYTES} bytes")
        em = _emsa_pss(bytes(digest), spec, bytes(salt), modulus_bits - 1)
    else:
        raise EncodingError(f"unsupported scheme {scheme!r}")
    return int.from_bytes(em, "big")


@dataclass(frozen=True)
class SignItem:
    """One thing to sign: the encoding, the hash, the digest and (PSS) the salt.

    This is what travels to the nodes; each builds the representative itself with
    :meth:`representative`.
    """

    padding: Scheme
    hash_name: str
    digest: bytes
    salt: bytes = b""

    @classmethod
    def make(
        cls,
        *,
        data: bytes | None = None,
        digest: bytes | None = None,
        padding: Scheme | str = Scheme.PKCS1V15,
        hash_name: str = "sha256",
        salt_length: int | None = None,
    ) -> SignItem:
        """Hash ``data`` (or take ``digest``) and draw a fresh PSS salt if needed."""
        scheme = _scheme(padding)
        spec = hash_spec(hash_name)
        if (data is None) == (digest is None):
            raise EncodingError("give exactly one of data or digest")
        if digest is None:
            assert data is not None
            digest = hashlib.new(spec.name, data).digest()
        if len(digest) != spec.digest_size:
            raise EncodingError(f"a {spec.name} digest is {spec.digest_size} bytes")
        salt = b""
        if scheme is Scheme.PSS:
            length = spec.digest_size if salt_length is None else salt_length
            if isinstance(length, bool) or not isinstance(length, int):
                raise EncodingError("PSS salt length must be an integer")
            if not 0 <= length <= MAX_SALT_BYTES:
                raise EncodingError(f"PSS salt length must be in 0..{MAX_SALT_BYTES}, not {length}")
            salt = os.urandom(length)
        elif salt_length:
            raise EncodingError("PKCS#1 v1.5 has no salt")
        return cls(scheme, spec.name, bytes(digest), salt)

    def representative(self, modulus_bits: int) -> int:
        """The integer ``x`` that is signed (RFC 8017 section 9)."""
        return encode(self.padding, self.hash_name, self.digest, modulus_bits, self.salt)


def _scheme(padding: Scheme | str) -> Scheme:
    if isinstance(padding, Scheme):
        return padding
    try:
        return Scheme(padding)
    except ValueError:
        raise EncodingError(
            f"unsupported padding {padding!r}; use one of {[s.value for s in Scheme]}"
        ) from None
