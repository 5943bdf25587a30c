"""The combiner: the embedder's API for signing through the cluster.

:class:`ClusterClient` (asyncio) and :class:`SyncClusterClient` (blocking) sign digests
or data with PKCS#1 v1.5 or PSS. For each signature the client asks exactly ``k`` nodes
(the least busy ones, rotating over all ``n``), combines their shares without proofs and
checks ``y^e == x``; only when that check fails does it ask for more shares and for
proofs, name the bad nodes, and finish from honest shares (DESIGN.md section 2).

Concurrent calls are batched: everything queued while earlier batches are in flight
goes out in one RPC per node. A node that errs or is slow is replaced by another
(hedging); a node that failed is retried after a backoff, so it rejoins once it is back.
Fewer than ``k`` honest nodes reachable within the deadline raise
:class:`~ittc.errors.SigningError` naming each node and why.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ittc.config import ClusterFile, NodeEntry
from ittc.errors import IttcError, NotEnoughShares, ParameterError, SigningError
from ittc.scheme.combine import CombineResult, combine_robust
from ittc.scheme.ct import release_gil
from ittc.scheme.encoding import Scheme, encode, hash_spec
from ittc.scheme.keyshare import check_representative
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import L1, Proof, SignatureShare, nonce_bits, verify_share
from ittc.wire import tls
from ittc.wire.v1 import signer_pb2 as pb
from ittc.wire.v1 import signer_pb2_grpc as pb_grpc

__all__ = ["ClientStats", "ClusterClient", "SignItem", "SyncClusterClient"]

log = logging.getLogger("ittc.client")

_PADDING = {Scheme.PKCS1V15: pb.PADDING_PKCS1V15, Scheme.PSS: pb.PADDING_PSS}
_HASH = {"sha256": pb.HASH_SHA256, "sha384": pb.HASH_SHA384, "sha512": pb.HASH_SHA512}
_MAX_MESSAGE = 4 << 20
#: A failing or silent node is retried after at most this long, so a healed partition
#: brings it back within seconds (a dead node costs one failed RPC per interval).
MAX_BACKOFF = 5.0
#: Round trips older than this say nothing about a node's speed now (seconds).
_LATENCY_MEMORY = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class SignItem:
    """One thing to sign: the encoding, the hash, the digest and (PSS) the salt."""

    padding: Scheme
    hash_name: str
    digest: bytes
    salt: bytes = b""

    @classmethod
    def make(
        cls,
        *,
        data: bytes | None = None,
        digest: bytes | None = None,
        padding: Scheme | str = Scheme.PKCS1V15,
        hash_name: str = "sha256",
        salt_length: int | None = None,
    ) -> SignItem:
        """Hash ``data`` (or take ``digest``) and draw a fresh PSS salt if needed."""
        scheme = Scheme(padding) if isinstance(padding, str) else padding
        spec = hash_spec(hash_name)
        if (data is None) == (digest is None):
            raise ParameterError("give exactly one of data or digest")
        if digest is None:
            assert data is not None
            digest = hashlib.new(spec.name, data).digest()
        salt = b""
        if scheme is Scheme.PSS:
            salt = os.urandom(spec.digest_size if salt_length is None else salt_length)
        elif salt_length:
            raise ParameterError("PKCS#1 v1.5 has no salt")
        return cls(scheme, spec.name, bytes(digest), salt)

    def to_proto(self) -> pb.SignItem:
        return pb.SignItem(
            padding=_PADDING[self.padding],
            hash=_HASH[self.hash_name],
            digest=self.digest,
            salt=self.salt,
        )


@dataclass
class ClientStats:
    """Counters a pipeline can export: what the client did and whom it blamed."""

    signatures: int = 0
    batches: int = 0
    rpcs: int = 0
    hedges: int = 0
    proof_rounds: int = 0
    node_failures: collections.Counter[int] = field(default_factory=collections.Counter)
    #: Node index -> number of times its shares were found wrong.
    blamed: collections.Counter[int] = field(default_factory=collections.Counter)


@dataclass
class _Pending:
    item: SignItem
    x: int
    future: asyncio.Future[bytes]


class _NodeFailure(Exception):
    def __init__(self, reason: str, *, lying: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lying = lying


@dataclass
class _Node:
    entry: NodeEntry
    stub: pb_grpc.SignerStub
    channel: grpc.aio.Channel
    inflight: int = 0
    #: Not used before this time (monotonic) after a failure; 0 = healthy.
    down_until: float = 0.0
    backoff: float = 0.0
    #: Quarantined for lying until this time.
    suspect_until: float = 0.0
    latency: float = 0.0  # EWMA of successful RPC round trips, seconds
    latency_at: float = 0.0  # when the last round trip was measured (monotonic)

    @property
    def index(self) -> int:
        return self.entry.index


class ClusterClient:
    """Signs through the nodes of one cluster. Use as ``async with ClusterClient(...)``.

    ``mode="exact"`` asks ``k`` nodes per batch (hedging to others on failure or
    slowness); ``mode="all"`` asks all ``n`` and uses the first ``k`` answers, for the
    lowest latency at ``n/k`` times the work. ``proofs="always"`` asks every node to prove
    its shares; the default asks for proofs only when a combined signature is wrong.
    """

    def __init__(
        self,
        cluster: ClusterFile | str | Path,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        mode: Literal["exact", "all"] = "exact",
        proofs: Literal["on-failure", "always"] = "on-failure",
        deadline: float = 10.0,
        node_timeout: float = 5.0,
        hedge_after: float | None = None,
        max_batch: int = 64,
        max_inflight_batches: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster if isinstance(cluster, ClusterFile) else ClusterFile.load(cluster)
        self.params: PublicParams = self.cluster.params
        if mode not in ("exact", "all") or proofs not in ("on-failure", "always"):
            raise ParameterError("mode is 'exact' or 'all'; proofs is 'on-failure' or 'always'")
        if deadline <= 0 or node_timeout <= 0 or not 1 <= max_batch <= 4096:
            raise ParameterError("deadline and node_timeout must be positive, max_batch 1..4096")
        cert = cert or self.cluster.client_cert
        key = key or self.cluster.client_key
        if cert is None or key is None:
            raise ParameterError(
                "no client identity: give cert= and key= or list one in the "
                "cluster file's [client] table"
            )
        self._creds = tls.channel_credentials(cert, key, self.cluster.ca)
        self.mode, self.proofs = mode, proofs
        self.deadline, self.node_timeout, self.hedge_after = deadline, node_timeout, hedge_after
        self.max_batch = max_batch
        self.max_inflight_batches = max_inflight_batches or max(4, 2 * self.params.n)
        self.clock = clock
        self.stats = ClientStats()
        self._nodes: dict[int, _Node] = {}
        self._pending: collections.deque[_Pending] = collections.deque()
        self._flush_scheduled = False
        self._inflight_batches = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rotation = 0
        self._closed = False
        # Combining (and checking proofs) off the event loop, on every core: gmpy2
        # releases the GIL in these threads.
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------

    def _ensure_channels(self) -> None:
        if self._nodes:
            return
        for entry in self.cluster.nodes:
            options = tls.channel_options(entry.tls_name, _MAX_MESSAGE) + [
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
                ("grpc.keepalive_time_ms", 10000),
                ("grpc.keepalive_timeout_ms", 5000),
            ]
            channel = grpc.aio.secure_channel(entry.address, self._creds, options=options)
            stub = pb_grpc.SignerStub(channel)  # type: ignore[no-untyped-call]
            self._nodes[entry.index] = _Node(entry, stub, channel)

    async def __aenter__(self) -> ClusterClient:
        self._ensure_channels()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Fail queued calls, cancel in-flight work and close every channel."""
        self._closed = True
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                p.future.set_exception(SigningError("client closed"))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for node in self._nodes.values():
            await node.channel.close()
        self._nodes.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- public API -------------------------------------------------------------------

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
        if self._closed:
            raise SigningError("client closed")
        self._ensure_channels()
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            x = self._representative(item)
            fut: asyncio.Future[bytes] = loop.create_future()
            self._pending.append(_Pending(item, x, fut))
            futures.append(fut)
        self._schedule_flush()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), self.deadline))
        except TimeoutError:
            raise SigningError(
                f"no signature within the deadline of {self.deadline:g} s", self._node_states()
            ) from None

    async def health(self) -> dict[int, str]:
        """Each node's ``grpc.health.v1`` status name (``SERVING``...), or why it could not
        be asked. Needs no allowed identity, only a certificate of the cluster CA."""
        self._ensure_channels()

        async def one(node: _Node) -> str:
            stub = health_pb2_grpc.HealthStub(node.channel)
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=self.node_timeout
                )
            except grpc.aio.AioRpcError as exc:
                return f"UNREACHABLE ({exc.code().name})"
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

        nodes = list(self._nodes.values())
        answers = await asyncio.gather(*(one(n) for n in nodes))
        return {n.index: a for n, a in zip(nodes, answers, strict=True)}

    async def info(self) -> dict[int, pb.NodeInfo | str]:
        """Each node's self-description, or why it could not be asked."""
        self._ensure_channels()

        async def one(node: _Node) -> pb.NodeInfo | str:
            try:
                info: pb.NodeInfo = await node.stub.GetInfo(
                    pb.GetInfoRequest(), timeout=self.node_timeout
                )
                return info
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}: {exc.details()}"

        nodes = list(self._nodes.values())
        answers = await asyncio.gather(*(one(n) for n in nodes))
        return {n.index: a for n, a in zip(nodes, answers, strict=True)}

    # -- batching ---------------------------------------------------------------------

    def _representative(self, item: SignItem) -> int:
        x = encode(item.padding, item.hash_name, item.digest, self.params.bits, item.salt)
        check_representative(self.params, x)
        return x

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending and self._inflight_batches < self.max_inflight_batches:
            batch: list[_Pending] = []
            while self._pending and len(batch) < self.max_batch:
                p = self._pending.popleft()
                if not p.future.done():  # a caller that timed out is not signed for
                    batch.append(p)
            if not batch:
                break
            self._inflight_batches += 1
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._inflight_batches -= 1
        if self._pending and not self._closed:
            self._schedule_flush()

    async def _run_batch(self, batch: list[_Pending]) -> None:
        self.stats.batches += 1
        try:
            signatures = await self._sign_batch(batch)
        except IttcError as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        except Exception as exc:  # pragma: no cover - a bug; never leave callers hanging
            log.exception("internal error while signing")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(SigningError(f"internal error: {exc!r}"))
            return
        for p, sig in zip(batch, signatures, strict=True):
            if not p.future.done():
                if isinstance(sig, bytes):
                    p.future.set_result(sig)
                    self.stats.signatures += 1
                else:
                    p.future.set_exception(sig)

    # -- node selection ---------------------------------------------------------------

    def _typical_latency(self) -> float:
        """Median round trip of the nodes that answered lately (0 when none has)."""
        known = sorted(n.latency for n in self._nodes.values() if n.latency > 0)
        return known[len(known) // 2] if known else 0.0

    def _available(self, exclude: set[int]) -> list[_Node]:
        """Nodes to ask next: healthy first (least busy, rotating; markedly slow ones after
        the others), then recovering ones, then quarantined ones."""
        now = time.monotonic()
        nodes = [n for n in self._nodes.values() if n.index not in exclude]
        n = len(self._nodes)
        self._rotation = (self._rotation + 1) % max(n, 1)
        slow = 3 * self._typical_latency()

        def rank(node: _Node) -> tuple[int, int, int]:
            if node.suspect_until > now:
                state = 3
            elif node.down_until > now:
                state = 2
            else:
                # Slow lately: after the others. An old measurement does not count, so a
                # node that was slow once is tried again and measured afresh.
                recent = now - node.latency_at <= _LATENCY_MEMORY
                state = 1 if slow and recent and node.latency > slow else 0
            return (state, node.inflight, (node.index - self._rotation) % n)

        return sorted(nodes, key=rank)

    def _node_states(self) -> dict[int, str]:
        now = time.monotonic()
        out = {}
        for node in self._nodes.values():
            if node.suspect_until > now:
                out[node.index] = "quarantined after sending bad shares"
            elif node.down_until > now:
                out[node.index] = "unreachable or failing (backing off)"
        return out

    def _mark_failed(self, node: _Node, reason: str) -> None:
        self.stats.node_failures[node.index] += 1
        self._back_off(node)
        log.warning("node %d failed: %s (retry in %.2f s)", node.index, reason, node.backoff)

    def _mark_slow(self, node: _Node) -> None:
        """The node was hedged around and had not answered when the batch was done:
        prefer the others for a while (it is asked again after the backoff)."""
        self._back_off(node)
        log.info("node %d is slow: hedged around (asked again in %.2f s)", node.index, node.backoff)

    @staticmethod
    def _back_off(node: _Node) -> None:
        # One step per outage: the many RPCs that were in flight when a node died (or
        # went silent) fail together and must not push its backoff to the maximum.
        now = time.monotonic()
        if node.down_until <= now:
            node.backoff = min(max(node.backoff * 2, 0.25), MAX_BACKOFF)
            node.down_until = now + node.backoff

    def _mark_ok(self, node: _Node, elapsed: float) -> None:
        node.down_until = 0.0
        node.backoff = 0.0
        now = time.monotonic()
        stale = now - node.latency_at > _LATENCY_MEMORY
        node.latency = elapsed if stale else 0.8 * node.latency + 0.2 * elapsed
        node.latency_at = now

    def _blame(self, index: int, reason: str) -> None:
        node = self._nodes[index]
        self.stats.blamed[index] += 1
        quarantine = min(5.0 * 2 ** (self.stats.blamed[index] - 1), 600.0)
        node.suspect_until = time.monotonic() + quarantine
        log.warning(
            "node %d sent a bad share: %s (quarantined for %.0f s)", index, reason, quarantine
        )

    def _hedge_delay(self) -> float:
        """How long to wait for a node before asking another: a few typical round trips
        (the median over all nodes, so one slow node does not set its own timeout)."""
        if self.hedge_after is not None:
            return self.hedge_after
        typical = self._typical_latency() or 0.25
        return min(max(4 * typical, 0.05), self.node_timeout)

    # -- one RPC ----------------------------------------------------------------------

    async def _ask(
        self, node: _Node, batch: Sequence[_Pending], with_proofs: bool, timeout: float
    ) -> list[SignatureShare]:
        request = pb.SignRequest(
            request_id=secrets.token_urlsafe(18),
            timestamp_ms=int(self.clock() * 1000),
            key_id=self.params.key_id,
            with_proofs=with_proofs,
            items=[p.item.to_proto() for p in batch],
        )
        node.inflight += len(batch)
        self.stats.rpcs += 1
        started = time.monotonic()
        try:
            response = await node.stub.Sign(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details()}"
            self._mark_failed(node, reason)
            raise _NodeFailure(reason) from None
        finally:
            node.inflight -= len(batch)
        shares = self._parse(node, response, len(batch), with_proofs)
        self._mark_ok(node, time.monotonic() - started)
        return shares

    def _parse(
        self, node: _Node, response: pb.SignResponse, count: int, with_proofs: bool
    ) -> list[SignatureShare]:
        """Shares from a node's answer, checked for shape; the index is the node's own."""
        params = self.params
        if response.index != node.index:
            raise _NodeFailure(f"answered as node {response.index}", lying=True)
        if response.key_id != params.key_id:
            raise _NodeFailure("answered for another key", lying=True)
        if len(response.shares) != count:
            raise _NodeFailure(
                f"returned {len(response.shares)} shares for {count} items", lying=True
            )
        z_bytes = (nonce_bits(params) + 1 + 7) // 8 + 1
        out = []
        for share in response.shares:
            if len(share.value) != params.size_bytes:
                raise _NodeFailure("share of the wrong length", lying=True)
            proof = None
            if with_proofs:
                if not 0 < len(share.proof_c) <= L1 // 8 or not 0 < len(share.proof_z) <= z_bytes:
                    raise _NodeFailure("proof missing or of the wrong size", lying=True)
                proof = Proof(
                    int.from_bytes(share.proof_c, "big"), int.from_bytes(share.proof_z, "big")
                )
            out.append(SignatureShare(node.index, int.from_bytes(share.value, "big"), proof))
        return out

    # -- the signing protocol for one batch -------------------------------------------

    # -- combining off the event loop -------------------------------------------------

    async def _combine_many(
        self, jobs: Sequence[tuple[int, list[SignatureShare]]], use_proofs: bool | None
    ) -> list[CombineResult | NotEnoughShares]:
        """``combine_robust`` for each (x, shares); spread over the cores when it is
        heavy (proofs to check, or a big batch), inline when it is a few cheap items."""
        params = self.params

        def work(
            chunk: Sequence[tuple[int, list[SignatureShare]]],
        ) -> list[CombineResult | NotEnoughShares]:
            out: list[CombineResult | NotEnoughShares] = []
            for x, shares in chunk:
                try:
                    out.append(combine_robust(params, x, shares, use_proofs=use_proofs))
                except NotEnoughShares as exc:
                    out.append(exc)
            return out

        proofs_to_check = use_proofs is not False and any(
            s.proof is not None for _, shares in jobs for s in shares
        )
        if not proofs_to_check and len(jobs) < 8:
            return work(jobs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                os.cpu_count() or 1, "ittc-combine", initializer=release_gil
            )
        parts = min(len(jobs), os.cpu_count() or 1)
        size = -(-len(jobs) // parts)
        loop = asyncio.get_running_loop()
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        done = await asyncio.gather(*(loop.run_in_executor(self._pool, work, c) for c in chunks))
        return [r for part in done for r in part]

    async def _find_liars(
        self, item: _Pending, answers: dict[int, list[SignatureShare]], pos: int, end: float
    ) -> set[int]:
        """Ask the nodes whose shares failed to combine to prove their share of one item.

        A node whose proof fails, or whose proven share differs from what it sent first,
        lied. One proof per node instead of proofs for the whole batch.
        """
        timeout = max(min(self.node_timeout, end - time.monotonic()), 0.001)
        nodes = [self._nodes[i] for i in sorted(answers)]
        replies = await asyncio.gather(
            *(self._ask(n, [item], True, timeout) for n in nodes), return_exceptions=True
        )
        liars: set[int] = set()
        checks = []
        for node, reply in zip(nodes, replies, strict=True):
            if isinstance(reply, _NodeFailure):
                if reply.lying:
                    liars.add(node.index)
                continue
            if isinstance(reply, BaseException):
                continue
            share = reply[0]
            if share.value != answers[node.index][pos].value:
                liars.add(node.index)
            else:
                checks.append(share)

        def verify(share: SignatureShare) -> int | None:
            try:
                verify_share(self.params, item.x, share)
            except IttcError:
                return share.index
            return None

        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                os.cpu_count() or 1, "ittc-combine", initializer=release_gil
            )
        verdicts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, verify, sh) for sh in checks)
        )
        liars.update(i for i in verdicts if i is not None)
        return liars

    async def _sign_batch(
        self, batch: list[_Pending], end: float | None = None, depth: int = 0
    ) -> list[bytes | IttcError]:
        params = self.params
        k = params.k
        start = time.monotonic()
        end = start + self.deadline if end is None else end
        always_proofs = self.proofs == "always"
        # node index -> list of shares (aligned with batch) or a failure reason
        answers: dict[int, list[SignatureShare]] = {}
        failures: dict[int, str] = {}
        asked: set[int] = set()
        running: dict[asyncio.Task[list[SignatureShare]], _Node] = {}
        hedged: set[int] = set()  # nodes that were running when a hedge was launched

        def launch(node: _Node) -> None:
            asked.add(node.index)
            timeout = max(min(self.node_timeout, end - time.monotonic()), 0.001)
            task = asyncio.ensure_future(self._ask(node, batch, always_proofs, timeout))
            running[task] = node

        first_wave = self._available(set())
        wave = first_wave if self.mode == "all" else first_wave[:k]
        for node in wave:
            launch(node)
        try:
            while len(answers) < k:
                if not running:
                    spare = self._available(asked)
                    if not spare:
                        break
                    launch(spare[0])
                    continue
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                hedge = self._hedge_delay()
                done, _ = await asyncio.wait(
                    list(running),
                    timeout=min(hedge, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    # Slow nodes: ask one more (they keep running, first k answers win).
                    spare = self._available(asked)
                    if spare:
                        self.stats.hedges += 1
                        hedged.update(node.index for node in running.values())
                        launch(spare[0])
                    continue
                for task in done:
                    node = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        answers[node.index] = task.result()
                    elif isinstance(exc, _NodeFailure):
                        failures[node.index] = exc.reason
                        if exc.lying:
                            self._blame(node.index, exc.reason)
                    else:  # pragma: no cover - unexpected error type
                        failures[node.index] = repr(exc)
                # Replace every failed node at once.
                missing = k - len(answers) - len(running)
                if missing > 0:
                    for node in self._available(asked)[:missing]:
                        launch(node)
            if len(answers) < k:
                reasons = dict(failures)
                for node in running.values():
                    reasons[node.index] = "no answer within the deadline"
                for index in self._nodes:
                    reasons.setdefault(index, "not asked: no time left or known to be down")
                raise SigningError(f"fewer than k={k} nodes answered", reasons)
        finally:
            # In "all" mode (or after hedging) late answers are not needed.
            for task, node in running.items():
                task.cancel()
                if node.index in hedged:
                    self._mark_slow(node)

        results: list[bytes | IttcError] = []
        wrong: list[int] = []
        order = sorted(answers)
        outcomes = await self._combine_many(
            [(p.x, [answers[i][pos] for i in order]) for pos, p in enumerate(batch)],
            always_proofs or None,
        )
        for pos, outcome in enumerate(outcomes):
            if isinstance(outcome, CombineResult):
                results.append(outcome.signature)
            else:
                results.append(SigningError("pending"))
                wrong.append(pos)
            failures.update(outcome.bad)
        liars = {i for i in failures if i in answers}
        if wrong and not liars and params.proofs_sound and depth == 0:
            # Find who lied with one proof per node, not proofs for the whole batch.
            self.stats.proof_rounds += 1
            liars = await self._find_liars(batch[wrong[0]], answers, wrong[0], end)
            for index in liars:
                failures.setdefault(index, "share disproved by its own proof")
        for index in liars:
            self._blame(index, failures[index])
            answers.pop(index, None)
        if wrong and liars and depth == 0:
            # The liars are quarantined now: sign the failed items again, optimistically,
            # through the other nodes.
            try:
                again = await self._sign_batch([batch[pos] for pos in wrong], end, depth + 1)
            except SigningError as exc:
                again = [exc] * len(wrong)
            for pos, result in zip(wrong, again, strict=True):
                if isinstance(result, SigningError):  # name this round's liars too
                    result = SigningError(
                        str(result).split(" (")[0], self._node_states() | failures | result.nodes
                    )
                results[pos] = result
            return results
        if wrong:
            await self._repair(batch, wrong, results, answers, failures, asked, end)
        return results

    async def _repair(
        self,
        batch: list[_Pending],
        wrong: list[int],
        results: list[bytes | IttcError],
        answers: dict[int, list[SignatureShare]],
        failures: dict[int, str],
        asked: set[int],
        end: float,
    ) -> None:
        """The optimistic combine failed for some items: gather proofs and more shares."""
        params = self.params
        self.stats.proof_rounds += 1
        items = [batch[i] for i in wrong]
        want_proofs = params.proofs_sound
        # Ask every node that answered (now with proofs) and every other node that is not
        # known to be down; known-down ones only if that is all there is.
        now = time.monotonic()
        targets = [
            n
            for n in self._nodes.values()
            if n.index in answers
            or (n.index not in failures and n.down_until <= now and n.suspect_until <= now)
        ]
        if len(targets) < params.k:
            targets = [
                n for n in self._nodes.values() if n.index in answers or n.index not in failures
            ]
        timeout = max(min(self.node_timeout, end - time.monotonic()), 0.001)
        tasks = {
            asyncio.ensure_future(self._ask(node, items, want_proofs, timeout)): node
            for node in targets
        }
        started = time.monotonic()
        collected: dict[int, list[SignatureShare]] = {}
        # Without proofs, keep the first-round shares too: more candidates for the subset
        # search.
        earlier = (
            {}
            if want_proofs
            else {
                index: [s for j, s in enumerate(shares) if j in wrong]
                for index, shares in answers.items()
            }
        )
        pending: set[asyncio.Task[list[SignatureShare]]] = set(tasks)
        open_slots = list(range(len(wrong)))
        blamed: set[int] = set()

        async def collect(**wait: Any) -> None:
            nonlocal pending
            done, pending = await asyncio.wait(pending, **wait)
            for task in done:
                index = tasks[task].index
                exc = task.exception()
                if exc is None:
                    collected[index] = task.result()
                else:
                    reason = exc.reason if isinstance(exc, _NodeFailure) else repr(exc)
                    failures[index] = reason
                    if isinstance(exc, _NodeFailure) and exc.lying:
                        self._blame(index, reason)

        graced = False
        try:
            while open_slots:
                if pending:
                    # Wait for k answers; then give the others as long again (at least a
                    # hedge delay), not until a silent node's timeout.
                    if len(earlier.keys() | collected.keys()) < params.k:
                        await collect(return_when=asyncio.FIRST_COMPLETED)
                        continue
                    if not graced:
                        graced = True
                        await collect(timeout=max(self._hedge_delay(), time.monotonic() - started))
                candidates = earlier | collected
                retry = []
                outcomes = await self._combine_many(
                    [
                        (batch[wrong[slot]].x, [candidates[i][slot] for i in sorted(candidates)])
                        for slot in open_slots
                    ],
                    want_proofs or None,
                )
                for slot, outcome in zip(open_slots, outcomes, strict=True):
                    pos = wrong[slot]
                    if isinstance(outcome, NotEnoughShares):
                        if pending:
                            retry.append(slot)  # more answers are coming
                        else:
                            results[pos] = SigningError(
                                f"fewer than k={params.k} valid shares",
                                self._node_states() | failures | outcome.bad,
                            )
                        continue
                    results[pos] = outcome.signature
                    for index, reason in outcome.bad.items():
                        failures[index] = reason
                        blamed.add(index)
                open_slots = retry
                if retry:
                    await collect(return_when=asyncio.FIRST_COMPLETED)
            for task in pending:  # every item is signed: stragglers are not needed
                self._mark_slow(tasks[task])
        finally:
            for task in pending:
                task.cancel()
        for index in blamed:
            self._blame(index, failures[index])


def _run_in_loop_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run, name="ittc-client-loop", daemon=True)
    thread.start()
    ready.wait()
    return loop, thread


class SyncClusterClient:
    """Blocking wrapper: the async client runs on an event loop in a background thread.

    Thread-safe: calls from many threads are batched together like concurrent async calls.
    """

    def __init__(self, cluster: ClusterFile | str | Path, **options: Any) -> None:
        self._loop, self._thread = _run_in_loop_thread()
        try:
            self._client = self._call(self._make(cluster, options))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(cluster: ClusterFile | str | Path, options: dict[str, Any]) -> ClusterClient:
        client = ClusterClient(cluster, **options)
        await client.__aenter__()
        return client

    def _call(self, coro: Awaitable[T]) -> T:
        future: ThreadFuture[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result()

    @property
    def params(self) -> PublicParams:
        return self._client.params

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    def sign(self, data: bytes | None = None, **kwargs: Any) -> bytes:
        return self._call(self._client.sign(data, **kwargs))

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
