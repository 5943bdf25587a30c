"""Writing files so that nobody ever sees them half-written or with loose permissions.

One implementation for every file ittc writes outside a fresh folder (share files,
TLS keys and certificates, the CA's outputs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

__all__ = ["fsync_dir", "write_file_atomically"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a folder's entries durable (a file created, renamed or deleted in it)."""
    fd = os.open(
        directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_no_clobber(temp: str, target: str, what: str) -> None:
    """Move ``temp`` to ``target`` only if ``target`` does not exist, atomically if possible.

    ``os.link`` fails on an existing target, so a file created since the caller's check is
    not clobbered. File systems without hard links fall back to check-then-replace.
    """
    exists = FileExistsError(errno.EEXIST, f"{what} already exists (not overwritten)", target)
    try:
        os.link(temp, target, follow_symlinks=False)
    except FileExistsError:
        raise exists from None
    except OSError:
        if os.path.lexists(target):
            raise exists from None
        os.replace(temp, target)
    else:
        os.unlink(temp)


def write_file_atomically(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int,
    overwrite: bool = False,
    what: str = "file",
) -> None:
    """Write ``data`` to ``path`` with permissions ``mode`` from the moment it exists.

    The data is written and fsynced under a temporary name in the same directory
    (created ``O_EXCL | O_NOFOLLOW``), then moved onto ``path`` and the directory fsynced:
    a crash leaves either the old file or the new one. Without ``overwrite`` an existing
    ``path`` raises :class:`FileExistsError` and is left alone. On any error no temporary
    file is left behind.
    """
    target = os.fspath(path)
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, f"{what} already exists (not overwritten)", target)
    if overwrite and os.path.lexists(target):
        kind = os.lstat(target).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISLNK(kind)):
            # Never replace a device, a pipe or a folder with a file (``--out /dev/null``
            # run as root would replace the device node).
            raise OSError(errno.EINVAL, f"{what} exists and is not a regular file", target)
    directory = os.path.dirname(os.path.abspath(target))
    temp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    fd = os.open(temp, flags, mode)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temp, target)
        else:
            _link_no_clobber(temp, target, what)
        fsync_dir(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
