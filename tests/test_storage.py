"""Share files at rest: they round-trip, and every way a file can be wrong fails distinctly.

All tests use the test-only KDF limits; the on-disk layout below is written out here
independently of ``ittc.storage``, so a change of format shows up as a failing test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import stat
import struct
from collections.abc import Callable
from typing import Any

import pytest

from ittc import storage
from ittc.errors import (
    InsecureFileMode,
    ParameterError,
    ShareFileCorrupt,
    ShareFileError,
    ShareFileFormatError,
    ShareFileMismatch,
    WrongPassphrase,
)
from ittc.scheme import dealer
from ittc.scheme.keyshare import KeyShare
from ittc.storage import (
    KdfLimits,
    read_passphrase_file,
    read_share_file,
    read_share_header,
    sharefile,
    write_share_file,
)
from tests.conftest import VectorKey, load_vectors

FAST = KdfLimits.fast_for_tests()
PASSPHRASE = b"Tr0ub4dor&3-horse-battery-staple"
WRONG = b"Tr0ub4dor&3-horse-battery-stapl3"

# Format version 2, byte offsets (see the module docstring of ittc.storage.sharefile).
VERSION_AT = 11
KDF_NAME_AT = 13
OPSLIMIT_AT = 22
MEMLIMIT_AT = 26
SALT_AT = 34
KEY_ID_AT = 50
EPOCH_AT = 82
EPOCH_ID_AT = 90
INDEX_AT = 122
AEAD_NAME_AT = 124
NONCE_AT = 147
CT_LEN_AT = 171
VERIFIER_AT = 175
CHECKSUM_AT = 207
HEADER_LEN = 239
#: The plaintext before the share: key id, epoch, epoch id, index.
PLAIN_PREFIX = 32 + 8 + 32 + 2
SECRET_WIDTH = (load_vectors()["params"]["share_bits"] + 7) // 8
FILE_LEN = HEADER_LEN + PLAIN_PREFIX + SECRET_WIDTH + 16


# -- helpers ---------------------------------------------------------------------------


def write(
    directory: pathlib.Path,
    share: KeyShare,
    name: str | None = None,
    passphrase: bytes = PASSPHRASE,
) -> pathlib.Path:
    path = directory / (name or f"node{share.index}.share")
    write_share_file(path, share, passphrase, kdf=FAST)
    return path


def put_bytes(path: pathlib.Path, data: bytes, mode: int = 0o600) -> pathlib.Path:
    """Create ``path`` holding ``data`` with ``mode`` from creation (no umask surprises)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path


def reseal(data: bytes) -> bytes:
    """Recompute the unkeyed header checksum, as an attacker editing the header would."""
    body = data[:CHECKSUM_AT]
    digest = hashlib.blake2b(body, digest_size=32, person=b"ittc/share/hdr").digest()
    return body + digest + data[HEADER_LEN:]


def patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def snapshot(path: pathlib.Path) -> tuple[bytes, int, int, list[str]]:
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_mode, sorted(os.listdir(path.parent))


def secret_forms(share: KeyShare) -> list[str]:
    s = share.dangerously_export_secret()
    return [str(s), format(s, "x"), format(s, "X")]


def assert_no_secrets(text: str, *shares: KeyShare) -> None:
    assert PASSPHRASE.decode() not in text
    assert WRONG.decode() not in text
    for share in shares:
        for form in secret_forms(share):
            # Any 24-digit run of the share would be a leak; the ids and sizes are shorter.
            assert form[:24] not in text and form[-24:] not in text


def refused(
    path: pathlib.Path,
    exc: type[BaseException] | tuple[type[BaseException], ...],
    call: Callable[[], Any],
    *shares: KeyShare,
) -> BaseException:
    """``call`` raises ``exc``, leaves the file untouched, and says nothing secret."""
    before = snapshot(path)
    with pytest.raises(exc) as info:
        call()
    assert snapshot(path) == before
    assert_no_secrets(str(info.value) + repr(info.value), *shares)
    return info.value


Arm = Callable[[], None]


def _kdf_must_not_run(*args: object) -> tuple[bytes, bytes]:
    raise AssertionError("Argon2id ran, but this failure must be caught before it")


@pytest.fixture
def forbid_kdf(monkeypatch: pytest.MonkeyPatch) -> Arm:
    """Call the result to fail the test if the expensive key derivation runs from then on."""
    return lambda: monkeypatch.setattr(sharefile, "_derive_keys", _kdf_must_not_run)


@pytest.fixture(scope="module")
def pristine(vkey: VectorKey, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Node 1's share file, written once for the byte-flipping tests."""
    path = write(tmp_path_factory.mktemp("pristine"), vkey.shares[0])
    data = path.read_bytes()
    assert len(data) == FILE_LEN
    return data


@pytest.fixture(scope="module")
def other_key() -> dealer.DealtKey:
    return dealer.generate(512, insecure_allow_small_modulus_for_tests=True)


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("index", [1, 2, 3, 5])
def test_round_trip(vkey: VectorKey, tmp_path: pathlib.Path, index: int) -> None:
    share = vkey.shares[index - 1]
    path = write(tmp_path, share)
    before = snapshot(path)
    loaded = read_share_file(path, vkey.params, index, PASSPHRASE)
    assert snapshot(path) == before  # reading writes nothing, not even a temp file
    assert loaded == share
    assert loaded != vkey.shares[index % 5]
    assert loaded.index == index and loaded.params == vkey.params
    loaded.self_test()


def test_round_trip_other_key_size(other_key: dealer.DealtKey, tmp_path: pathlib.Path) -> None:
    share = other_key.shares[1]
    path = write(tmp_path, share)
    assert (
        len(path.read_bytes()) == HEADER_LEN + PLAIN_PREFIX + other_key.params.share_bits // 8 + 16
    )
    loaded = read_share_file(path, other_key.params, 2, PASSPHRASE)
    assert loaded == share
    loaded.self_test()


def test_header_is_readable_without_passphrase(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, vkey.shares[3])
    header = read_share_header(path)
    assert header.version == 2
    assert (header.epoch, header.epoch_id) == (0, vkey.params.epoch_id)
    assert header.key_id == vkey.params.key_id
    assert header.short_id == vkey.params.short_id
    assert header.index == 4
    assert header.kdf == FAST
    assert (header.kdf_name, header.aead_name) == ("argon2id", "xchacha20poly1305-ietf")
    data = path.read_bytes()
    assert data[:VERSION_AT] == b"ITTC-SHARE\n"
    assert data[KEY_ID_AT:EPOCH_AT] == vkey.params.key_id_bytes
    assert struct.unpack(">Q", data[EPOCH_AT:EPOCH_ID_AT]) == (0,)
    assert data[EPOCH_ID_AT:INDEX_AT] == vkey.params.epoch_id_bytes
    assert struct.unpack(">H", data[INDEX_AT:AEAD_NAME_AT]) == (4,)
    assert struct.unpack(">I", data[CT_LEN_AT:VERIFIER_AT]) == (FILE_LEN - HEADER_LEN,)


def test_default_kdf_is_moderate(
    vkey: VectorKey, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[KdfLimits] = []
    real = sharefile._derive_keys

    def cheap(passphrase: bytes, salt: bytes, kdf: KdfLimits) -> tuple[bytes, bytes]:
        asked.append(kdf)
        return real(passphrase, salt, FAST)

    monkeypatch.setattr(sharefile, "_derive_keys", cheap)
    path = tmp_path / "node1.share"
    write_share_file(path, vkey.shares[0], PASSPHRASE)
    assert asked == [KdfLimits.moderate()]
    assert read_share_header(path).kdf == KdfLimits.moderate()


def test_kdf_limits() -> None:
    import nacl.pwhash.argon2id as a

    assert KdfLimits.moderate() == KdfLimits(a.OPSLIMIT_MODERATE, a.MEMLIMIT_MODERATE)
    assert KdfLimits.sensitive() == KdfLimits(a.OPSLIMIT_SENSITIVE, a.MEMLIMIT_SENSITIVE)
    assert FAST.memlimit < KdfLimits.moderate().memlimit
    for ops, mem in [(0, a.MEMLIMIT_MIN), (1, 0), (10**6, a.MEMLIMIT_MIN), (1, 2**40)]:
        with pytest.raises(ParameterError):
            KdfLimits(ops, mem)


# -- what is written -------------------------------------------------------------------


def test_mode_is_0600_from_creation(
    vkey: VectorKey, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("the writer must not chmod: the mode is set at creation")

    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, no_chmod)
    old = os.umask(0)
    try:
        path = write(tmp_path, vkey.shares[0])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["node1.share"]


def test_file_holds_no_plaintext(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    share = vkey.shares[0]
    data = write(tmp_path, share).read_bytes()
    secret = share.dangerously_export_secret()
    assert secret.to_bytes(SECRET_WIDTH, "big")[-24:] not in data
    assert secret.to_bytes(SECRET_WIDTH, "little")[:24] not in data
    for form in secret_forms(share):
        assert form[:24].encode() not in data
    assert PASSPHRASE not in data


def test_two_writes_differ(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    a = write(tmp_path, vkey.shares[0], "a").read_bytes()
    b = write(tmp_path, vkey.shares[0], "b").read_bytes()
    assert a[SALT_AT:KEY_ID_AT] != b[SALT_AT:KEY_ID_AT]  # fresh salt
    assert a[NONCE_AT:CT_LEN_AT] != b[NONCE_AT:CT_LEN_AT]  # fresh nonce
    assert a[HEADER_LEN:] != b[HEADER_LEN:]


def test_write_refuses_to_overwrite(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, vkey.shares[0])
    before = snapshot(path)
    with pytest.raises(FileExistsError):
        write_share_file(path, vkey.shares[0], WRONG, kdf=FAST)
    assert snapshot(path) == before
    assert sorted(os.listdir(tmp_path)) == ["node1.share"]


def test_write_overwrites_when_asked(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, vkey.shares[0])
    write_share_file(path, vkey.shares[0], WRONG, kdf=FAST, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["node1.share"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_share_file(path, vkey.params, 1, WRONG) == vkey.shares[0]
    with pytest.raises(WrongPassphrase):
        read_share_file(path, vkey.params, 1, PASSPHRASE)


def test_write_loses_a_race_without_clobbering(
    vkey: VectorKey, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that appears after the existence check is still not overwritten."""
    path = tmp_path / "node1.share"
    real = sharefile._derive_keys

    def racing(passphrase: bytes, salt: bytes, kdf: KdfLimits) -> tuple[bytes, bytes]:
        path.write_bytes(b"someone else's file")
        return real(passphrase, salt, kdf)

    monkeypatch.setattr(sharefile, "_derive_keys", racing)
    with pytest.raises(FileExistsError):
        write_share_file(path, vkey.shares[0], PASSPHRASE, kdf=FAST)
    assert path.read_bytes() == b"someone else's file"
    assert sorted(os.listdir(tmp_path)) == ["node1.share"]


def test_write_without_hard_links(
    vkey: VectorKey, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise PermissionError("this file system has no hard links")

    monkeypatch.setattr(os, "link", no_link)
    path = write(tmp_path, vkey.shares[0])
    assert sorted(os.listdir(tmp_path)) == ["node1.share"]
    assert read_share_file(path, vkey.params, 1, PASSPHRASE) == vkey.shares[0]


@pytest.mark.parametrize(
    ("failing", "new_file"),
    [("write", True), ("fsync", True), ("write", False), ("fsync", False), ("replace", False)],
)
def test_failed_write_leaves_nothing(
    vkey: VectorKey,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
    new_file: bool,
) -> None:
    """A failing write leaves no temp file, and an existing file as it was."""
    existing = write(tmp_path, vkey.shares[1], "node2.share")
    before = snapshot(existing)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    for target, overwrite in [(tmp_path / "node1.share", False) if new_file else (existing, True)]:
        with pytest.raises(OSError, match="No space"):
            write_share_file(target, vkey.shares[1], PASSPHRASE, kdf=FAST, overwrite=overwrite)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["node2.share"]
    assert snapshot(existing) == before


@pytest.mark.parametrize("bad", [b"", "a str passphrase", None, bytearray(b"x")])
def test_passphrase_must_be_nonempty_bytes(
    vkey: VectorKey, tmp_path: pathlib.Path, bad: Any
) -> None:
    path = tmp_path / "node1.share"
    with pytest.raises(ParameterError):
        write_share_file(path, vkey.shares[0], bad, kdf=FAST)
    assert os.listdir(tmp_path) == []
    path = write(tmp_path, vkey.shares[0])
    refused(path, ParameterError, lambda: read_share_file(path, vkey.params, 1, bad))


@pytest.mark.parametrize("index", [0, 6, -1])
def test_read_checks_index(vkey: VectorKey, tmp_path: pathlib.Path, index: int) -> None:
    path = write(tmp_path, vkey.shares[0])
    refused(path, ParameterError, lambda: read_share_file(path, vkey.params, index, PASSPHRASE))


# -- failures when reading -------------------------------------------------------------


def test_wrong_passphrase(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, vkey.shares[0])
    err = refused(
        path, WrongPassphrase, lambda: read_share_file(path, vkey.params, 1, WRONG), vkey.shares[0]
    )
    assert str(path) in str(err)


@pytest.mark.parametrize("pos", range(FILE_LEN))
def test_every_flipped_byte_is_refused(
    vkey: VectorKey,
    tmp_path: pathlib.Path,
    pristine: bytes,
    pos: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = bytearray(pristine)
    data[pos] ^= 0x01
    path = put_bytes(tmp_path / "node1.share", bytes(data))
    if pos < HEADER_LEN:
        # Header damage is caught by structure or checksum, before the KDF.
        monkeypatch.setattr(sharefile, "_derive_keys", _kdf_must_not_run)
        expected: tuple[type[ShareFileError], ...] = (ShareFileCorrupt, ShareFileFormatError)
    else:
        expected = (ShareFileCorrupt,)  # the passphrase is right; the AEAD tag fails
    err = refused(
        path,
        ShareFileError,
        lambda: read_share_file(path, vkey.params, 1, PASSPHRASE),
        vkey.shares[0],
    )
    assert isinstance(err, expected)


@pytest.mark.parametrize(
    "pos",
    [
        0,
        VERSION_AT + 1,
        KDF_NAME_AT,
        OPSLIMIT_AT + 3,
        MEMLIMIT_AT,
        SALT_AT + 5,
        KEY_ID_AT,
        INDEX_AT + 1,
        AEAD_NAME_AT + 4,
        NONCE_AT + 23,
        CT_LEN_AT + 3,
        VERIFIER_AT,
        CHECKSUM_AT + 31,
        HEADER_LEN,
        HEADER_LEN + 33,
        FILE_LEN - 17,
        FILE_LEN - 1,
    ],
)
def test_header_checks_catch_whole_byte_damage(
    tmp_path: pathlib.Path, pristine: bytes, pos: int, forbid_kdf: Arm
) -> None:
    """Without a passphrase, the header reader catches damage to the header itself."""
    data = bytearray(pristine)
    data[pos] ^= 0xFF
    path = put_bytes(tmp_path / "node1.share", bytes(data))
    if pos < HEADER_LEN:
        forbid_kdf()
        refused(path, (ShareFileCorrupt, ShareFileFormatError), lambda: read_share_header(path))
    else:
        assert read_share_header(path).index == 1  # the ciphertext is the AEAD's job


@pytest.mark.parametrize(
    "length",
    [
        0,
        1,
        VERSION_AT,
        VERSION_AT + 1,
        KEY_ID_AT,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        FILE_LEN - 16,
        FILE_LEN - 1,
    ],
)
def test_truncated(
    vkey: VectorKey, tmp_path: pathlib.Path, pristine: bytes, length: int, forbid_kdf: Arm
) -> None:
    path = put_bytes(tmp_path / "node1.share", pristine[:length])
    forbid_kdf()
    refused(path, ShareFileFormatError, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE))
    refused(path, ShareFileFormatError, lambda: read_share_header(path))


def test_extra_bytes(
    vkey: VectorKey, tmp_path: pathlib.Path, pristine: bytes, forbid_kdf: Arm
) -> None:
    path = put_bytes(tmp_path / "node1.share", pristine + b"\n")
    forbid_kdf()
    err = refused(
        path, ShareFileFormatError, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE)
    )
    assert "extra bytes" in str(err)


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello world\n",
        b"\x00" * 500,
        bytes(range(256)) * 2,
        b"-----BEGIN PRIVATE KEY-----\nMIIE...\n",
        b"ITTC-SHARE",
        b"ITTC-SHARE\n",
        b"ITTC-SHARE\r\n\x00\x01" + b"\x00" * 500,
    ],
)
def test_garbage(vkey: VectorKey, tmp_path: pathlib.Path, garbage: bytes, forbid_kdf: Arm) -> None:
    path = put_bytes(tmp_path / "node1.share", garbage)
    forbid_kdf()
    refused(path, ShareFileFormatError, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE))


def test_right_magic_then_garbage_fails_the_checksum(
    vkey: VectorKey, tmp_path: pathlib.Path, forbid_kdf: Arm
) -> None:
    path = put_bytes(tmp_path / "node1.share", b"ITTC-SHARE\n\x00\x01" + b"\xa5" * 500)
    forbid_kdf()
    refused(path, ShareFileCorrupt, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE))


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_unknown_version(
    vkey: VectorKey, tmp_path: pathlib.Path, pristine: bytes, version: int, forbid_kdf: Arm
) -> None:
    # Resealed so that only the version number is wrong.
    data = reseal(patch(pristine, VERSION_AT, struct.pack(">H", version)))
    path = put_bytes(tmp_path / "node1.share", data)
    forbid_kdf()
    err = refused(
        path, ShareFileFormatError, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE)
    )
    assert f"version {version}" in str(err)
    refused(path, ShareFileFormatError, lambda: read_share_header(path))


def test_file_of_another_node(vkey: VectorKey, tmp_path: pathlib.Path, forbid_kdf: Arm) -> None:
    path = write(tmp_path, vkey.shares[1])
    forbid_kdf()
    err = refused(
        path,
        ShareFileMismatch,
        lambda: read_share_file(path, vkey.params, 1, PASSPHRASE),
        vkey.shares[1],
    )
    assert "node 2" in str(err) and "node 1" in str(err)


def test_file_of_another_key(
    vkey: VectorKey, other_key: dealer.DealtKey, tmp_path: pathlib.Path, forbid_kdf: Arm
) -> None:
    path = write(tmp_path, other_key.shares[0])
    path2 = write(tmp_path, vkey.shares[0], "mine.share")
    forbid_kdf()
    err = refused(
        path,
        ShareFileMismatch,
        lambda: read_share_file(path, vkey.params, 1, PASSPHRASE),
        other_key.shares[0],
    )
    assert other_key.params.short_id in str(err) and vkey.params.short_id in str(err)
    path = path2
    err = refused(
        path,
        ShareFileMismatch,
        lambda: read_share_file(path, other_key.params, 1, PASSPHRASE),
        vkey.shares[0],
    )
    assert other_key.params.short_id in str(err) and vkey.params.short_id in str(err)


def test_swapped_files(vkey: VectorKey, tmp_path: pathlib.Path, forbid_kdf: Arm) -> None:
    one = write(tmp_path, vkey.shares[0])
    two = write(tmp_path, vkey.shares[1])
    os.rename(one, tmp_path / "tmp")
    os.rename(two, one)
    os.rename(tmp_path / "tmp", two)
    forbid_kdf()
    err = refused(one, ShareFileMismatch, lambda: read_share_file(one, vkey.params, 1, PASSPHRASE))
    assert "node 2" in str(err)
    err = refused(two, ShareFileMismatch, lambda: read_share_file(two, vkey.params, 2, PASSPHRASE))
    assert "node 1" in str(err)


def test_relabelled_file_fails_authentication(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    """Node 2's file, edited to claim node 1 (checksum redone): the AEAD refuses it."""
    data = write(tmp_path, vkey.shares[1]).read_bytes()
    path = put_bytes(tmp_path / "node1.share", reseal(patch(data, INDEX_AT, b"\x00\x01")))
    assert read_share_header(path).index == 1
    refused(
        path,
        ShareFileCorrupt,
        lambda: read_share_file(path, vkey.params, 1, PASSPHRASE),
        vkey.shares[1],
    )


# -- epochs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def epochs() -> tuple[list[KeyShare], list[KeyShare], list[KeyShare]]:
    """A small split key at epoch 0, and two different reshares of it to epoch 1."""
    from ittc.scheme.reshare.local import reshare_in_one_process
    from tests.reshare_keys import split_key

    zero = split_key().shares
    _, one = reshare_in_one_process(zero, 5, 3, acceptance=False)
    _, other = reshare_in_one_process(zero, 5, 3, acceptance=False)
    return zero, one, other


def test_a_share_file_binds_its_epoch(epochs, tmp_path: pathlib.Path) -> None:
    zero, one, other = epochs
    assert one[0].params.epoch == other[0].params.epoch == 1
    assert one[0].params.epoch_id != other[0].params.epoch_id
    old = write(tmp_path, zero[0], "epoch-0.share")
    new = write(tmp_path, one[0], "epoch-1.share")
    assert read_share_file(new, one[0].params, 1, PASSPHRASE) == one[0]
    assert read_share_header(new).epoch == 1
    # The old epoch's file never opens as the new one, nor the other way round, nor a file
    # of another run that reached the same epoch number.
    for path, params, secret in [
        (old, one[0].params, zero[0]),
        (new, zero[0].params, one[0]),
        (new, other[0].params, one[0]),
    ]:
        err = refused(
            path,
            ShareFileMismatch,
            lambda path=path, params=params: read_share_file(path, params, 1, PASSPHRASE),
            secret,
        )
        assert "epoch" in str(err)


def test_an_edited_epoch_fails_authentication(epochs, tmp_path: pathlib.Path) -> None:
    """One run's epoch-1 file, relabelled with another run's epoch-1 id (checksum redone):
    the AEAD refuses it."""
    _, one, other = epochs
    data = write(tmp_path, one[1]).read_bytes()
    forged = patch(data, EPOCH_ID_AT, other[0].params.epoch_id_bytes)
    path = put_bytes(tmp_path / "forged.share", reseal(forged))
    assert read_share_header(path).epoch_id == other[0].params.epoch_id
    refused(
        path,
        ShareFileCorrupt,
        lambda: read_share_file(path, other[0].params, 2, PASSPHRASE),
        one[1],
    )


def test_version_1_files_are_read_at_epoch_0_only(
    vkey: VectorKey, epochs, tmp_path: pathlib.Path
) -> None:
    """A file written before epochs existed (tests/vectors/share_v1_node2.bin, the vector
    key's node 2, fast KDF) still opens; it never opens for a later epoch."""
    vector = pathlib.Path(__file__).parent / "vectors" / "share_v1_node2.bin"
    path = put_bytes(tmp_path / "node2.share", vector.read_bytes())
    passphrase = b"version one passphrase"
    header = read_share_header(path)
    assert (header.version, header.epoch, header.epoch_id) == (1, None, None)
    assert read_share_file(path, vkey.params, 2, passphrase) == vkey.shares[1]
    _, one, _ = epochs
    later = dataclasses.replace(vkey.params, epoch=1, kind="generated", sharing="integer")
    err = refused(path, ShareFileMismatch, lambda: read_share_file(path, later, 2, passphrase))
    assert "version-1" in str(err) and "epoch 1" in str(err)


def test_edited_kdf_field_reads_as_wrong_passphrase(
    vkey: VectorKey, tmp_path: pathlib.Path, pristine: bytes
) -> None:
    """Fields that fix the derived key cannot be told apart from a wrong passphrase."""
    data = reseal(patch(pristine, OPSLIMIT_AT, struct.pack(">I", 2)))
    path = put_bytes(tmp_path / "node1.share", data)
    refused(path, WrongPassphrase, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE))


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (MEMLIMIT_AT, struct.pack(">Q", 2**40)),
        (MEMLIMIT_AT, struct.pack(">Q", 2**64 - 1)),
        (MEMLIMIT_AT, struct.pack(">Q", 4 * 2**30 + 1)),
        (MEMLIMIT_AT, struct.pack(">Q", 0)),
        (OPSLIMIT_AT, struct.pack(">I", 2**32 - 1)),
        (OPSLIMIT_AT, struct.pack(">I", 0)),
        (KDF_NAME_AT, b"\x08argon2i_"),
        (AEAD_NAME_AT, b"\x16aes256gcm-ietf-------"),
        (CT_LEN_AT, struct.pack(">I", 2**32 - 1)),
        (INDEX_AT, b"\x00\x00"),
    ],
)
def test_hostile_header_refused_before_kdf(
    vkey: VectorKey, tmp_path: pathlib.Path, pristine: bytes, at: int, value: bytes, forbid_kdf: Arm
) -> None:
    path = put_bytes(tmp_path / "node1.share", reseal(patch(pristine, at, value)))
    forbid_kdf()
    refused(path, ShareFileFormatError, lambda: read_share_header(path))
    refused(path, ShareFileFormatError, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o601, 0o610])
def test_insecure_mode(vkey: VectorKey, tmp_path: pathlib.Path, mode: int, forbid_kdf: Arm) -> None:
    path = write(tmp_path, vkey.shares[0])
    os.chmod(path, mode)
    forbid_kdf()
    for call in (
        lambda: read_share_file(path, vkey.params, 1, PASSPHRASE),
        lambda: read_share_header(path),
    ):
        err = refused(path, InsecureFileMode, call)
        assert f"chmod 600 {path}" in str(err)
    os.chmod(path, 0o600)
    assert read_share_header(path).index == 1


def test_not_a_regular_file(vkey: VectorKey, tmp_path: pathlib.Path, forbid_kdf: Arm) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    forbid_kdf()
    with pytest.raises(ShareFileFormatError, match="not a regular file"):
        read_share_file(directory, vkey.params, 1, PASSPHRASE)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ShareFileFormatError, match="not a regular file"):
        read_share_header(fifo)  # opened non-blocking: no writer needed, no hang
    with pytest.raises(FileNotFoundError):
        read_share_file(tmp_path / "missing", vkey.params, 1, PASSPHRASE)


def test_oversized_file(
    vkey: VectorKey, tmp_path: pathlib.Path, pristine: bytes, forbid_kdf: Arm
) -> None:
    path = put_bytes(tmp_path / "node1.share", pristine + b"\x00" * storage.MAX_FILE_SIZE)
    forbid_kdf()
    err = refused(
        path, ShareFileFormatError, lambda: read_share_file(path, vkey.params, 1, PASSPHRASE)
    )
    assert "too large" in str(err)


def test_nothing_secret_in_messages_or_reprs(
    vkey: VectorKey, other_key: dealer.DealtKey, tmp_path: pathlib.Path
) -> None:
    share = vkey.shares[0]
    path = write(tmp_path, share)
    texts = [
        repr(read_share_header(path)),
        str(read_share_header(path)),
        repr(FAST),
        repr(read_share_file(path, vkey.params, 1, PASSPHRASE)),
    ]
    failures: list[Callable[[], object]] = [
        lambda: read_share_file(path, vkey.params, 1, WRONG),
        lambda: read_share_file(path, vkey.params, 2, PASSPHRASE),
        lambda: read_share_file(path, other_key.params, 1, PASSPHRASE),
        lambda: write_share_file(path, share, PASSPHRASE, kdf=FAST),
    ]
    data = path.read_bytes()
    put_bytes(tmp_path / "bad", patch(data, FILE_LEN - 1, bytes([data[-1] ^ 1])))
    failures.append(lambda: read_share_file(tmp_path / "bad", vkey.params, 1, PASSPHRASE))
    for fail in failures:
        with pytest.raises((ShareFileError, FileExistsError)) as info:
            fail()
        texts += [str(info.value), repr(info.value)]
    assert len(texts) == 4 + 2 * len(failures)
    for text in texts:
        assert_no_secrets(text, share)


# -- passphrase files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"secret", b"secret"),
        (b"secret\n", b"secret"),
        (b"secret\r\n", b"secret"),
        (b"secret\n\n", b"secret\n"),
        (b"secret\r\n\r\n", b"secret\r\n"),
        (b"  spaced out \t\n", b"  spaced out \t"),
        (b"secret\r", b"secret\r"),
        ("pässwörd\n".encode(), "pässwörd".encode()),
    ],
)
def test_read_passphrase_file(tmp_path: pathlib.Path, content: bytes, expected: bytes) -> None:
    path = put_bytes(tmp_path / "pass", content)
    assert read_passphrase_file(path) == expected


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_empty_passphrase_file(tmp_path: pathlib.Path, content: bytes) -> None:
    path = put_bytes(tmp_path / "pass", content)
    err = refused(path, ParameterError, lambda: read_passphrase_file(path))
    assert str(path) in str(err)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_insecure_passphrase_file(tmp_path: pathlib.Path, mode: int) -> None:
    path = put_bytes(tmp_path / "pass", PASSPHRASE + b"\n", mode)
    err = refused(path, InsecureFileMode, lambda: read_passphrase_file(path))
    assert f"chmod 600 {path}" in str(err)


def test_oversized_passphrase_file(tmp_path: pathlib.Path) -> None:
    path = put_bytes(tmp_path / "pass", b"x" * (sharefile.MAX_PASSPHRASE_FILE_SIZE + 1))
    refused(path, ParameterError, lambda: read_passphrase_file(path))


def test_passphrase_file_round_trip(vkey: VectorKey, tmp_path: pathlib.Path) -> None:
    pass_path = put_bytes(tmp_path / "pass", PASSPHRASE + b"\n")
    path = write(tmp_path, vkey.shares[2], passphrase=read_passphrase_file(pass_path))
    assert read_share_file(path, vkey.params, 3, read_passphrase_file(pass_path)) == vkey.shares[2]
