"""Site keys: each site's long-term key pair for resharing, made at the site.

A site signs everything it says in a reshare with an Ed25519 key and receives private
values sealed to an X25519 key. Both are made where they are used; only the public halves
(a :class:`SiteIdentity`) leave the site, into the cluster configuration and the plans.
A new site enrolls by handing over its identity, so its first share is sealed to it.

:class:`SiteKey` is a secret type: no key bytes in its ``repr``, no pickling or copying,
and its seeds leave it only through :meth:`SiteKey.dangerously_export_seeds`, for the
encrypted file that keeps them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import nacl.exceptions
import nacl.public
import nacl.signing

from ittc.errors import EnvelopeError, ParameterError

__all__ = ["SEED_BYTES", "SiteIdentity", "SiteKey", "check_site_name", "encode_fields"]

#: A site key's exported form: the Ed25519 seed, then the X25519 secret key.
SEED_BYTES = 64
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def check_site_name(name: object) -> str:
    """A site name: 1-63 characters of ``a-z``, ``0-9``, ``.``, ``-``; starts alphanumeric."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ParameterError(f"invalid site name {name!r}")
    return name


def encode_fields(*fields: bytes | str | int) -> bytes:
    """Length-prefixed fields (strings as UTF-8, integers as 8 bytes): one meaning per byte
    string, so no two different messages sign alike."""
    out = bytearray()
    for f in fields:
        raw = (
            f.encode()
            if isinstance(f, str)
            else f.to_bytes(8, "big")
            if isinstance(f, int)
            else bytes(f)
        )
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


@dataclass(frozen=True)
class SiteIdentity:
    """A site's public halves: its name, Ed25519 verify key and X25519 box key."""

    name: str
    sign_key: bytes
    box_key: bytes

    def __post_init__(self) -> None:
        check_site_name(self.name)
        for what, key in (("sign", self.sign_key), ("box", self.box_key)):
            if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
                raise ParameterError(f"site {self.name}: {what} key must be {_KEY_BYTES} bytes")

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the name and both keys, hex: what an operator compares by voice."""
        return hashlib.sha256(
            encode_fields(b"ittc/v1/site", self.name, self.sign_key, self.box_key)
        ).hexdigest()

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`EnvelopeError` naming this site unless ``signature`` is its."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise EnvelopeError(self.name, "malformed signature")
        try:
            nacl.signing.VerifyKey(self.sign_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            raise EnvelopeError(self.name, "signature does not verify") from None

    def to_dict(self) -> dict[str, str]:
        return {"site": self.name, "sign_key": self.sign_key.hex(), "box_key": self.box_key.hex()}

    @classmethod
    def from_dict(cls, data: Any) -> SiteIdentity:
        if not isinstance(data, dict) or set(data) != {"site", "sign_key", "box_key"}:
            raise ParameterError("a site identity has exactly: site, sign_key, box_key")
        try:
            return cls(
                data["site"], bytes.fromhex(data["sign_key"]), bytes.fromhex(data["box_key"])
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise ParameterError(f"malformed site identity: {exc}") from None


class SiteKey:
    """One site's secret keys. Made at the site; never leaves it unencrypted."""

    __slots__ = ("name", "_signing", "_box")

    def __init__(
        self, name: str, signing: nacl.signing.SigningKey, box: nacl.public.PrivateKey
    ) -> None:
        self.name = check_site_name(name)
        self._signing = signing
        self._box = box

    @classmethod
    def generate(cls, name: str) -> SiteKey:
        return cls(name, nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    @classmethod
    def from_seeds(cls, name: str, seeds: bytes) -> SiteKey:
        if not isinstance(seeds, bytes) or len(seeds) != SEED_BYTES:
            raise ParameterError(f"a site key is {SEED_BYTES} bytes")
        return cls(
            name,
            nacl.signing.SigningKey(seeds[:_KEY_BYTES]),
            nacl.public.PrivateKey(seeds[_KEY_BYTES:]),
        )

    def dangerously_export_seeds(self) -> bytes:
        """Both secret keys, for the encrypted site-key file and nothing else."""
        return bytes(self._signing) + bytes(self._box)

    @property
    def identity(self) -> SiteIdentity:
        return SiteIdentity(self.name, bytes(self._signing.verify_key), bytes(self._box.public_key))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing.sign(message).signature)

    def box_secret(self) -> nacl.public.PrivateKey:
        """The X25519 key, for :mod:`ittc.lifecycle.envelope` only."""
        return self._box

    def __repr__(self) -> str:
        return f"<SiteKey {self.name} {self.identity.fingerprint[:16]}>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("SiteKey holds secrets and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> NoReturn:
        raise TypeError("SiteKey cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("SiteKey cannot be copied")
