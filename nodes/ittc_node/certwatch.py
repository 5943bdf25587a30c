"""Is the node's TLS certificate (and the cluster CA's) valid now, and for how long?

A node whose own certificate has expired, or is not valid yet, completes no handshake:
every client fails while the node would look healthy. So the daemon refuses to start
with such a certificate, warns every day from :data:`EXPIRY_WARNING` before it expires,
and, if it expires while the node runs, turns NOT_SERVING until a renewed certificate is
loaded (SIGHUP, :mod:`ittc_node.reload`) or the node restarts. Time is a parameter
(``now``, seconds since the epoch), as everywhere in the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import Callable, Sequence

from cryptography import x509

from ittc.storage.pki import EXPIRY_WARNING, CertificateNotValid, expiry_warning

__all__ = ["CHECK_SECONDS", "EXPIRY_WARNING", "CertificateError", "check_certificate", "watch"]

log = logging.getLogger("ittc_node.certwatch")

#: How often a running node looks again.
CHECK_SECONDS = 3600.0

#: A certificate that is not valid now (the message names the file and the dates).
CertificateError = CertificateNotValid

_ADVICE = (
    "no client would accept it; issue a new one from the cluster CA "
    "(ittc tls renew) and reload the node (SIGHUP)"
)


def check_certificate(path: pathlib.Path, cert: x509.Certificate, now: float) -> str | None:
    """None if ``cert`` is valid at ``now`` for longer than :data:`EXPIRY_WARNING`; a
    warning if it expires sooner. Raises :class:`CertificateError` if it is not valid."""
    return expiry_warning(str(path), cert, now, advice=_ADVICE)


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
                log.error("%s; health is NOT_SERVING until a valid certificate is loaded", exc)
                on_invalid(str(exc))
                return
            day = int(now // 86400)
            if warning is not None and warned.get(path) != day:
                warned[path] = day
                log.warning("%s", warning)
