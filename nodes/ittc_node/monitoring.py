"""Plain HTTP for monitoring: Prometheus metrics and a health check without mutual TLS.

The node's gRPC port is mutual TLS only. A load balancer, a kubelet or Prometheus often
cannot present a client certificate, so a node can serve, on separate addresses that
``[monitoring]`` in node.toml names (both off by default):

* ``metrics_listen``: ``GET /metrics``, the node's metrics in Prometheus' text format (or
  OpenMetrics, if the scraper's ``Accept`` asks for it; :mod:`ittc_node.metrics`). Bind
  it to loopback or a management network.
* ``health_listen``: ``GET /healthz`` answers ``200 SERVING`` while the node can sign and
  ``503 NOT_SERVING`` otherwise (starting, audit log or compute failed, certificate
  expired, shutting down): for a readiness probe or a load balancer. ``GET /livez``
  answers ``200`` while the node's event loop runs: for a liveness probe.

Both listeners answer the health paths; only the metrics listener answers ``/metrics``.
Nothing else is served, nothing secret is said, and a request must arrive whole within
:data:`REQUEST_TIMEOUT` seconds and :data:`MAX_REQUEST_BYTES`: this is not a web server,
only what a probe needs. It runs on the node's event loop (no thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ittc.config import parse_address

__all__ = ["MAX_REQUEST_BYTES", "REQUEST_TIMEOUT", "MonitoringServer"]

log = logging.getLogger("ittc_node.monitoring")

#: A probe's request (line and headers) must fit in this many bytes...
MAX_REQUEST_BYTES = 8192
#: ...and arrive within this many seconds.
REQUEST_TIMEOUT = 5.0
#: Connections handled at once per listener; more wait in the kernel's backlog.
MAX_CONNECTIONS = 64

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _header(head: bytes, name: bytes) -> str:
    """The value of header ``name`` (lower case) in a request's head, or ''."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


class MonitoringServer:
    """The HTTP listeners of one node. ``serving`` says whether the node can sign now."""

    def __init__(
        self,
        *,
        serving: Callable[[], bool],
        registry: CollectorRegistry,
        metrics_listen: str | None,
        health_listen: str | None,
    ) -> None:
        self.serving = serving
        self.registry = registry
        self.metrics_listen = metrics_listen
        self.health_listen = health_listen
        self._servers: list[asyncio.Server] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def start(self) -> list[str]:
        """Bind the configured listeners; the addresses bound (``host:port``). Raises
        ``OSError`` if one cannot be bound."""
        bound = []
        wanted: dict[str, bool] = {}
        if self.metrics_listen is not None:
            wanted[self.metrics_listen] = True
        if self.health_listen is not None:
            wanted.setdefault(self.health_listen, False)
        try:
            for address, with_metrics in wanted.items():
                host, port = parse_address(address)
                host = host[1:-1] if host.startswith("[") else host

                async def handle(
                    reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter,
                    with_metrics: bool = with_metrics,
                ) -> None:
                    await self._handle(reader, writer, with_metrics)

                server = await asyncio.start_server(
                    handle, host, port, limit=MAX_REQUEST_BYTES, reuse_address=True
                )
                self._servers.append(server)
                sockname = server.sockets[0].getsockname()
                shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
                bound.append(f"{shown}:{sockname[1]}")
        except BaseException:
            await self.close()
            raise
        return bound

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers = []

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, with_metrics: bool
    ) -> None:
        async with self._slots:
            try:
                answer, head_only = await asyncio.wait_for(
                    self._read(reader, with_metrics), REQUEST_TIMEOUT
                )
                writer.write(self._encode(answer, head_only))
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                pass
            except Exception:  # noqa: BLE001 - a probe must never hurt the node
                log.exception("monitoring request failed")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader, with_metrics: bool) -> tuple[_Answer, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _Answer(400, b"request too large\n"), False
        except asyncio.IncompleteReadError as exc:
            head = exc.partial
            if b"\n" not in head:
                raise
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _Answer(400, b"bad request\n"), False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _Answer(405, b"GET or HEAD only\n"), False
        head_only = method == b"HEAD"
        if target == b"/healthz":
            ok = self.serving()
            return _Answer(200 if ok else 503, b"SERVING\n" if ok else b"NOT_SERVING\n"), head_only
        if target == b"/livez":
            return _Answer(200, b"alive\n"), head_only
        if target == b"/metrics" and with_metrics:
            # Prometheus' text format, or OpenMetrics if the scraper asks for it.
            encoder, content_type = choose_encoder(_header(head, b"accept"))
            return _Answer(200, encoder(self.registry), content_type), head_only
        return _Answer(404, b"not found\n"), head_only

    @staticmethod
    def _encode(answer: _Answer, head_only: bool) -> bytes:
        head = (
            f"HTTP/1.1 {answer.status} {_REASONS[answer.status]}\r\n"
            f"Content-Type: {answer.content_type}\r\n"
            f"Content-Length: {len(answer.body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        return head if head_only else head + answer.body
