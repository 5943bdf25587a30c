"""Is the node's TLS certificate (and the cluster CA's) valid now, and for how long?

A node whose own certificate has expired, or is not valid yet, completes no handshake:
every client fails while the node would look healthy. So the daemon refuses to start
with such a certificate, warns every day from :data:`EXPIRY_WARNING` before it expires,
and, if it expires while the node runs, turns NOT_SERVING. Time is a parameter (``now``,
seconds since the epoch), as everywhere in the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import pathlib
from collections.abc import Callable, Sequence

from cryptography import x509

from ittc.errors import IttcError

__all__ = ["CHECK_SECONDS", "EXPIRY_WARNING", "CertificateError", "check_certificate", "watch"]

log = logging.getLogger("ittc_node.certwatch")

#: Warn this long before a certificate expires (every day from then on).
EXPIRY_WARNING = datetime.timedelta(days=30)
#: How often a running node looks again.
CHECK_SECONDS = 3600.0


class CertificateError(IttcError):
    """A certificate that is not valid now; the message names the file and the dates."""


def _day(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def check_certificate(path: pathlib.Path, cert: x509.Certificate, now: float) -> str | None:
    """None if ``cert`` is valid at ``now`` for longer than :data:`EXPIRY_WARNING`; a
    warning if it expires sooner. Raises :class:`CertificateError` if it is not valid."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if moment < cert.not_valid_before_utc:
        raise CertificateError(
            f"{path}: the certificate is not valid before {_day(cert.not_valid_before_utc)} "
            f"(this host's clock says {_day(moment)}): no client would accept it; check the "
            "clock, or issue a certificate valid now"
        )
    if moment > cert.not_valid_after_utc:
        raise CertificateError(
            f"{path}: the certificate expired on {_day(cert.not_valid_after_utc)}: no client "
            "would accept it; issue a new one from the cluster CA"
        )
    left = cert.not_valid_after_utc - moment
    if left <= EXPIRY_WARNING:
        return (
            f"{path}: the certificate expires on {_day(cert.not_valid_after_utc)} (in "
            f"{left.days} days {left.seconds // 3600} hours): after that no client can "
            "connect; issue a new one from the cluster CA and restart the node before then"
        )
    return None


async def watch(
    certificates: Sequence[tuple[pathlib.Path, x509.Certificate]],
    clock: Callable[[], float],
    stop: asyncio.Event,
    on_invalid: Callable[[str], None],
) -> None:
    """Until ``stop``: every :data:`CHECK_SECONDS`, log a warning (at most once a day) for
    a certificate that expires soon; call ``on_invalid`` (once) for one that is no longer
    valid, and stop watching."""
    # The daemon warned at start: the next warning is for the next day.
    warned = {path: int(clock() // 86400) for path, _ in certificates}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_SECONDS)
        if stop.is_set():
            return
        now = clock()
        for path, cert in certificates:
            try:
                warning = check_certificate(path, cert, now)
            except CertificateError as exc:
                log.error(
                    "%s; health is NOT_SERVING until it is replaced and the node restarted", exc
                )
                on_invalid(str(exc))
                return
            day = int(now // 86400)
            if warning is not None and warned.get(path) != day:
                warned[path] = day
                log.warning("%s", warning)
