"""The combiner: the embedder's API for signing through the cluster.

:class:`ClusterClient` (asyncio) and :class:`SyncClusterClient` (blocking) sign digests
or data with PKCS#1 v1.5 or PSS. For each batch the client asks exactly ``k`` nodes (the
least busy, rotating over all ``n``), combines their shares without proofs and checks
``y^e == x``; only when that check fails does it find who lied (proofs, or more shares
for split keys), leave the liar out and finish through the others. See
:mod:`ittc.combiner.round` for one batch, :mod:`ittc.combiner.pool` for which node is
asked and when, :mod:`ittc.combiner.batcher` for how concurrent calls share RPCs.

Fewer than ``k`` honest nodes reachable within the deadline raise
:class:`~ittc.errors.SigningError`, whose ``nodes`` says what happened to each node.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future as ThreadFuture
from pathlib import Path
from typing import TypeVar, Unpack

import grpc

from ittc.combiner.batcher import Batcher, Pending
from ittc.combiner.combining import Combiner
from ittc.combiner.context import ClientStats, RoundContext
from ittc.combiner.options import ClientOptions, Settings
from ittc.combiner.pool import NodeEvent, NodePool
from ittc.combiner.round import SigningRound
from ittc.combiner.transport import NodeLink, open_links
from ittc.config import ClusterFile
from ittc.errors import CombinerClosed, IttcError, ParameterError, SigningError
from ittc.scheme.encoding import Scheme, SignItem
from ittc.scheme.keyshare import check_representative
from ittc.scheme.params import PublicParams
from ittc.wire.v1 import signer_pb2 as pb

__all__ = ["ClientStats", "ClusterClient", "SignItem", "SyncClusterClient"]

T = TypeVar("T")


class ClusterClient:
    """Signs through the nodes of one cluster. Use as ``async with ClusterClient(...)``.

    ``cluster`` is a cluster folder, its ``cluster.toml``, or a loaded
    :class:`~ittc.config.ClusterFile`; the options are those of
    :class:`~ittc.combiner.options.ClientOptions`.
    """

    def __init__(self, cluster: ClusterFile | str | Path, **options: Unpack[ClientOptions]) -> None:
        self.cluster = cluster if isinstance(cluster, ClusterFile) else ClusterFile.load(cluster)
        self.params: PublicParams = self.cluster.params
        self.settings = Settings.from_options(options)
        s = self.settings
        cert = s.cert or self.cluster.client_cert
        key = s.key or self.cluster.client_key
        if cert is None or key is None:
            raise ParameterError(
                "no client identity: give cert= and key= or list one in the "
                "cluster file's [client] table"
            )
        self._cert, self._key = cert, key
        self.stats = ClientStats()
        self.pool = NodePool(
            [entry.index for entry in self.cluster.nodes],
            node_timeout=s.node_timeout,
            hedge_after=s.hedge_after,
        )
        self._links: dict[int, NodeLink] = {}
        self._combiner = Combiner(self.params)
        self._batcher = Batcher(
            self._sign_batch,
            max_batch=s.max_batch,
            max_inflight=s.max_inflight_batches or max(4, 2 * self.params.n),
        )
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    def _connect(self) -> dict[int, NodeLink]:
        if self._closed:
            raise CombinerClosed("client closed")
        if not self._links:
            self._links = open_links(self.cluster, self._cert, self._key, self.settings.clock)
        return self._links

    async def __aenter__(self) -> ClusterClient:
        self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Fail queued calls, cancel in-flight work and close every channel."""
        if self._closed:
            return
        self._closed = True
        await self._batcher.close(CombinerClosed("client closed"))
        for link in self._links.values():
            await link.close()
        self._combiner.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- observing ---------------------------------------------------------------------

    def add_listener(self, listener: Callable[[NodeEvent], None]) -> None:
        """Call ``listener`` with every :class:`~ittc.combiner.pool.NodeEvent` (a node
        asked, answered, failed, cleared, lied or was suspected): for metrics and logs."""
        self.pool.add_listener(listener)

    @property
    def channels(self) -> Mapping[int, grpc.aio.Channel]:
        """The gRPC channel to each node (opened on first use)."""
        return {index: link.channel for index, link in self._connect().items()}

    @property
    def busy(self) -> int:
        """Items queued plus batches in flight (0 when the client is idle)."""
        return self._batcher.queued + self._batcher.inflight

    # -- signing -----------------------------------------------------------------------

    async def sign(
        self,
        data: bytes | None = None,
        *,
        digest: bytes | None = None,
        padding: Scheme | str = Scheme.PKCS1V15,
        hash_name: str = "sha256",
        salt_length: int | None = None,
    ) -> bytes:
        """Sign ``data`` (hashed here) or a precomputed ``digest``; returns the signature."""
        item = SignItem.make(
            data=data, digest=digest, padding=padding, hash_name=hash_name, salt_length=salt_length
        )
        return await self.sign_item(item)

    async def sign_item(self, item: SignItem) -> bytes:
        return (await self.sign_items([item]))[0]

    async def sign_items(self, items: Iterable[SignItem]) -> list[bytes]:
        """Sign many items; they share RPCs with each other and with concurrent calls."""
        self._connect()
        loop = asyncio.get_running_loop()
        pending = []
        for item in items:
            x = item.representative(self.params.bits)
            check_representative(self.params, x)
            pending.append(Pending(item, x, loop.create_future()))
        if not pending:
            return []
        self._batcher.submit(pending)
        futures = [p.future for p in pending]
        deadline = self.settings.deadline
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), deadline))
        except TimeoutError:
            raise SigningError(
                f"no signature within the deadline of {deadline:g} s", self.pool.reasons()
            ) from None

    async def _sign_batch(self, batch: list[Pending]) -> list[bytes | IttcError]:
        self.stats.batches += 1
        ctx = RoundContext(
            self.params, self.settings, self.pool, self._links, self._combiner, self.stats
        )
        results = await SigningRound(ctx, batch, time.monotonic() + self.settings.deadline).run()
        self.stats.signatures += sum(isinstance(r, bytes) for r in results)
        return results

    # -- the nodes ---------------------------------------------------------------------

    async def health(self) -> dict[int, str]:
        """Each node's ``grpc.health.v1`` status name (``SERVING``...), or why it could not
        be asked. Needs no allowed identity, only a certificate of the cluster CA."""
        links = self._connect()
        timeout = self.settings.node_timeout
        answers = await asyncio.gather(*(link.health(timeout) for link in links.values()))
        return dict(zip(links, answers, strict=True))

    async def info(self) -> dict[int, pb.NodeInfo | str]:
        """Each node's self-description, or why it could not be asked."""
        links = self._connect()
        timeout = self.settings.node_timeout
        answers = await asyncio.gather(*(link.info(timeout) for link in links.values()))
        return dict(zip(links, answers, strict=True))


class SyncClusterClient:
    """Blocking wrapper: the async client runs on an event loop in a background thread.

    Thread-safe: calls from many threads are batched together like concurrent async calls.
    Takes the same options as :class:`ClusterClient`.
    """

    def __init__(self, cluster: ClusterFile | str | Path, **options: Unpack[ClientOptions]) -> None:
        self._client = ClusterClient(cluster, **options)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="ittc-client-loop", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._call(self._client.__aenter__())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Awaitable[T]) -> T:
        if not self._loop.is_running():
            if asyncio.iscoroutine(coro):
                coro.close()
            raise CombinerClosed("client closed")
        future: ThreadFuture[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result()

    @property
    def params(self) -> PublicParams:
        return self._client.params

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    @property
    def client(self) -> ClusterClient:
        """The asynchronous client underneath (its pool, listeners, settings)."""
        return self._client

    def sign(
        self,
        data: bytes | None = None,
        *,
        digest: bytes | None = None,
        padding: Scheme | str = Scheme.PKCS1V15,
        hash_name: str = "sha256",
        salt_length: int | None = None,
    ) -> bytes:
        """Sign ``data`` (hashed here) or a precomputed ``digest``; returns the signature."""
        item = SignItem.make(
            data=data, digest=digest, padding=padding, hash_name=hash_name, salt_length=salt_length
        )
        return self._call(self._client.sign_item(item))

    def sign_items(self, items: Iterable[SignItem]) -> list[bytes]:
        return self._call(self._client.sign_items(list(items)))

    def info(self) -> dict[int, pb.NodeInfo | str]:
        return self._call(self._client.info())

    def health(self) -> dict[int, str]:
        return self._call(self._client.health())

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._call(self._client.close())
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SyncClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
