"""A node's epoch state: the folder where its shares move from one epoch to the next.

::

    STATE/current                      the epoch the node signs in: {"epoch", "epoch_id"}
                                       (absent until its first commit: the node then signs
                                       with the share its config names)
    STATE/epoch-<e>.share              its share of epoch e (share file v2, encrypted)
    STATE/epoch-<e>.params.json        epoch e's public parameters
    STATE/epoch-<e>.certificate.json   the commit certificate that made epoch e current
    STATE/pending/<run>.share          a new share stored by run <run>, not committed yet
    STATE/pending/<run>.params.json    its epoch's parameters
    STATE/runs/<run>.json              what the node did in run <run> (public values only)
    STATE/retired                      the epoch at which this site left the cluster
    STATE/auto-approved                the last refresh this site approved unattended

**Commit**, in this order, each step atomic and durable (fsynced, directory too), so a
crash at any point leaves a state the next start completes or that is still the old
epoch: (1) write the new epoch's parameters and certificate; (2) move the pending share
to ``epoch-<e>.share``; (3) replace ``current`` (the commit point); (4) delete the old
epoch's share and every other pending share. Before (3) the node signs in the old epoch;
after it, in the new one, and :func:`EpochStore.unfinished` finds a certificate whose
commit a crash interrupted.

A deleted share file is unlinked, not wiped: on journalling and copy-on-write file
systems and SSDs an overwrite does not reach the old blocks. The share files are
encrypted; destroying the old epoch means its ciphertext, without the passphrase, is
all that could remain on the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ittc.errors import CertificateError, ParameterError, ShareFileError
from ittc.lifecycle.certificate import Certificate
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.storage.files import fsync_dir, write_file_atomically
from ittc.storage.sharefile import KdfLimits, read_share_file, write_share_file

__all__ = ["Current", "EpochStore", "Retired"]

_EPOCH_FILE = re.compile(r"epoch-(\d{1,20})\.(share|params\.json|certificate\.json)")
_RUN = re.compile(r"[0-9a-f]{64}")
#: Largest state file read (certificates are the largest; see MAX_CERTIFICATE_BYTES).
_MAX_JSON = 8 << 20


@dataclass(frozen=True)
class Current:
    """The epoch a node signs in, as its ``current`` file names it."""

    epoch: int
    epoch_id: str


@dataclass(frozen=True)
class Retired:
    """This site left the cluster at ``epoch`` (it is not a member of that epoch)."""

    epoch: int
    epoch_id: str


def _read_json(path: pathlib.Path) -> Any:
    with path.open("rb") as fh:
        data = fh.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise ParameterError(f"{path}: too large")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParameterError(f"{path}: not valid JSON: {exc}") from None


def _write_json(path: pathlib.Path, data: Any, *, mode: int = 0o600) -> None:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_file_atomically(path, text.encode("ascii"), mode=mode, overwrite=True)


def _unlink(path: pathlib.Path) -> bool:
    """Delete ``path`` and fsync its folder; True if it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(str(path.parent))
    return True


class EpochStore:
    """The state folder of one node (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root)

    def create(self) -> None:
        """Make the folder and its subfolders (mode 0700) if they do not exist."""
        for folder in (self.root, self.root / "pending", self.root / "runs"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------

    def share_path(self, epoch: int) -> pathlib.Path:
        return self.root / f"epoch-{epoch}.share"

    def params_path(self, epoch: int) -> pathlib.Path:
        return self.root / f"epoch-{epoch}.params.json"

    def certificate_path(self, epoch: int) -> pathlib.Path:
        return self.root / f"epoch-{epoch}.certificate.json"

    def pending_share_path(self, run_id: bytes) -> pathlib.Path:
        return self.root / "pending" / f"{run_id.hex()}.share"

    def pending_params_path(self, run_id: bytes) -> pathlib.Path:
        return self.root / "pending" / f"{run_id.hex()}.params.json"

    def run_path(self, run_id: bytes) -> pathlib.Path:
        return self.root / "runs" / f"{run_id.hex()}.json"

    # -- the current epoch -------------------------------------------------------------

    def current(self) -> Current | None:
        path = self.root / "current"
        if not path.exists():
            return None
        data = _read_json(path)
        if (
            not isinstance(data, dict)
            or set(data) != {"epoch", "epoch_id"}
            or not isinstance(data["epoch"], int)
            or not isinstance(data["epoch_id"], str)
        ):
            raise ParameterError(f"{path}: not an epoch pointer")
        return Current(data["epoch"], data["epoch_id"])

    def _set_current(self, params: PublicParams) -> None:
        _write_json(self.root / "current", {"epoch": params.epoch, "epoch_id": params.epoch_id})

    def params(self, epoch: int) -> PublicParams:
        return PublicParams.from_json(self.params_path(epoch).read_bytes())

    def certificate(self, epoch: int) -> Certificate:
        return Certificate.from_json(self.certificate_path(epoch).read_bytes())

    def read_share(self, params: PublicParams, index: int, passphrase: bytes) -> KeyShare:
        return read_share_file(self.share_path(params.epoch), params, index, passphrase)

    def certificate_bytes(self, epoch: int) -> bytes | None:
        """The certificate file of ``epoch`` as stored, or None."""
        try:
            return self.certificate_path(epoch).read_bytes()
        except FileNotFoundError:
            return None

    def last_auto_approval(self) -> tuple[float, str, str] | None:
        """(Unix time, plan digest, id of the epoch it refreshes) of the last refresh
        approved unattended, or None."""
        path = self.root / "auto-approved"
        if not path.exists():
            return None
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("time"), int | float):
            raise ParameterError(f"{path}: not an approval record")
        return float(data["time"]), str(data.get("plan", "")), str(data.get("epoch_id", ""))

    def record_auto_approval(self, when: float, plan_digest: str, epoch_id: str) -> None:
        self.create()
        _write_json(
            self.root / "auto-approved",
            {"time": when, "plan": plan_digest, "epoch_id": epoch_id},
        )

    def committed_epochs(self) -> list[int]:
        """Epochs with a certificate in the folder, in order."""
        found = set()
        for path in self.root.glob("epoch-*.certificate.json"):
            match = _EPOCH_FILE.fullmatch(path.name)
            if match:
                found.add(int(match.group(1)))
        return sorted(found)

    def unfinished(self, current_epoch: int) -> Certificate | None:
        """The certificate of epoch ``current_epoch + 1`` if its commit was cut short."""
        path = self.certificate_path(current_epoch + 1)
        if not path.exists():
            return None
        return self.certificate(current_epoch + 1)

    # -- pending shares ------------------------------------------------------------------

    def store_pending(
        self, run_id: bytes, share: KeyShare, passphrase: bytes, kdf: KdfLimits
    ) -> None:
        """Store a new, uncommitted share of run ``run_id`` durably (parameters first; the
        share file binds their epoch id), replacing an earlier one of the same run."""
        self.create()
        _write_json(self.pending_params_path(run_id), share.params.to_dict(), mode=0o644)
        write_share_file(
            self.pending_share_path(run_id), share, passphrase, kdf=kdf, overwrite=True
        )

    def pending_runs(self) -> list[bytes]:
        out = []
        for path in sorted((self.root / "pending").glob("*.share")):
            name = path.name.removesuffix(".share")
            if _RUN.fullmatch(name):
                out.append(bytes.fromhex(name))
        return out

    def has_pending(self, run_id: bytes) -> bool:
        return self.pending_share_path(run_id).exists()

    def discard_pending(self, run_id: bytes) -> bool:
        gone = _unlink(self.pending_share_path(run_id))
        _unlink(self.pending_params_path(run_id))
        return gone

    # -- run records ---------------------------------------------------------------------

    def record_run(self, run_id: bytes, record: dict[str, Any]) -> None:
        """What the node did in a run (public values only), replacing the last record."""
        self.create()
        _write_json(self.run_path(run_id), record, mode=0o644)

    def run_record(self, run_id: bytes) -> dict[str, Any] | None:
        path = self.run_path(run_id)
        if not path.exists():
            return None
        data = _read_json(path)
        return data if isinstance(data, dict) else None

    # -- commit and retire -------------------------------------------------------------

    def commit(
        self,
        certificate: Certificate,
        index: int,
        passphrase: bytes,
        *,
        midway: Callable[[], None] | None = None,
    ) -> tuple[KeyShare, list[pathlib.Path]]:
        """Make ``certificate``'s epoch current with this node's pending share as member
        ``index`` (see the module docstring for the steps). Returns the new share and the
        old share files deleted. Idempotent: a commit cut short is completed.

        Raises :class:`CertificateError` if the node has no share of that epoch (it did
        not store one, or lost it). ``midway`` is called with the new share in place and
        the pointer not yet moved (the tests kill the process there).
        """
        params = certificate.params
        run_id = certificate.run_id
        target = self.share_path(params.epoch)
        pending = self.pending_share_path(run_id)
        if not pending.exists() and not target.exists():
            raise CertificateError(
                f"this node holds no share of epoch {params.epoch} (run {run_id.hex()[:16]}): "
                "it did not store one, or lost it"
            )
        source = pending if pending.exists() else target
        try:
            share = read_share_file(source, params, index, passphrase)
        except ShareFileError as exc:
            raise CertificateError(
                f"the stored share does not fit the certificate: {exc}"
            ) from None
        self._keep_public(certificate)
        if source is pending:
            os.replace(pending, target)
            fsync_dir(str(self.root))
            fsync_dir(str(pending.parent))
        if midway is not None:
            midway()
        self._set_current(params)
        return share, self.clean(params.epoch)

    def _keep_public(self, certificate: Certificate) -> None:
        """The public files of ``certificate``'s epoch: its parameters and certificate."""
        params = certificate.params
        self.create()
        _write_json(self.params_path(params.epoch), params.to_dict(), mode=0o644)
        write_file_atomically(
            self.certificate_path(params.epoch),
            certificate.to_json().encode("ascii"),
            mode=0o644,
            overwrite=True,
        )

    def follow(self, certificate: Certificate) -> list[pathlib.Path]:
        """Make ``certificate``'s epoch current without a share of it: this site is a
        member but stored none (it had no share, or lost its state), so it follows the
        epoch to be dealt a share at a later reshare. Every share it still had is of an
        epoch before and is deleted. Returns the share files deleted."""
        params = certificate.params
        self._keep_public(certificate)
        self._set_current(params)
        return self.clean(params.epoch + 1)

    def retire(self, certificate: Certificate) -> list[pathlib.Path]:
        """This site is not a member of ``certificate``'s epoch: record that, keep the
        certificate, destroy every share. Returns the share files deleted."""
        params = certificate.params
        self.create()
        write_file_atomically(
            self.certificate_path(params.epoch),
            certificate.to_json().encode("ascii"),
            mode=0o644,
            overwrite=True,
        )
        _write_json(self.root / "retired", {"epoch": params.epoch, "epoch_id": params.epoch_id})
        return self.clean(params.epoch + 1)

    def retired(self) -> Retired | None:
        path = self.root / "retired"
        if not path.exists():
            return None
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("epoch"), int):
            raise ParameterError(f"{path}: not a retirement record")
        return Retired(data["epoch"], str(data.get("epoch_id", "")))

    def clean(self, epoch: int) -> list[pathlib.Path]:
        """Delete every share file of an epoch before ``epoch`` and every pending share.
        Returns what was deleted."""
        gone = []
        for path in self.root.glob("epoch-*.share"):
            match = _EPOCH_FILE.fullmatch(path.name)
            if match and int(match.group(1)) < epoch and _unlink(path):
                gone.append(path)
        for run_id in self.pending_runs():
            path = self.pending_share_path(run_id)
            if self.discard_pending(run_id):
                gone.append(path)
        with contextlib.suppress(FileNotFoundError):
            for path in (self.root / "pending").glob("*.params.json"):
                _unlink(path)
        return gone
