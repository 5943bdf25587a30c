"""The CA's memory: what it issued and what it revoked, in one SQLite file.

``ittc ca issue`` records every certificate (serial, subject, validity, profile, the
certificate itself); ``ittc ca revoke`` records revocations with their reason and time;
``ittc ca crl`` lists every revoked, unexpired certificate from the record, with a CRL
number that only ever goes up; ``ittc ca ocsp`` answers from it. The record is bound to
one CA certificate (a state folder holds one record file per CA certificate, named by
its fingerprint, so a renewed root starts a record of its own); a file opened with
another certificate refuses.

Nothing here is secret (certificates are public), but the record is the CA's word on
what is revoked: the file is created 0600 and every change is one SQLite transaction
(a crash leaves the record as before or after, never half-changed).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ittc.errors import CAError, ConfigError

__all__ = ["REASONS", "IssuedCertificate", "Registry"]

#: Revocation reasons by their RFC 5280 names, as ``ittc ca revoke --reason`` takes them.
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.unspecified, x509.ReasonFlags.remove_from_crl)
} | {"unspecified": x509.ReasonFlags.unspecified}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,          -- lowercase hex, no leading zeros
    subject TEXT NOT NULL,            -- RFC 4514
    not_before TEXT NOT NULL,         -- ISO 8601, UTC
    not_after TEXT NOT NULL,
    profile TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    der BLOB NOT NULL,
    revoked_at TEXT,                  -- NULL while good
    reason TEXT
);
CREATE TABLE IF NOT EXISTS crls (number TEXT NOT NULL, issued_at TEXT NOT NULL);
"""
_VERSION = "1"
_COLUMNS = "serial, subject, not_before, not_after, profile, issued_at, revoked_at, reason"


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).replace(microsecond=0).isoformat()


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@dataclass(frozen=True)
class IssuedCertificate:
    """One row of the record."""

    serial: int
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    profile: str
    issued_at: datetime.datetime
    revoked_at: datetime.datetime | None = None
    reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def status(self, now: datetime.datetime) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if now > self.not_after else "good"


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class Registry:
    """The record of one CA (``ca_cert``) in the folder ``state``."""

    def __init__(self, state: str | os.PathLike[str], ca_cert: x509.Certificate) -> None:
        self.folder = pathlib.Path(state)
        self.ca = _fingerprint(ca_cert)
        self.path = self.folder / f"ca-{self.ca[:16]}.sqlite3"
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.folder}: not a folder (the CA's state folder)")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        with self._db() as db:
            db.executescript(_SCHEMA)
            rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if not rows:
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("version", _VERSION), ("ca", self.ca)]
                )
            elif rows.get("version") != _VERSION:
                raise ConfigError(f"{self.path}: unsupported record version {rows.get('version')}")
            elif rows.get("ca") != self.ca:
                raise CAError(
                    f"{self.path}: this record belongs to another CA certificate "
                    f"(SHA-256 {rows.get('ca', '?')[:16]}..., not {self.ca[:16]}...)"
                )

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = sqlite3.connect(self.path, isolation_level="IMMEDIATE")
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open the CA record: {exc}") from None
        with closing(connection):
            try:
                with connection:  # one transaction: committed, or rolled back on error
                    yield connection
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{self.path}: the CA record is damaged: {exc}") from None

    # -- writing -----------------------------------------------------------------------

    def record_issued(self, cert: x509.Certificate, profile: str) -> None:
        """Record a certificate this CA just issued (its serial must be new)."""
        serial = format(cert.serial_number, "x")
        with self._db() as db:
            if db.execute("SELECT 1 FROM certificates WHERE serial = ?", (serial,)).fetchone():
                raise CAError(f"serial {cert.serial_number:#x} is already in the record")
            db.execute(
                "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    serial,
                    cert.subject.rfc4514_string(),
                    _iso(cert.not_valid_before_utc),
                    _iso(cert.not_valid_after_utc),
                    profile,
                    _iso(datetime.datetime.now(datetime.UTC)),
                    cert.public_bytes(Encoding.DER),
                ),
            )

    def revoke(
        self, serial: int, reason: str, when: datetime.datetime | None = None
    ) -> IssuedCertificate:
        """Record that ``serial`` is revoked. Unknown and already revoked serials are
        refused (nothing changes)."""
        if reason not in REASONS:
            raise CAError(f"unknown revocation reason {reason!r}; use one of {sorted(REASONS)}")
        when = when or datetime.datetime.now(datetime.UTC)
        with self._db() as db:
            row = db.execute(
                "SELECT revoked_at FROM certificates WHERE serial = ?", (format(serial, "x"),)
            ).fetchone()
            if row is None:
                raise CAError(f"serial {serial:#x} was not issued by this CA (not in the record)")
            if row[0] is not None:
                raise CAError(f"serial {serial:#x} is already revoked (since {row[0]})")
            db.execute(
                "UPDATE certificates SET revoked_at = ?, reason = ? WHERE serial = ?",
                (_iso(when), reason, format(serial, "x")),
            )
        found = self.get(serial)
        assert found is not None
        return found

    def next_crl_number(self, now: datetime.datetime | None = None) -> int:
        """A CRL number above every one issued before (RFC 5280: CRL numbers increase),
        recorded as used."""
        now = now or datetime.datetime.now(datetime.UTC)
        with self._db() as db:
            numbers = [int(n, 16) for (n,) in db.execute("SELECT number FROM crls")]
            number = max([int(now.timestamp()), *(n + 1 for n in numbers)])
            db.execute("INSERT INTO crls VALUES (?, ?)", (format(number, "x"), _iso(now)))
        return number

    # -- reading -----------------------------------------------------------------------

    def get(self, serial: int) -> IssuedCertificate | None:
        rows = self._select("WHERE serial = ?", (format(serial, "x"),))
        return rows[0] if rows else None

    def certificates(self) -> list[IssuedCertificate]:
        return self._select("ORDER BY issued_at, serial", ())

    def revoked(self, now: datetime.datetime | None = None) -> list[IssuedCertificate]:
        """Revoked certificates that have not expired yet (what a CRL must list)."""
        now = now or datetime.datetime.now(datetime.UTC)
        return [
            c
            for c in self._select("WHERE revoked_at IS NOT NULL ORDER BY serial", ())
            if c.not_after >= now
        ]

    def _select(self, where: str, args: tuple[object, ...]) -> list[IssuedCertificate]:
        query = f"SELECT {_COLUMNS} FROM certificates {where}"  # noqa: S608 - constants only
        with self._db() as db:
            rows = db.execute(query, args).fetchall()
        return [
            IssuedCertificate(
                serial=int(r[0], 16),
                subject=r[1],
                not_before=_when(r[2]),
                not_after=_when(r[3]),
                profile=r[4],
                issued_at=_when(r[5]),
                revoked_at=_when(r[6]) if r[6] else None,
                reason=r[7],
            )
            for r in rows
        ]
