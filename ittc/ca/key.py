"""The cluster as a ``cryptography`` private key.

:class:`ThresholdRSAPrivateKey` is an ``rsa.RSAPrivateKey``: hand it to
``x509.CertificateBuilder.sign``, ``CertificateRevocationListBuilder.sign``,
``ocsp.OCSPResponseBuilder.sign`` or call ``sign`` yourself, and the signature is made by
``k`` nodes of the cluster. ``cryptography``'s builders call the key's ``sign`` with the
encoded to-be-signed bytes, so they work unchanged.

What a key in a file could do and this one refuses: ``decrypt`` (the cluster is never a
decryption oracle: nodes only sign encodings they build themselves) and
``private_numbers``/``private_bytes`` (no one holds the key to export).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as apadding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    KeySerializationEncryption,
    PrivateFormat,
)

from ittc.combiner import SyncClusterClient
from ittc.config import ClusterFile
from ittc.errors import OperationRefused, ParameterError, UnsupportedHash
from ittc.scheme.encoding import HASHES, MAX_SALT_BYTES, Scheme, SignItem, hash_spec

__all__ = ["OperationRefused", "ThresholdRSAPrivateKey", "sign_item_for"]


def _hash_name(algorithm: hashes.HashAlgorithm) -> str:
    """The cluster's name for ``algorithm``; ``cryptography``'s own error for others."""
    name = algorithm.name
    if name not in HASHES:
        raise UnsupportedHash(f"the cluster signs with SHA-256, SHA-384 or SHA-512, not {name}")
    return name


def sign_item_for(
    data: bytes,
    padding: apadding.AsymmetricPadding,
    algorithm: hashes.HashAlgorithm | Prehashed,
    modulus_bits: int,
    salt: bytes | None = None,
) -> SignItem:
    """Translate ``cryptography``'s ``sign(data, padding, algorithm)`` into a :class:`SignItem`."""
    if isinstance(algorithm, Prehashed):
        hash_name = _hash_name(algorithm._algorithm)
        digest = bytes(data)
        if len(digest) != algorithm.digest_size:
            raise ParameterError(f"a prehashed {hash_name} digest is {algorithm.digest_size} bytes")
    else:
        hash_name = _hash_name(algorithm)
        h = hashes.Hash(algorithm)
        h.update(data)
        digest = h.finalize()
    if isinstance(padding, apadding.PKCS1v15):
        return SignItem(Scheme.PKCS1V15, hash_name, digest)
    if isinstance(padding, apadding.PSS):
        mgf = padding._mgf
        if not isinstance(mgf, apadding.MGF1) or _hash_name(mgf._algorithm) != hash_name:
            raise ParameterError("PSS through the cluster uses MGF1 with the signature's hash")
        size = hash_spec(hash_name).digest_size
        length = padding._salt_length
        if isinstance(length, apadding._DigestLength):
            salt_len = size
        elif isinstance(length, apadding._MaxLength):
            salt_len = min((modulus_bits - 1 + 7) // 8 - size - 2, MAX_SALT_BYTES)
        elif isinstance(length, int):
            salt_len = length
        else:
            raise ParameterError("PSS salt length AUTO is for verifying, not signing")
        return SignItem(
            Scheme.PSS, hash_name, digest, salt if salt is not None else os.urandom(salt_len)
        )
    raise ParameterError(f"unsupported padding {padding.name!r}: use PKCS1v15 or PSS")


class ThresholdRSAPrivateKey(rsa.RSAPrivateKey):
    """An RSA private key whose every signature is made by the cluster."""

    def __init__(self, client: SyncClusterClient) -> None:
        self._client = client
        self._public = client.params.public_key()

    @classmethod
    def open(cls, cluster: ClusterFile | str | Path, **options: Any) -> ThresholdRSAPrivateKey:
        """Connect to the cluster named by a cluster file (or folder)."""
        return cls(SyncClusterClient(cluster, **options))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ThresholdRSAPrivateKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        p = self._client.params
        return f"<ThresholdRSAPrivateKey {p.short_id}: {p.bits}-bit, k={p.k} of n={p.n}>"

    # -- the RSAPrivateKey interface -------------------------------------------------

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(
        self,
        data: bytes,
        padding: apadding.AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo,
    ) -> bytes:
        if isinstance(algorithm, NoDigestInfo):
            raise OperationRefused(
                "the cluster signs only complete encodings it builds itself "
                "(NoDigestInfo would make it a raw RSA oracle)"
            )
        item = sign_item_for(data, padding, algorithm, self.key_size)
        return self._client.sign_items([item])[0]

    def decrypt(self, ciphertext: bytes, padding: apadding.AsymmetricPadding) -> NoReturn:
        raise OperationRefused(
            "a threshold key never decrypts: its nodes only sign encodings they build themselves"
        )

    def private_numbers(self) -> NoReturn:
        raise OperationRefused("a threshold key cannot be exported: no one holds it")

    def private_bytes(
        self,
        encoding: Encoding,
        format: PrivateFormat,
        encryption_algorithm: KeySerializationEncryption,
    ) -> NoReturn:
        raise OperationRefused("a threshold key cannot be exported: no one holds it")

    def __copy__(self) -> ThresholdRSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ThresholdRSAPrivateKey:
        return self
