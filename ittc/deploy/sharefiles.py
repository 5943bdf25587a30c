"""Keeping a site's share file over the years: a new passphrase, and checking backups.

:func:`change_passphrase` encrypts a site's share file (and its site-key file, when the
node takes part in reshares: both are under the same passphrase) under a new passphrase.
The original file is left exactly as it was until the new one has been written beside
it, fsynced, read back with the new passphrase and found to hold the same secret; only
then does a rename put it in place. A failure at any point leaves the original file in
place and removes the new one.

:func:`check_share_file` opens a share file (a backup, typically) with its passphrase and
self-tests the share against the key's public verification key: it proves the backup
would work, without writing anything.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

from ittc import storage
from ittc.config import NodeConfig
from ittc.errors import ConfigError, IttcError, ShareFileMismatch
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.storage import sitekey
from ittc.storage.files import fsync_dir

__all__ = ["CheckedShare", "change_passphrase", "check_share_file"]


@dataclass(frozen=True)
class CheckedShare:
    """What :func:`check_share_file` found (public facts only)."""

    path: pathlib.Path
    index: int
    key_id: str
    epoch: int
    format_version: int


def _beside(path: pathlib.Path) -> pathlib.Path:
    """Where the re-encrypted copy of ``path`` is written before it replaces ``path``."""
    return path.with_name(f".{path.name}.new-passphrase")


def _stage(
    path: pathlib.Path,
    write: Callable[[pathlib.Path], None],
    check: Callable[[pathlib.Path], None],
    staged: list[pathlib.Path],
) -> pathlib.Path:
    new = _beside(path)
    if os.path.lexists(new):
        raise ConfigError(
            f"{new}: left by an interrupted passphrase change; {path} is intact: delete "
            f"{new} and run the change again"
        )
    write(new)
    staged.append(new)
    # Run as root on a site owned by the node's user: the new file keeps the old owner.
    st = path.stat()
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        os.chown(new, st.st_uid, st.st_gid)
    check(new)
    return new


def change_passphrase(
    config: NodeConfig,
    old: bytes,
    new: bytes,
    *,
    kdf: storage.KdfLimits | None = None,
) -> list[pathlib.Path]:
    """Encrypt the share file ``config`` names (and its site-key file, if it names one)
    under ``new`` instead of ``old``. Returns the files changed.

    Checks first that ``old`` opens them and that the share passes its self-test; keeps
    the files' key-derivation limits unless ``kdf`` is given. Raises
    :class:`~ittc.errors.WrongPassphrase` if ``old`` does not open them (nothing is
    written), and any other :class:`~ittc.errors.IttcError` or ``OSError`` with the
    originals untouched.
    """
    if hmac.compare_digest(old, new):
        raise ConfigError("the new passphrase is the old one")
    params = config.load_params()
    share_path = config.share_file
    share = storage.read_share_file(share_path, params, config.index, old)
    share.self_test()
    share_kdf = kdf or storage.read_share_header(share_path).kdf
    site_key = None
    if config.site_key is not None:
        site_key = sitekey.read_site_key(config.site_key, old)

    staged: list[pathlib.Path] = []
    try:

        def check_share(path: pathlib.Path) -> None:
            again = storage.read_share_file(path, params, config.index, new)
            if again != share:
                raise ShareFileMismatch(f"{path}: the share read back differs")

        new_share = _stage(
            share_path,
            lambda path: storage.write_share_file(path, share, new, kdf=share_kdf),
            check_share,
            staged,
        )
        renames = [(new_share, share_path)]
        if site_key is not None and config.site_key is not None:
            key_file = config.site_key
            key_kdf = kdf or storage.read_share_header(share_path).kdf

            def check_key(path: pathlib.Path) -> None:
                again = sitekey.read_site_key(path, new)
                same = again.identity == site_key.identity and hmac.compare_digest(
                    again.dangerously_export_seeds(), site_key.dangerously_export_seeds()
                )
                if not same:
                    raise ConfigError(f"{path}: the site key read back differs")

            new_key = _stage(
                key_file,
                lambda path: sitekey.write_site_key(path, site_key, new, kdf=key_kdf),
                check_key,
                staged,
            )
            renames.append((new_key, key_file))
        for source, target in renames:
            os.replace(source, target)
            staged.remove(source)
            fsync_dir(target.parent)
    finally:
        for path in staged:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return [target for _, target in renames]


def check_share_file(
    path: str | os.PathLike[str],
    params: PublicParams,
    passphrase: bytes,
    index: int | None = None,
) -> CheckedShare:
    """Open the share file ``path`` with ``passphrase`` and self-test the share against
    ``params`` (its verification key); write nothing. ``index`` defaults to the one the
    file's header names. Raises the :class:`~ittc.errors.ShareFileError` that says what is
    wrong (wrong passphrase, damaged, another key's or node's share), or
    :class:`~ittc.errors.InvalidProof` if the share does not match its verification key."""
    where = pathlib.Path(path)
    header = storage.read_share_header(where)
    chosen = header.index if index is None else index
    try:
        params.check_index(chosen)
    except IttcError:
        raise ShareFileMismatch(
            f"share file {where} names node {chosen}, but the key has nodes 1..{params.n}"
        ) from None
    share: KeyShare = storage.read_share_file(where, params, chosen, passphrase)
    share.self_test()
    return CheckedShare(where, share.index, params.key_id, params.epoch, header.version)
