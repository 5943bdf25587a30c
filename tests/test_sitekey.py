"""Site-key files: they round-trip, keep the keys secret, and every alteration fails."""

from __future__ import annotations

import hashlib
import os
import pathlib

import pytest

from ittc.errors import InsecureFileMode, ParameterError, SiteKeyFileError, WrongPassphrase
from ittc.lifecycle import SiteKey
from ittc.storage import KdfLimits, read_site_identity, read_site_key, write_site_key

FAST = KdfLimits.fast_for_tests()
PASSPHRASE = b"site passphrase, long and random"


@pytest.fixture
def written(tmp_path: pathlib.Path) -> tuple[SiteKey, pathlib.Path]:
    key = SiteKey.generate("alpha")
    path = tmp_path / "site.key"
    write_site_key(path, key, PASSPHRASE, kdf=FAST)
    return key, path


def test_round_trip(written: tuple[SiteKey, pathlib.Path]) -> None:
    key, path = written
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_site_identity(path) == key.identity
    again = read_site_key(path, PASSPHRASE)
    assert again.identity == key.identity
    assert again.sign(b"m") == key.sign(b"m")  # Ed25519 is deterministic
    data = path.read_bytes()
    assert key.dangerously_export_seeds()[:32] not in data
    assert key.dangerously_export_seeds()[32:] not in data
    with pytest.raises(FileExistsError):
        write_site_key(path, SiteKey.generate("bravo"), PASSPHRASE, kdf=FAST)
    assert read_site_identity(path) == key.identity


def test_wrong_passphrase(written: tuple[SiteKey, pathlib.Path]) -> None:
    _, path = written
    with pytest.raises(WrongPassphrase) as err:
        read_site_key(path, PASSPHRASE + b"!")
    assert str(path) in str(err.value) and PASSPHRASE.decode() not in str(err.value)
    with pytest.raises(ParameterError):
        read_site_key(path, b"")


def _reseal(data: bytes, header_len: int) -> bytes:
    body = data[: header_len - 32]
    return (
        body
        + hashlib.blake2b(body, digest_size=32, person=b"ittc/sitekey/hdr").digest()
        + (data[header_len:])
    )


def test_every_altered_byte_is_refused(written: tuple[SiteKey, pathlib.Path]) -> None:
    key, path = written
    data = path.read_bytes()
    header_len = len(data) - 64 - 16
    for pos in range(len(data)):
        altered = bytearray(data)
        altered[pos] ^= 0x01
        path.write_bytes(bytes(altered))
        with pytest.raises((SiteKeyFileError, WrongPassphrase)):
            read_site_key(path, PASSPHRASE)
    # An edited public key with the checksum redone: the AEAD refuses it.
    other = SiteKey.generate("alpha").identity
    at = data.index(key.identity.sign_key)
    forged = data[:at] + other.sign_key + data[at + 32 :]
    path.write_bytes(_reseal(forged, header_len))
    assert read_site_identity(path).sign_key == other.sign_key
    with pytest.raises(WrongPassphrase):
        read_site_key(path, PASSPHRASE)
    for cut in (data[:-1], data + b"\x00", b"", b"ITTC-SITEKEY\n"):
        path.write_bytes(cut)
        with pytest.raises(SiteKeyFileError):
            read_site_identity(path)


def test_a_file_others_can_read_is_refused(written: tuple[SiteKey, pathlib.Path]) -> None:
    _, path = written
    os.chmod(path, 0o640)
    with pytest.raises(InsecureFileMode):
        read_site_key(path, PASSPHRASE)


def test_the_secret_type_says_nothing(written: tuple[SiteKey, pathlib.Path]) -> None:
    key, path = written
    loaded = read_site_key(path, PASSPHRASE)
    seeds = key.dangerously_export_seeds()
    for text in (repr(loaded), str(loaded)):
        assert seeds.hex()[:16] not in text and "alpha" in text
