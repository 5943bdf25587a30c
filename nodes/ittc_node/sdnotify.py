"""Telling systemd how the node is doing: the ``sd_notify`` protocol, without libsystemd.

Under a unit with ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` to a Unix datagram
socket (a path, or ``@name`` in the abstract namespace) and waits for ``READY=1`` before
it considers the service started; the node sends it once health is SERVING, so
``systemctl start`` returns when the node can sign, and units ordered after it start
then. ``STOPPING=1`` says a shutdown began, ``RELOADING=1`` (with ``MONOTONIC_USEC``, as
``Type=notify-reload`` wants) and ``READY=1`` bracket a reload, ``STATUS=...`` is the line
``systemctl status`` shows. With ``WatchdogSec=`` set, systemd also passes
``$WATCHDOG_USEC`` and expects ``WATCHDOG=1`` at least that often: :meth:`Notifier.watchdog`
sends it from the event loop, so a node whose loop hangs is restarted.

Each message is one datagram of ``KEY=VALUE`` lines. Outside systemd (no
``$NOTIFY_SOCKET``) every call does nothing. A failure to send is logged once and never
stops the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("ittc_node.sdnotify")


class Notifier:
    """Sends state changes to the socket systemd named (``environ``: the process's
    environment; a test passes its own)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):  # abstract namespace: a leading NUL byte
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self.watchdog_seconds: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 1e6
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (``send(READY=1, STATUS="serving")``); True if sent."""
        if self.address is None:
            return False
        message = "".join(f"{key}={value}\n" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at $NOTIFY_SOCKET: %s", exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self, status: str = "reloading") -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    async def watchdog(self, stop: asyncio.Event) -> None:
        """Until ``stop``: ``WATCHDOG=1`` every half watchdog interval (if systemd set one)."""
        if self.watchdog_seconds is None or self.address is None:
            return
        while not stop.is_set():
            self.send(WATCHDOG=1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.watchdog_seconds / 2)
