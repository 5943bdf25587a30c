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

**Epochs.** Every batch is signed in one epoch of the key, with that epoch's parameters,
nodes and connections (an :class:`EpochView`); requests name the epoch and answers of
another epoch are refused, so shares of two epochs never meet in one combine. The client
follows its cluster file: before a batch it looks (at most once a second, and at once
when a node says it signs in a newer epoch) whether the file names a newer epoch of the
same key, and if so signs the next batches in that epoch, without a restart. When the
file does not name that epoch yet (it is copied to this host later, or never), the client
asks the node for the commit certificates since its epoch and checks them itself against
the sites its cluster file lists (a certificate proves itself: the plan was approved by
``k`` sites of the epoch before, and every new member acknowledged); it then signs in the
epoch they prove, in memory. Items a node refused for a newer epoch are signed again in it.
A node still in the epoch before the client's (a commit that did not reach it) is handed
the epoch's commit certificate (a node accepts one from anyone) and asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, Unpack

import grpc
from cryptography import x509

from ittc.combiner import certcheck
from ittc.combiner.batcher import Batcher, Pending
from ittc.combiner.certcheck import CertificateWatch
from ittc.combiner.combining import Combiner
from ittc.combiner.context import ClientStats, RoundContext
from ittc.combiner.options import ClientOptions, Settings
from ittc.combiner.pool import NodeEvent, NodePool
from ittc.combiner.round import SigningRound
from ittc.combiner.transport import NodeLink, open_links
from ittc.config import ClusterFile, NodeEntry
from ittc.errors import (
    CombinerClosed,
    IttcError,
    NodeError,
    NodeInOtherEpoch,
    ParameterError,
    SigningError,
)
from ittc.lifecycle import Certificate
from ittc.scheme.encoding import Scheme, SignItem
from ittc.scheme.keyshare import check_representative
from ittc.scheme.params import PublicParams
from ittc.wire import tls
from ittc.wire.v1 import signer_pb2 as pb

__all__ = ["ClientStats", "ClusterClient", "EpochView", "SignItem", "SyncClusterClient"]

T = TypeVar("T")

log = logging.getLogger("ittc.combiner")

#: How often (seconds) the client looks at its cluster file for a newer epoch.
FOLLOW_INTERVAL = 1.0


@dataclass
class EpochView:
    """One epoch of the key as the client signs in it: the cluster file that named it,
    its parameters, a node pool, the connections (opened on first use) and a combiner.
    A batch uses one view from start to end."""

    cluster: ClusterFile
    pool: NodePool
    combiner: Combiner
    links: dict[int, NodeLink] = field(default_factory=dict)
    #: Batches running in this view (its channels close when it is replaced and idle).
    users: int = 0
    retired: bool = False
    #: Nodes handed this epoch's certificate already (each is handed it once).
    handed: set[int] = field(default_factory=set)
    #: The epoch's commit certificate, when the client learned the epoch from it (else
    #: the cluster file names its file).
    certificate: bytes | None = None

    @property
    def params(self) -> PublicParams:
        return self.cluster.params

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
        self.links = {}
        self.combiner.close()


def _follow_chain(cluster: ClusterFile, chain: list[bytes]) -> tuple[ClusterFile, bytes | None]:
    """The cluster as the certificates in ``chain`` move it on, epoch by epoch, each one
    checked against the epoch before; stops at the first that does not prove the next
    epoch. Returns ``cluster`` itself and None if none does."""
    last = None
    for raw in chain:
        try:
            certificate = Certificate.from_json(raw)
            if certificate.epoch != cluster.params.epoch + 1:
                continue
            certificate.verify(cluster.params, cluster.sites())
        except IttcError as exc:
            log.warning("a certificate that does not prove the next epoch: %s", exc)
            break
        nodes = tuple(
            NodeEntry(m.index, m.address, m.tls_name, m.site) for m in certificate.plan.members
        )
        cluster = dataclasses.replace(
            cluster, params=certificate.params, nodes=nodes, certificate=None, params_path=None
        )
        last = raw
    return cluster, last


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class ClusterClient:
    """Signs through the nodes of one cluster. Use as ``async with ClusterClient(...)``.

    ``cluster`` is a cluster folder, its ``cluster.toml``, or a loaded
    :class:`~ittc.config.ClusterFile`; the options are those of
    :class:`~ittc.combiner.options.ClientOptions`.
    """

    def __init__(self, cluster: ClusterFile | str | Path, **options: Unpack[ClientOptions]) -> None:
        loaded = cluster if isinstance(cluster, ClusterFile) else ClusterFile.load(cluster)
        self.settings = Settings.from_options(options)
        s = self.settings
        cert = s.cert or loaded.client_cert
        key = s.key or loaded.client_key
        if cert is None or key is None:
            raise ParameterError(
                "no client identity: give cert= and key= or list one in the "
                "cluster file's [client] table"
            )
        self._cert, self._key = cert, key
        self.stats = ClientStats()
        self._listeners: list[Callable[[NodeEvent], None]] = []
        self._view = self._new_view(loaded)
        self._watched = _file_state(loaded.path)
        self._identity_watched = self._identity_state(loaded)
        self._certificates = CertificateWatch(s.clock)
        self._certificate_task: asyncio.Task[None] | None = None
        self._looked_at = time.monotonic()
        self._retired: list[EpochView] = []
        self._batcher = Batcher(
            self._sign_batch,
            max_batch=s.max_batch,
            max_inflight=s.max_inflight_batches or max(4, 2 * loaded.params.n),
        )
        self._closed = False

    # -- epochs ------------------------------------------------------------------------

    def _new_view(self, cluster: ClusterFile) -> EpochView:
        pool = NodePool(
            [entry.index for entry in cluster.nodes],
            node_timeout=self.settings.node_timeout,
            hedge_after=self.settings.hedge_after,
        )
        for listener in self._listeners:
            pool.add_listener(listener)
        return EpochView(cluster, pool, Combiner(cluster.params))

    @property
    def cluster(self) -> ClusterFile:
        """The cluster file of the epoch the client signs in now."""
        return self._view.cluster

    @property
    def params(self) -> PublicParams:
        """The parameters of the epoch the client signs in now."""
        return self._view.params

    @property
    def pool(self) -> NodePool:
        """The node pool of the current epoch."""
        return self._view.pool

    @property
    def epoch(self) -> int:
        return self._view.params.epoch

    def follow(self, *, force: bool = False) -> bool:
        """Look at the cluster file (at most once per :data:`FOLLOW_INTERVAL` unless
        ``force``); if it names a newer epoch of the same key, sign in that epoch from the
        next batch on. True if the epoch changed. A file that does not load, names another
        key, or an older or equal epoch changes nothing (the first two are logged)."""
        now = time.monotonic()
        if not force and now - self._looked_at < FOLLOW_INTERVAL:
            return False
        self._looked_at = now
        self._follow_identity()
        path = self._view.cluster.path
        state = _file_state(path)
        if state is None or state == self._watched:
            return False
        self._watched = state
        try:
            loaded = ClusterFile.load(path)
        except IttcError as exc:
            log.warning("cluster file %s changed but cannot be used: %s", path, exc)
            return False
        current = self._view.params
        if loaded.params.key_id != current.key_id:
            log.error(
                "cluster file %s now names key %s, not %s: ignored (a client signs with one key)",
                path,
                loaded.params.short_id,
                current.short_id,
            )
            return False
        if loaded.params.epoch <= current.epoch:
            return False
        self._switch(loaded)
        return True

    def _identity_state(self, cluster: ClusterFile) -> tuple[object, ...]:
        return tuple(_file_state(p) for p in (cluster.ca, self._cert, self._key))

    def _follow_identity(self) -> None:
        """If the CA file or the client's certificate or key changed (a renewal, a CA
        rotation), make new connections with them: batches under way finish on the old
        ones, the next use the new ones. A change that does not make a working identity
        (a file half-copied, a key that is not the certificate's) is logged and ignored."""
        cluster = self._view.cluster
        state = self._identity_state(cluster)
        if state == self._identity_watched:
            return
        self._identity_watched = state
        try:
            tls.client_credentials(self._cert, self._key, cluster.ca, now=self.settings.clock())
        except IttcError as exc:
            log.error("client identity or CA changed but cannot be used (kept the old): %s", exc)
            return
        view = self._new_view(cluster)
        view.certificate = self._view.certificate
        self._replace_view(view)
        log.warning(
            "client identity or CA files changed (%s, %s, %s): new connections use them",
            self._cert,
            self._key,
            cluster.ca,
        )
        self._certificates.check_own(self._cert)

    def _replace_view(self, view: EpochView) -> None:
        old = self._view
        self._view = view
        old.retired = True
        self._retired.append(old)

    def _switch(self, cluster: ClusterFile, certificate: bytes | None = None) -> None:
        old = self._view
        view = self._new_view(cluster)
        view.certificate = certificate
        self._replace_view(view)
        log.warning(
            "key %s: now signing in epoch %d (%d of %d nodes), was epoch %d",
            cluster.params.short_id,
            cluster.params.epoch,
            cluster.params.k,
            cluster.params.n,
            old.params.epoch,
        )

    async def _close_idle_views(self) -> None:
        idle = [v for v in self._retired if v.users == 0]
        self._retired = [v for v in self._retired if v.users]
        for view in idle:
            await view.close()

    # -- lifecycle ---------------------------------------------------------------------

    def _connect(self, view: EpochView | None = None) -> dict[int, NodeLink]:
        if self._closed:
            raise CombinerClosed("client closed")
        view = view or self._view
        if not view.links:
            view.links = open_links(view.cluster, self._cert, self._key, self.settings.clock)
            if self._certificate_task is None:
                self._certificates.check_own(self._cert)
                with contextlib.suppress(RuntimeError):  # no running loop: no watch
                    self._certificate_task = asyncio.get_running_loop().create_task(
                        self._watch_certificates()
                    )
        return view.links

    async def _watch_certificates(self) -> None:
        """Now and then, warn about the client's certificate and the nodes' (certcheck)."""
        await asyncio.sleep(certcheck.FIRST_CHECK)
        while not self._closed:
            self._certificates.check_own(self._cert)
            await self.certificates()
            await asyncio.sleep(certcheck.CHECK_INTERVAL)

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
        if self._certificate_task is not None:
            self._certificate_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._certificate_task
        await self._batcher.close(CombinerClosed("client closed"))
        for view in [self._view, *self._retired]:
            await view.close()
        self._retired = []

    @property
    def closed(self) -> bool:
        return self._closed

    # -- observing ---------------------------------------------------------------------

    def add_listener(self, listener: Callable[[NodeEvent], None]) -> None:
        """Call ``listener`` with every :class:`~ittc.combiner.pool.NodeEvent` (a node
        asked, answered, failed, cleared, lied or was suspected): for metrics and logs."""
        self._listeners.append(listener)
        self._view.pool.add_listener(listener)

    @property
    def channels(self) -> Mapping[int, grpc.aio.Channel]:
        """The gRPC channel to each node of the current epoch (opened on first use)."""
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
        end = time.monotonic() + self.settings.deadline
        self.follow()
        results, seen = await self._round(self._view, batch, end)
        # Nodes that sign in a newer epoch: if the cluster file names it now, sign what
        # they refused in that epoch (once; never mixing: a new round, a new view).
        newer = self._newer_epoch_nodes(seen)
        if newer and (self.follow(force=True) or await self._learn(newer)):
            seen = await self._retry(results, batch, end)
        # Nodes still in an older epoch: hand them this epoch's certificate, and ask again
        # for anything that failed.
        if await self._hand_certificate(self._view, self._older_epoch_nodes(seen)):
            await self._retry(results, batch, end)
        self.stats.signatures += sum(isinstance(r, bytes) for r in results)
        await self._close_idle_views()
        return results

    async def _round(
        self, view: EpochView, batch: list[Pending], end: float
    ) -> tuple[list[bytes | IttcError], list[NodeError]]:
        """One signing round in ``view``'s epoch: a result per item, and what went wrong
        with nodes on the way (even if the round signed everything)."""
        links = self._connect(view)
        view.users += 1
        try:
            ctx = RoundContext(
                view.params, self.settings, view.pool, links, view.combiner, self.stats
            )
            signing = SigningRound(ctx, batch, end)
            results = await signing.run()
            seen = list(signing.named.values())
            for result in results:
                if isinstance(result, SigningError):
                    seen.extend(result.nodes.values())
            return results, seen
        finally:
            view.users -= 1

    async def _retry(
        self, results: list[bytes | IttcError], batch: list[Pending], end: float
    ) -> list[NodeError]:
        """Sign again, in the current view, the items that failed; what went wrong."""
        again = [i for i, r in enumerate(results) if not isinstance(r, bytes)]
        if not again or time.monotonic() >= end:
            return []
        retried, seen = await self._round(self._view, [batch[i] for i in again], end)
        for i, result in zip(again, retried, strict=True):
            results[i] = result
        return seen

    def _older_epoch_nodes(self, seen: list[NodeError]) -> set[int]:
        epoch = self._view.params.epoch
        return {e.node for e in seen if isinstance(e, NodeInOtherEpoch) and (e.epoch or 0) < epoch}

    async def _hand_certificate(self, view: EpochView, nodes: set[int]) -> bool:
        """Give ``nodes`` the certificate of ``view``'s epoch (once each). True if one of
        them committed."""
        path = view.cluster.certificate
        nodes = nodes - view.handed
        if not nodes or (path is None and view.certificate is None):
            return False
        if view.certificate is not None:
            certificate = view.certificate
        else:
            assert path is not None
            try:
                certificate = path.read_bytes()
            except OSError as exc:
                log.warning("cannot read the commit certificate %s: %s", path, exc.strerror)
                return False
        view.handed.update(nodes)
        links = self._connect(view)
        outcomes = await asyncio.gather(
            *(links[i].commit(certificate, self.settings.node_timeout) for i in sorted(nodes)),
            return_exceptions=True,
        )
        committed = False
        for index, outcome in zip(sorted(nodes), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "node %d is in an older epoch and did not take epoch %d's certificate: %s",
                    index,
                    view.params.epoch,
                    outcome,
                )
            else:
                log.warning(
                    "node %d was in an older epoch: handed it epoch %d's certificate, it committed",
                    index,
                    view.params.epoch,
                )
                view.pool.cleared(index)
                committed = True
        return committed

    def _newer_epoch_nodes(self, seen: list[NodeError]) -> list[int]:
        epoch = self._view.params.epoch
        return sorted(
            {e.node for e in seen if isinstance(e, NodeInOtherEpoch) and (e.epoch or 0) > epoch}
        )

    async def _learn(self, nodes: list[int]) -> bool:
        """Follow, in memory, the epochs whose certificates a node in a newer epoch holds,
        each checked against the epoch before (starting from the cluster file's sites).
        True if the client moved to a newer epoch."""
        view = self._view
        if any(n.site is None for n in view.cluster.nodes):
            log.warning(
                "nodes sign in a newer epoch than %s names, and it lists no site identities "
                "to check their certificates with: copy the new cluster file here",
                view.cluster.path,
            )
            return False
        links = self._connect(view)
        for index in nodes[:3]:
            try:
                chain = await links[index].certificates(
                    view.params.epoch, self.settings.node_timeout
                )
            except NodeError as exc:
                log.warning("node %d: no certificates: %s", index, exc.reason)
                continue
            cluster, last = await asyncio.to_thread(_follow_chain, view.cluster, chain)
            if cluster is not view.cluster:
                log.warning(
                    "key %s: epoch %d proved by its commit certificate (from node %d); %s "
                    "still names epoch %d: copy the new cluster file here",
                    cluster.params.short_id,
                    cluster.params.epoch,
                    index,
                    view.cluster.path,
                    view.params.epoch,
                )
                self._switch(cluster, last)
                return True
        return False

    # -- the nodes ---------------------------------------------------------------------

    async def health(self) -> dict[int, str]:
        """Each node's ``grpc.health.v1`` status name (``SERVING``...), or why it could not
        be asked. Needs no allowed identity, only a certificate of the cluster CA."""
        links = self._connect()
        timeout = self.settings.node_timeout
        answers = await asyncio.gather(*(link.health(timeout) for link in links.values()))
        return dict(zip(links, answers, strict=True))

    async def certificates(self) -> dict[int, x509.Certificate | str]:
        """The certificate each node presents now (by a TLS handshake of its own), or why
        it could not be had; one expiring within 30 days is warned about (logger
        ``ittc.combiner``)."""
        found = await certcheck.node_certificates(
            self.cluster, self._cert, self._key, self.settings.node_timeout
        )
        self._certificates.check_nodes(found)
        return found

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

    def certificates(self) -> dict[int, x509.Certificate | str]:
        return self._call(self._client.certificates())

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
