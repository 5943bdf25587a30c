"""Share files: one node's key share, encrypted at rest under a passphrase.

A share file is the only place a share ``s_i`` is ever written. It is sealed with
XChaCha20-Poly1305 under a key that Argon2id derives from the node's passphrase, and the
whole header (which names the key id, the epoch, the epoch id and the node index) is the
associated data, so a file copied to another node, used with another key, or kept from
an earlier epoch, does not open as the current one.

What an attacker who holds the file can and cannot do:

* They **cannot** read the share without the passphrase, short of guessing it: every
  guess costs one Argon2id evaluation at the limits the file was written with (choose a
  long random passphrase; :meth:`KdfLimits.moderate` is the default).
* They **can** run that offline guessing attack, as long as they like; the file carries
  what is needed to check a guess. Nothing here stops a weak passphrase from falling.
* They **can** read the public header: format version, key id, epoch, epoch id, node
  index, KDF limits.
* They **cannot** alter the file, relabel it for another node, key or epoch, or swap it
  for a file of another node or epoch, without the reader noticing (checksum, passphrase
  verifier, AEAD tag, key id, epoch, epoch id and index checked against what the reader
  expects).
* They **can** delete or damage it (keep backups), and can make a reader burn CPU and
  memory up to the bounds below by editing the KDF limits (the limits are bounded so a
  hostile header cannot ask for absurd amounts).

Python cannot wipe memory. The passphrase, the derived keys, the decrypted bytes and the
share's integer stay in memory until the garbage collector reuses that memory, and may
reach swap or core dumps; run nodes with swap encrypted and core dumps off. This module
does not pretend otherwise.

On-disk format, version 2 (all integers big-endian)::

    magic        11  b"ITTC-SHARE\\n"
    version       2  2
    kdf name    1+8  length-prefixed b"argon2id"
    opslimit      4
    memlimit      8
    salt         16
    key id       32  PublicParams.key_id_bytes
    epoch         8  PublicParams.epoch
    epoch id     32  PublicParams.epoch_id_bytes
    node index    2
    aead name  1+22  length-prefixed b"xchacha20poly1305-ietf"
    nonce        24
    ct length     4  length of the ciphertext that follows the header
    verifier     32  BLAKE2b-256, keyed with the verifier key, personalisation
                     b"ittc/share/vrfy", of magic..salt (the bytes that fix the
                     derived key): a mismatch means a wrong passphrase (or an edited
                     KDF field); anything else altered fails the AEAD instead
    checksum     32  unkeyed BLAKE2b-256, personalisation b"ittc/share/hdr", of
                     everything above: catches accidental damage before the KDF
    ciphertext       XChaCha20-Poly1305(AEAD key, nonce, plaintext, aad = header)

The plaintext repeats the key id (32 bytes), the epoch (8), the epoch id (32) and the
node index (2), then holds the share in ``ceil(share_bits / 8)`` bytes. Argon2id yields
64 bytes: the first 32 are the AEAD key, the last 32 the verifier key.

Version 1 (written before epochs existed) lacks the epoch and epoch id, in the header and
in the plaintext. It is still read, for a key at epoch 0 only: every share it can hold is
of epoch 0. Version 2 is what ittc writes.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
import struct
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
from nacl.pwhash import argon2id

from ittc.errors import (
    InsecureFileMode,
    IttcError,
    ParameterError,
    ShareFileCorrupt,
    ShareFileError,
    ShareFileFormatError,
    ShareFileMismatch,
    WrongPassphrase,
)
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import MAX_EPOCH, PublicParams
from ittc.storage.files import write_file_atomically

__all__ = [
    "FORMAT_VERSION",
    "LEGACY_VERSION",
    "MAX_FILE_SIZE",
    "MAX_MEMLIMIT",
    "MAX_OPSLIMIT",
    "KdfLimits",
    "ShareFileHeader",
    "new_passphrase",
    "read_passphrase_file",
    "read_share_file",
    "read_share_header",
    "write_passphrase_file",
    "write_share_file",
]

FORMAT_VERSION = 2
#: Still read (epoch-0 shares written before epochs existed); never written.
LEGACY_VERSION = 1
MAGIC = b"ITTC-SHARE\n"
KDF_NAME = "argon2id"
AEAD_NAME = "xchacha20poly1305-ietf"

#: Bounds a hostile header cannot exceed: checked before the KDF runs.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 4 * 1024**3
#: Largest share file read at all (a 16384-bit key's share file is under 9 KiB).
MAX_FILE_SIZE = 16 * 1024
#: Largest passphrase file read.
MAX_PASSPHRASE_FILE_SIZE = 4096

_SALT_LEN = argon2id.SALTBYTES  # 16
_NONCE_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_KEY_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
_TAG_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
_MAC_LEN = 32
_KEY_ID_LEN = 32
_EPOCH_ID_LEN = 32

_VERIFIER_PERSON = b"ittc/share/vrfy"
_CHECKSUM_PERSON = b"ittc/share/hdr"

_PREFIX = struct.Struct(">11sH")  # magic, version
#: What fixes the derived key (the passphrase verifier covers prefix and these)...
_KDF_FIELDS = struct.Struct(f">B{len(KDF_NAME)}sIQ{_SALT_LEN}s")
#: ...and what binds the file to its key, epoch and node (the AEAD covers the whole
#: header), by format version: key id, [epoch, epoch id,] index, cipher, nonce, length.
_BIND_FIELDS = {
    2: struct.Struct(f">{_KEY_ID_LEN}sQ{_EPOCH_ID_LEN}sHB{len(AEAD_NAME)}s{_NONCE_LEN}sI"),
    1: struct.Struct(f">{_KEY_ID_LEN}sHB{len(AEAD_NAME)}s{_NONCE_LEN}sI"),
}
_VERIFIED_LEN = _PREFIX.size + _KDF_FIELDS.size


def _header_len(version: int) -> int:
    return _VERIFIED_LEN + _BIND_FIELDS[version].size + _MAC_LEN + _MAC_LEN


def _plain_prefix_len(version: int) -> int:
    return _KEY_ID_LEN + (8 + _EPOCH_ID_LEN if version >= 2 else 0) + 2


@dataclass(frozen=True)
class KdfLimits:
    """Argon2id cost parameters: what each passphrase guess costs an attacker (and you)."""

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not (
            isinstance(self.opslimit, int)
            and argon2id.OPSLIMIT_MIN <= self.opslimit <= MAX_OPSLIMIT
        ):
            raise ParameterError(f"opslimit must be in {argon2id.OPSLIMIT_MIN}..{MAX_OPSLIMIT}")
        if not (
            isinstance(self.memlimit, int)
            and argon2id.MEMLIMIT_MIN <= self.memlimit <= MAX_MEMLIMIT
        ):
            raise ParameterError(f"memlimit must be in {argon2id.MEMLIMIT_MIN}..{MAX_MEMLIMIT}")

    @classmethod
    def moderate(cls) -> KdfLimits:
        """libsodium's MODERATE limits (256 MiB, 3 passes): the default."""
        return cls(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)

    @classmethod
    def sensitive(cls) -> KdfLimits:
        """libsodium's SENSITIVE limits (1 GiB, 4 passes): seconds per open, for cold storage."""
        return cls(argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)

    @classmethod
    def fast_for_tests(cls) -> KdfLimits:
        """TEST ONLY: the minimum limits, which make guessing the passphrase nearly free."""
        return cls(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)


@dataclass(frozen=True)
class ShareFileHeader:
    """The public part of a share file: readable without the passphrase.

    ``epoch`` and ``epoch_id`` are None in a version-1 file (an epoch-0 share)."""

    version: int
    key_id: str
    index: int
    kdf: KdfLimits
    epoch: int | None = None
    epoch_id: str | None = None
    kdf_name: str = KDF_NAME
    aead_name: str = AEAD_NAME

    @property
    def short_id(self) -> str:
        """The key id as :attr:`PublicParams.short_id` prints it."""
        return self.key_id[:16]


@dataclass(frozen=True)
class _Parsed:
    """Everything the reader needs from a file whose header checked out."""

    header: ShareFileHeader
    header_bytes: bytes
    salt: bytes
    nonce: bytes
    verifier: bytes
    ciphertext: bytes


# -- helpers -----------------------------------------------------------------------------


def _check_passphrase(passphrase: object) -> None:
    if not isinstance(passphrase, bytes) or not passphrase:
        raise ParameterError("the passphrase must be non-empty bytes")


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_MAC_LEN, person=_CHECKSUM_PERSON).digest()


def _verifier(verifier_key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(
        data, digest_size=_MAC_LEN, key=verifier_key, person=_VERIFIER_PERSON
    ).digest()


def _derive_keys(passphrase: bytes, salt: bytes, kdf: KdfLimits) -> tuple[bytes, bytes]:
    """Argon2id -> (AEAD key, verifier key). The only expensive step of reading."""
    try:
        material = argon2id.kdf(
            2 * _KEY_LEN, passphrase, salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit
        )
    except nacl.exceptions.CryptoError:
        raise ShareFileError(
            f"key derivation failed (is {kdf.memlimit} bytes of memory available?)"
        ) from None
    return material[:_KEY_LEN], material[_KEY_LEN:]


def _secret_width(params: PublicParams) -> int:
    return (params.share_bits + 7) // 8


def _ciphertext_len(params: PublicParams, version: int = FORMAT_VERSION) -> int:
    return _plain_prefix_len(version) + _secret_width(params) + _TAG_LEN


def _plain_prefix(params: PublicParams, index: int, version: int = FORMAT_VERSION) -> bytes:
    """What the plaintext repeats of the header before the share itself."""
    epoch = params.epoch.to_bytes(8, "big") + params.epoch_id_bytes if version >= 2 else b""
    return params.key_id_bytes + epoch + index.to_bytes(2, "big")


def _open_private(
    path: str | os.PathLike[str], what: str, limit: int, error: type[IttcError]
) -> bytes:
    """Read a small regular file that only its owner may access; never writes anything.

    The mode is checked on the opened descriptor, before reading, so the file checked is
    the file read.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {os.fspath(path)} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecureFileMode(
                f"{what} {os.fspath(path)} is accessible by group or other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); restrict it with: chmod 600 "
                f"{os.fspath(path)}"
            )
        if st.st_size > limit:
            raise error(
                f"{what} {os.fspath(path)} is too large ({st.st_size} bytes, at most {limit})"
            )
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise error(f"{what} {os.fspath(path)} is too large")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse(data: bytes, where: str) -> _Parsed:
    """Check a share file's structure and header checksum; no key derivation here."""
    if len(data) < _PREFIX.size or not data.startswith(MAGIC):
        raise ShareFileFormatError(f"{where} is not an ittc share file")
    _, version = _PREFIX.unpack_from(data)
    if version not in _BIND_FIELDS:
        raise ShareFileFormatError(
            f"{where} has unsupported share-file format version "
            f"{version} (this ittc reads versions {LEGACY_VERSION} and {FORMAT_VERSION})"
        )
    header_len = _header_len(version)
    if len(data) < header_len:
        raise ShareFileFormatError(f"{where} is truncated (header incomplete)")
    header_bytes = data[:header_len]
    body_end = header_len - _MAC_LEN
    if not hmac.compare_digest(_checksum(header_bytes[:body_end]), header_bytes[body_end:]):
        raise ShareFileCorrupt(f"{where} is damaged: its header checksum does not match")
    kdf_len, kdf_name, opslimit, memlimit, salt = _KDF_FIELDS.unpack_from(data, _PREFIX.size)
    bound = _BIND_FIELDS[version].unpack_from(data, _VERIFIED_LEN)
    if version >= 2:
        key_id, epoch, epoch_id, index, aead_len, aead_name, nonce, ct_len = bound
    else:
        key_id, index, aead_len, aead_name, nonce, ct_len = bound
        epoch, epoch_id = None, None
    if kdf_len != len(KDF_NAME) or kdf_name != KDF_NAME.encode():
        raise ShareFileFormatError(f"{where} uses an unsupported key derivation function")
    if aead_len != len(AEAD_NAME) or aead_name != AEAD_NAME.encode():
        raise ShareFileFormatError(f"{where} uses an unsupported cipher")
    if not argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT:
        raise ShareFileFormatError(
            f"{where} asks for opslimit {opslimit}, outside {argon2id.OPSLIMIT_MIN}..{MAX_OPSLIMIT}"
        )
    if not argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT:
        raise ShareFileFormatError(
            f"{where} asks for memlimit {memlimit} bytes, outside "
            f"{argon2id.MEMLIMIT_MIN}..{MAX_MEMLIMIT}"
        )
    if (
        not 1 <= index <= 0xFFFF
        or ct_len <= _plain_prefix_len(version) + _TAG_LEN
        or (epoch is not None and epoch > MAX_EPOCH)
    ):
        raise ShareFileFormatError(f"{where} has an invalid header")
    if len(data) != header_len + ct_len:
        state = "truncated" if len(data) < header_len + ct_len else "followed by extra bytes"
        raise ShareFileFormatError(
            f"{where} is {state} (ciphertext length does not match its header)"
        )
    header = ShareFileHeader(
        version=version,
        key_id=key_id.hex(),
        index=index,
        kdf=KdfLimits(opslimit, memlimit),
        epoch=epoch,
        epoch_id=None if epoch_id is None else epoch_id.hex(),
    )
    verifier = header_bytes[body_end - _MAC_LEN : body_end]
    return _Parsed(header, header_bytes, salt, nonce, verifier, data[header_len:])


def _load(path: str | os.PathLike[str]) -> _Parsed:
    data = _open_private(path, "share file", MAX_FILE_SIZE, ShareFileFormatError)
    return _parse(data, f"share file {os.fspath(path)}")


# -- public API --------------------------------------------------------------------------


def write_share_file(
    path: str | os.PathLike[str],
    share: KeyShare,
    passphrase: bytes,
    *,
    kdf: KdfLimits | None = None,
    overwrite: bool = False,
) -> None:
    """Encrypt ``share`` under ``passphrase`` and write it to ``path``, mode 0600, atomically.

    The file is created 0600 (never chmod-ed afterwards), written and fsynced under a
    temporary name in the same directory, then moved onto ``path`` and the directory
    fsynced; a crash leaves either the old file or the new one. An existing ``path`` is
    refused with :class:`FileExistsError` unless ``overwrite`` is true. On any error no
    temporary file is left behind.
    """
    _check_passphrase(passphrase)
    if not isinstance(share, KeyShare):
        raise ParameterError("write_share_file takes a KeyShare")
    kdf = KdfLimits.moderate() if kdf is None else kdf
    params = share.params
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(
            errno.EEXIST,
            "share file already exists (pass overwrite=True to replace it)",
            os.fspath(path),
        )

    salt = secrets.token_bytes(_SALT_LEN)
    nonce = secrets.token_bytes(_NONCE_LEN)
    width = _secret_width(params)
    fields = (
        _PREFIX.pack(MAGIC, FORMAT_VERSION)
        + _KDF_FIELDS.pack(len(KDF_NAME), KDF_NAME.encode(), kdf.opslimit, kdf.memlimit, salt)
        + _BIND_FIELDS[FORMAT_VERSION].pack(
            params.key_id_bytes,
            params.epoch,
            params.epoch_id_bytes,
            share.index,
            len(AEAD_NAME),
            AEAD_NAME.encode(),
            nonce,
            _ciphertext_len(params),
        )
    )
    aead_key, verifier_key = _derive_keys(passphrase, salt, kdf)
    body = fields + _verifier(verifier_key, fields[:_VERIFIED_LEN])
    header = body + _checksum(body)
    plaintext = _plain_prefix(params, share.index) + share.dangerously_export_secret().to_bytes(
        width, "big"
    )
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, header, nonce, aead_key
    )
    del plaintext  # drops the reference only: Python cannot wipe the bytes
    data = header + ciphertext
    assert len(data) == _header_len(FORMAT_VERSION) + _ciphertext_len(params)

    write_file_atomically(path, data, mode=0o600, overwrite=overwrite, what="share file")


def read_share_header(path: str | os.PathLike[str]) -> ShareFileHeader:
    """The public header of a share file, checked but not decrypted (no passphrase needed).

    Raises :class:`InsecureFileMode`, :class:`ShareFileFormatError` or
    :class:`ShareFileCorrupt`; ``OSError`` if the file cannot be opened.
    """
    return _load(path).header


def read_share_file(
    path: str | os.PathLike[str], params: PublicParams, index: int, passphrase: bytes
) -> KeyShare:
    """Decrypt node ``index``'s share of the key and epoch ``params`` from ``path``.

    Cheap checks first (mode, size, structure, checksum, key id, epoch, epoch id, node
    index, KDF bounds), then Argon2id, then the passphrase verifier, then the AEAD. A
    version-1 file is read only for a key at epoch 0. Never writes anything.
    Raises a distinct :class:`~ittc.errors.ShareFileError` subclass for each failure:
    :class:`InsecureFileMode`, :class:`ShareFileFormatError`, :class:`ShareFileCorrupt`,
    :class:`ShareFileMismatch`, :class:`WrongPassphrase`; ``OSError`` if the file cannot
    be opened.
    """
    _check_passphrase(passphrase)
    params.check_index(index)
    where = f"share file {os.fspath(path)}"
    parsed = _load(path)
    header = parsed.header
    if header.key_id != params.key_id:
        raise ShareFileMismatch(
            f"{where} holds a share of key {header.short_id}, not of key {params.short_id}"
        )
    if header.epoch is None and params.epoch != 0:
        raise ShareFileMismatch(
            f"{where} is a version-1 share file, which holds an epoch-0 share; the key "
            f"is at epoch {params.epoch}"
        )
    if header.epoch is not None and header.epoch != params.epoch:
        raise ShareFileMismatch(
            f"{where} holds a share of epoch {header.epoch}, not of epoch {params.epoch}"
        )
    if header.epoch_id is not None and header.epoch_id != params.epoch_id:
        raise ShareFileMismatch(
            f"{where} holds a share of another epoch {header.epoch} (epoch id "
            f"{header.epoch_id[:16]}, not {params.epoch_id[:16]})"
        )
    if header.index != index:
        raise ShareFileMismatch(
            f"{where} holds the share of node {header.index}, not of node {index}"
        )
    if len(parsed.ciphertext) != _ciphertext_len(params, header.version):
        raise ShareFileFormatError(f"{where} has the wrong length for this key's shares")

    aead_key, verifier_key = _derive_keys(passphrase, parsed.salt, header.kdf)
    expected = _verifier(verifier_key, parsed.header_bytes[:_VERIFIED_LEN])
    if not hmac.compare_digest(expected, parsed.verifier):
        raise WrongPassphrase(f"the passphrase does not open {where}")
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            parsed.ciphertext, parsed.header_bytes, parsed.nonce, aead_key
        )
    except nacl.exceptions.CryptoError:
        raise ShareFileCorrupt(
            f"{where} is damaged or was altered: it fails authentication"
        ) from None
    prefix = _plain_prefix(params, index, header.version)
    if not hmac.compare_digest(plaintext[: len(prefix)], prefix):
        raise ShareFileCorrupt(
            f"{where} is inconsistent: its sealed key id, epoch or node index differs from "
            "its header"
        )
    try:
        return KeyShare(params, index, int.from_bytes(plaintext[len(prefix) :], "big"))
    except ParameterError:
        raise ShareFileCorrupt(f"{where} holds a share value out of range for this key") from None


def read_passphrase_file(path: str | os.PathLike[str]) -> bytes:
    """The passphrase stored in ``path``, minus exactly one trailing ``\\n`` or ``\\r\\n``.

    Refuses a file that group or other users can access (:class:`InsecureFileMode`,
    checked before reading) and an empty passphrase (:class:`ParameterError`).
    """
    data = _open_private(path, "passphrase file", MAX_PASSPHRASE_FILE_SIZE, ParameterError)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ParameterError(f"passphrase file {os.fspath(path)} holds an empty passphrase")
    return data


def new_passphrase() -> bytes:
    """A fresh random passphrase: 256 bits from :mod:`secrets`, as 43 URL-safe characters
    (no guessing attack on a share file encrypted under it is feasible, KDF or not)."""
    return secrets.token_urlsafe(32).encode("ascii")


def write_passphrase_file(path: str | os.PathLike[str], passphrase: bytes) -> None:
    """Write ``passphrase`` and a newline to ``path`` (which must not exist), mode 0600
    from the moment it exists; :func:`read_passphrase_file` reads it back."""
    _check_passphrase(passphrase)
    if len(passphrase) + 1 > MAX_PASSPHRASE_FILE_SIZE or passphrase.endswith((b"\n", b"\r")):
        raise ParameterError("passphrase too long, or ends with a line break")
    write_file_atomically(path, passphrase + b"\n", mode=0o600, what="passphrase file")
