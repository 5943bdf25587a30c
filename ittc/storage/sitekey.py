"""Site-key files: a site's reshare keys (:class:`~ittc.lifecycle.SiteKey`), encrypted at
rest under the site's passphrase.

A site key is made at the site (``ittc site keygen``) and never leaves it unencrypted;
only its public half (:class:`~ittc.lifecycle.SiteIdentity`) is handed to the operator.
The file carries that public half in the clear, so ``ittc site show`` can print the
identity to hand over without the passphrase, and the whole header is the AEAD's
associated data, so an edited name or public key does not open.

What an attacker who holds the file can do is what they can do with a share file
(:mod:`ittc.storage.sharefile`): run an offline guessing attack on the passphrase at the
cost of one Argon2id evaluation per guess, read the public header, delete the file; not
read the keys or alter the file unnoticed.

On-disk format, version 1 (all integers big-endian)::

    magic         13  b"ITTC-SITEKEY\\n"
    version        2  1
    kdf name     1+8  length-prefixed b"argon2id"
    opslimit       4
    memlimit       8
    salt          16
    site name  1+1..63  length-prefixed, ASCII
    sign key      32  Ed25519 public key
    box key       32  X25519 public key
    nonce         24
    checksum      32  unkeyed BLAKE2b-256, personalisation b"ittc/sitekey/hdr", of
                      everything above: catches accidental damage before the KDF
    ciphertext  64+16  XChaCha20-Poly1305(Argon2id key, nonce, seeds, aad = header)

The seeds are the Ed25519 seed and the X25519 secret key (:data:`SEED_BYTES`). A wrong
passphrase and an altered file both fail the AEAD; the keys inside must match the public
halves in the header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct

import nacl.bindings
import nacl.exceptions

from ittc.errors import ParameterError, SiteKeyFileError, WrongPassphrase
from ittc.lifecycle.sites import SEED_BYTES, SiteIdentity, SiteKey, check_site_name
from ittc.storage.files import write_file_atomically
from ittc.storage.sharefile import (
    AEAD_NAME,
    KDF_NAME,
    MAX_MEMLIMIT,
    MAX_OPSLIMIT,
    KdfLimits,
    _check_passphrase,
    _derive_keys,
    _open_private,
)

__all__ = ["SITE_KEY_VERSION", "read_site_identity", "read_site_key", "write_site_key"]

SITE_KEY_VERSION = 1
MAGIC = b"ITTC-SITEKEY\n"
#: Largest site-key file read (a real one is under 300 bytes).
MAX_SITE_KEY_FILE = 1024
_PERSON = b"ittc/sitekey/hdr"
_PREFIX = struct.Struct(f">{len(MAGIC)}sH")
_KDF = struct.Struct(f">B{len(KDF_NAME)}sIQ16s")
_KEYS = struct.Struct(">32s32s24s")
_MAC = 32
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_TAG = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES

assert AEAD_NAME == "xchacha20poly1305-ietf" and _NONCE == 24


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_MAC, person=_PERSON).digest()


def _header(identity: SiteIdentity, kdf: KdfLimits, salt: bytes, nonce: bytes) -> bytes:
    name = identity.name.encode("ascii")
    body = (
        _PREFIX.pack(MAGIC, SITE_KEY_VERSION)
        + _KDF.pack(len(KDF_NAME), KDF_NAME.encode(), kdf.opslimit, kdf.memlimit, salt)
        + bytes([len(name)])
        + name
        + _KEYS.pack(identity.sign_key, identity.box_key, nonce)
    )
    return body + _checksum(body)


def write_site_key(
    path: str | os.PathLike[str],
    key: SiteKey,
    passphrase: bytes,
    *,
    kdf: KdfLimits | None = None,
) -> None:
    """Encrypt ``key`` under ``passphrase`` into a new file ``path`` (mode 0600, atomic;
    an existing file is never overwritten)."""
    _check_passphrase(passphrase)
    if not isinstance(key, SiteKey):
        raise ParameterError("write_site_key takes a SiteKey")
    kdf = KdfLimits.moderate() if kdf is None else kdf
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(_NONCE)
    header = _header(key.identity, kdf, salt, nonce)
    aead_key, _ = _derive_keys(passphrase, salt, kdf)
    seeds = key.dangerously_export_seeds()
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        seeds, header, nonce, aead_key
    )
    del seeds  # drops the reference only: Python cannot wipe the bytes
    write_file_atomically(path, header + ciphertext, mode=0o600, what="site-key file")


def _parse(data: bytes, where: str) -> tuple[SiteIdentity, KdfLimits, bytes, bytes, bytes, bytes]:
    """(identity, kdf, salt, nonce, header bytes, ciphertext) of a well-formed file."""
    if not data.startswith(MAGIC) or len(data) < _PREFIX.size + _KDF.size + 1:
        raise SiteKeyFileError(f"{where} is not an ittc site-key file")
    _, version = _PREFIX.unpack_from(data)
    if version != SITE_KEY_VERSION:
        raise SiteKeyFileError(
            f"{where} has unsupported site-key format version {version} "
            f"(this ittc reads version {SITE_KEY_VERSION})"
        )
    at = _PREFIX.size
    kdf_len, kdf_name, opslimit, memlimit, salt = _KDF.unpack_from(data, at)
    at += _KDF.size
    name_len = data[at]
    at += 1
    header_len = at + name_len + _KEYS.size + _MAC
    if len(data) != header_len + SEED_BYTES + _TAG:
        raise SiteKeyFileError(f"{where} has the wrong length (truncated or extended)")
    body_end = header_len - _MAC
    if not hmac.compare_digest(_checksum(data[:body_end]), data[body_end:header_len]):
        raise SiteKeyFileError(f"{where} is damaged: its header checksum does not match")
    if kdf_len != len(KDF_NAME) or kdf_name != KDF_NAME.encode():
        raise SiteKeyFileError(f"{where} uses an unsupported key derivation function")
    if not (1 <= opslimit <= MAX_OPSLIMIT and 1 <= memlimit <= MAX_MEMLIMIT):
        raise SiteKeyFileError(f"{where} asks for key-derivation limits out of range")
    try:
        kdf = KdfLimits(opslimit, memlimit)
        name = check_site_name(data[at : at + name_len].decode("ascii"))
        sign_key, box_key, nonce = _KEYS.unpack_from(data, at + name_len)
        identity = SiteIdentity(name, sign_key, box_key)
    except (ParameterError, UnicodeDecodeError):
        raise SiteKeyFileError(f"{where} has an invalid header") from None
    return identity, kdf, salt, nonce, data[:header_len], data[header_len:]


def _load(
    path: str | os.PathLike[str],
) -> tuple[SiteIdentity, KdfLimits, bytes, bytes, bytes, bytes]:
    where = f"site-key file {os.fspath(path)}"
    return _parse(_open_private(path, "site-key file", MAX_SITE_KEY_FILE, SiteKeyFileError), where)


def read_site_identity(path: str | os.PathLike[str]) -> SiteIdentity:
    """The public half a site-key file names (no passphrase needed; not authenticated
    until the file is opened with :func:`read_site_key`)."""
    return _load(path)[0]


def read_site_key(path: str | os.PathLike[str], passphrase: bytes) -> SiteKey:
    """Decrypt the site key in ``path``. Raises :class:`WrongPassphrase` (the passphrase
    does not open it, or it was altered), :class:`SiteKeyFileError`,
    :class:`~ittc.errors.InsecureFileMode`, or ``OSError``."""
    _check_passphrase(passphrase)
    where = f"site-key file {os.fspath(path)}"
    identity, kdf, salt, nonce, header, ciphertext = _load(path)
    aead_key, _ = _derive_keys(passphrase, salt, kdf)
    try:
        seeds = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, header, nonce, aead_key
        )
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase(
            f"the passphrase does not open {where} (or the file was altered)"
        ) from None
    key = SiteKey.from_seeds(identity.name, seeds)
    del seeds
    if key.identity != identity:
        raise SiteKeyFileError(f"{where} is inconsistent: its keys do not match its header")
    return key
