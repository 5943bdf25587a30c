"""Certificates the combiner depends on, and warnings well before they expire.

Two kinds can stop a combiner from signing on a given day: its own client certificate
(every node refuses the handshake once it expired) and the nodes' certificates (the
combiner refuses theirs). :class:`CertificateWatch` warns, through the ``ittc.combiner``
logger, from :data:`~ittc.storage.pki.EXPIRY_WARNING` (30 days) before one expires, at
most once a day per certificate, and logs an error for one that is not valid.

The client's own certificate is read from its file. A node's is the one it presents: gRPC
does not show a client the server's certificate, so :func:`node_certificates` makes a TLS
handshake of its own with each node (:func:`ittc.wire.tls.server_certificate`), in a
daemon thread so that a silent node never holds up the event loop or the process's exit.
A long-running client does that :data:`FIRST_CHECK` seconds after it first connects and
then every :data:`CHECK_INTERVAL`; a short-lived one (a command) never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from ittc.config import ClusterFile
from ittc.errors import CertificateNotValid, ConfigError
from ittc.storage import pki
from ittc.wire import tls

__all__ = ["CHECK_INTERVAL", "FIRST_CHECK", "CertificateWatch", "node_certificates"]

log = logging.getLogger("ittc.combiner")

#: Seconds after a client first connects before it looks at the nodes' certificates.
FIRST_CHECK = 60.0
#: Seconds between two looks (at its own certificate and at the nodes').
CHECK_INTERVAL = 86400.0

T = TypeVar("T")


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run blocking ``fn`` in a daemon thread; its result as a future of the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="ittc-certificate-check", daemon=True).start()
    return future


async def node_certificates(
    cluster: ClusterFile, cert: Path, key: Path, timeout: float
) -> dict[int, x509.Certificate | str]:
    """The certificate each node of ``cluster`` presents now, or why it could not be
    had (unreachable, a failed handshake), by node index."""

    def fetch(address: str, tls_name: str) -> x509.Certificate:
        return tls.server_certificate(
            address, tls_name, ca_path=cluster.ca, cert_path=cert, key_path=key, timeout=timeout
        )

    async def one(address: str, tls_name: str) -> x509.Certificate | str:
        try:
            return await _in_daemon_thread(lambda: fetch(address, tls_name))
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    answers = await asyncio.gather(*(one(n.address, n.tls_name) for n in cluster.nodes))
    return {n.index: a for n, a in zip(cluster.nodes, answers, strict=True)}


class CertificateWatch:
    """Warns about certificates that expire soon; each at most once a (clock) day."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._warned: dict[str, int] = {}

    def check(self, what: str, cert: x509.Certificate, advice: str) -> str | None:
        """Log a warning if ``cert`` expires within 30 days, an error if it is not valid
        now (each once a day per ``what``); returns the message, or None."""
        now = self.clock()
        try:
            message = pki.expiry_warning(what, cert, now, advice=advice)
            level = logging.WARNING
        except CertificateNotValid as exc:
            message, level = str(exc), logging.ERROR
        if message is None:
            return None
        day = int(now // 86400)
        if self._warned.get(what) != day:
            self._warned[what] = day
            log.log(level, "%s", message)
        return message

    def check_own(self, cert_path: Path) -> str | None:
        """The client's own certificate, from its file."""
        try:
            cert = pki.load_cert(cert_path)
        except ConfigError as exc:
            log.error("%s", exc)
            return str(exc)
        return self.check(
            f"client certificate {cert_path}",
            cert,
            "every node will refuse this client after that; renew it from the cluster CA "
            "(ittc tls renew) and replace the file (the client picks it up by itself)",
        )

    def check_nodes(self, found: dict[int, x509.Certificate | str]) -> dict[int, str]:
        """The nodes' certificates (from :func:`node_certificates`); the messages by node."""
        messages = {}
        for index, cert in sorted(found.items()):
            if isinstance(cert, str):
                continue  # unreachable now: the signing path reports that
            message = self.check(
                f"node {index}'s certificate ('{cert.subject.rfc4514_string()}', serial "
                f"{cert.serial_number:#x})",
                cert,
                "this client will refuse the node after that; the node's operator must "
                "renew it (ittc tls renew) and reload the node",
            )
            if message is not None:
                messages[index] = message
        return messages
