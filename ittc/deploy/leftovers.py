"""Destroying what the key ceremony leaves behind, once each part has been shipped.

The ceremony folder holds every site's share file and the passphrase that opens it (the
whole key, in one place), the combiners' identities and the cluster CA's key. After the
parts have arrived where they belong, :func:`plan` lists what to destroy and
:func:`destroy` does it: every file is overwritten with random bytes, flushed to disk and
unlinked, then its folder is removed. The CA key is destroyed only when the caller says a
copy is offline; files outside the folder only when named (the key ``ittc split`` read,
the passphrase files the operator brought).

Overwriting is not erasure everywhere: on an SSD, a copy-on-write or journaling file
system, or in a backup or snapshot, the old bytes can survive. The ceremony's README says
so; an encrypted disk, or a medium that is destroyed afterwards, is the real answer.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ittc.deploy.ceremony import README_TITLE
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ConfigError

__all__ = ["Leftover", "destroy", "plan"]


@dataclass(frozen=True)
class Leftover:
    """One file or folder to destroy, and why it matters."""

    path: pathlib.Path
    what: str


def _is_ceremony_folder(root: pathlib.Path) -> bool:
    try:
        with (root / "README.txt").open("rb") as fh:
            return fh.readline().rstrip(b"\n") == README_TITLE.encode()
    except OSError:
        return False


def plan(
    root: str | os.PathLike[str],
    *,
    ca_key_offline: bool = False,
    also: Sequence[str | os.PathLike[str]] = (),
) -> tuple[list[Leftover], list[Leftover]]:
    """What :func:`destroy` would remove from the ceremony folder ``root``, and what it
    keeps (the CA key, unless ``ca_key_offline``). ``also``: further files to destroy.

    Raises :class:`ConfigError` if ``root`` is not a ceremony's output (its README.txt
    says so on its first line) or a file in ``also`` is not a regular file.
    """
    root = pathlib.Path(root).absolute()
    if root.is_symlink() or not root.is_dir() or not _is_ceremony_folder(root):
        raise ConfigError(
            f"{root}: not a key ceremony's output folder (its README.txt does not start "
            f"with {README_TITLE!r}); nothing destroyed"
        )
    folder = CeremonyFolder(root)
    doomed: list[Leftover] = []
    kept: list[Leftover] = []
    for i in folder.sites():
        doomed.append(Leftover(folder.site(i), f"site {i}: its share file and its passphrase"))
    if folder.combiner.exists():
        doomed.append(Leftover(folder.combiner, "the combiner bundle and its client key"))
    if (root / "clients").exists():
        doomed.append(Leftover(root / "clients", "further client identities and their keys"))
    if (root / "logs").exists():
        doomed.append(Leftover(root / "logs", "logs of nodes run here for a trial"))
    if folder.ca.exists():
        if ca_key_offline:
            doomed.append(Leftover(folder.ca, "the cluster CA and its key (a copy is offline)"))
        else:
            kept.append(
                Leftover(
                    folder.ca / "ca.key",
                    "the cluster CA's key: copy ca/ offline, then run again with --ca-key-offline",
                )
            )
    for extra in also:
        path = pathlib.Path(extra).absolute()
        if path.is_symlink() or not path.is_file():
            raise ConfigError(f"{path}: not a regular file; nothing destroyed")
        doomed.append(Leftover(path, "named with --also"))
    if not kept:
        doomed.append(Leftover(folder.readme, "the ceremony's instructions"))
    return doomed, kept


def _overwrite(path: pathlib.Path) -> None:
    """Overwrite a regular file's bytes with random ones and flush them to the disk."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        done = 0
        while done < size:
            done += os.write(fd, secrets.token_bytes(min(1 << 16, size - done)))
        os.fsync(fd)
    finally:
        os.close(fd)


def _destroy_path(path: pathlib.Path) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        for child in sorted(path.iterdir()):
            _destroy_path(child)
        path.rmdir()
        return
    if stat.S_ISREG(st.st_mode):
        os.chmod(path, 0o600)  # a read-only copy is still ours to overwrite
        _overwrite(path)
    path.unlink()  # a symlink is removed, never followed


def destroy(items: Sequence[Leftover], root: str | os.PathLike[str]) -> None:
    """Destroy ``items`` (from :func:`plan`); remove ``root`` too if nothing is left."""
    for item in items:
        if os.path.lexists(item.path):
            _destroy_path(item.path)
    root = pathlib.Path(root)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
