"""Which epoch of the key a combiner signs in, and how it moves to the next.

A batch is signed in one :class:`EpochView`: one epoch's cluster file, parameters, node
pool, connections and combiner, so shares of two epochs never meet in one combine.
:class:`EpochViews` holds the view new batches use and the views it replaced that batches
still use (their connections close once those batches end). It moves to a newer epoch
when the cluster file names one (:meth:`EpochViews.follow`), or when a node proves one
with its commit certificates, each checked against the epoch before and the sites the
cluster file lists (:meth:`EpochViews.learn`); it hands a node still in the epoch before
the current epoch's certificate (:meth:`EpochViews.hand_certificate`). It also makes new
connections when the client's certificate, key or CA file changes (a renewal, a CA
rotation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ittc.combiner.combining import Combiner
from ittc.combiner.options import Settings
from ittc.combiner.pool import NodeEvent, NodePool
from ittc.combiner.transport import NodeLink, open_links
from ittc.config import ClusterFile, NodeEntry
from ittc.errors import IttcError, NodeError, NodeInOtherEpoch
from ittc.lifecycle import Certificate
from ittc.scheme.params import PublicParams
from ittc.wire import tls

__all__ = ["FOLLOW_INTERVAL", "EpochView", "EpochViews"]

log = logging.getLogger("ittc.combiner")

#: How often (seconds) the client looks at its cluster file for a newer epoch.
FOLLOW_INTERVAL = 1.0

#: How many nodes in a newer epoch are asked for its certificates before giving up.
_LEARN_FROM = 3


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


def follow_chain(cluster: ClusterFile, chain: list[bytes]) -> tuple[ClusterFile, bytes | None]:
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


def epoch_of(error: NodeError) -> int | None:
    """The epoch a node said it signs in, if ``error`` is that refusal."""
    if isinstance(error, NodeInOtherEpoch):
        return error.epoch or 0
    return None


class EpochViews:
    """The view new batches use, and the replaced ones batches still use.

    ``listeners`` is the client's list of :class:`~ittc.combiner.pool.NodeEvent`
    listeners, shared (one added later reaches the pools made after);
    ``on_new_identity`` is called after the client's identity files changed and new
    connections use them."""

    def __init__(
        self,
        cluster: ClusterFile,
        settings: Settings,
        cert: Path,
        key: Path,
        listeners: list[Callable[[NodeEvent], None]],
        on_new_identity: Callable[[], object] = lambda: None,
    ) -> None:
        self._settings = settings
        self._on_new_identity = on_new_identity
        self._cert, self._key = cert, key
        self._listeners = listeners
        self.current = self._new_view(cluster)
        self._retired: list[EpochView] = []
        self._watched = _file_state(cluster.path)
        self._identity_watched = self._identity_state(cluster)
        self._looked_at = time.monotonic()

    def _new_view(self, cluster: ClusterFile) -> EpochView:
        pool = NodePool(
            [entry.index for entry in cluster.nodes],
            node_timeout=self._settings.node_timeout,
            hedge_after=self._settings.hedge_after,
        )
        for listener in self._listeners:
            pool.add_listener(listener)
        return EpochView(cluster, pool, Combiner(cluster.params))

    def links(self, view: EpochView | None = None) -> dict[int, NodeLink]:
        """The connections of ``view`` (the current one by default), opened on first use."""
        view = view or self.current
        if not view.links:
            view.links = open_links(view.cluster, self._cert, self._key, self._settings.clock)
        return view.links

    # -- moving on ---------------------------------------------------------------------

    def follow(self, *, force: bool = False) -> bool:
        """Look at the cluster file (at most once per :data:`FOLLOW_INTERVAL` unless
        ``force``); if it names a newer epoch of the same key, sign in that epoch from the
        next batch on. True if the epoch changed. A file that does not load, names another
        key, or an older or equal epoch changes nothing (the first two are logged)."""
        now = time.monotonic()
        if not force and now - self._looked_at < FOLLOW_INTERVAL:
            return False
        self._looked_at = now
        self.follow_identity()
        path = self.current.cluster.path
        state = _file_state(path)
        if state is None or state == self._watched:
            return False
        self._watched = state
        try:
            loaded = ClusterFile.load(path)
        except IttcError as exc:
            log.warning("cluster file %s changed but cannot be used: %s", path, exc)
            return False
        current = self.current.params
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

    def follow_identity(self) -> bool:
        """If the CA file or the client's certificate or key changed (a renewal, a CA
        rotation), make new connections with them: batches under way finish on the old
        ones, the next use the new ones. A change that does not make a working identity
        (a file half-copied, a key that is not the certificate's) is logged and ignored.
        True if the connections were replaced."""
        cluster = self.current.cluster
        state = self._identity_state(cluster)
        if state == self._identity_watched:
            return False
        self._identity_watched = state
        try:
            tls.client_credentials(self._cert, self._key, cluster.ca, now=self._settings.clock())
        except IttcError as exc:
            log.error("client identity or CA changed but cannot be used (kept the old): %s", exc)
            return False
        view = self._new_view(cluster)
        view.certificate = self.current.certificate
        self._replace(view)
        log.warning(
            "client identity or CA files changed (%s, %s, %s): new connections use them",
            self._cert,
            self._key,
            cluster.ca,
        )
        self._on_new_identity()
        return True

    def _replace(self, view: EpochView) -> None:
        old = self.current
        self.current = view
        old.retired = True
        self._retired.append(old)

    def _switch(self, cluster: ClusterFile, certificate: bytes | None = None) -> None:
        old = self.current
        view = self._new_view(cluster)
        view.certificate = certificate
        self._replace(view)
        log.warning(
            "key %s: now signing in epoch %d (%d of %d nodes), was epoch %d",
            cluster.params.short_id,
            cluster.params.epoch,
            cluster.params.k,
            cluster.params.n,
            old.params.epoch,
        )

    def add_listener(self, listener: Callable[[NodeEvent], None]) -> None:
        """A listener for the current pool (the shared list reaches later ones)."""
        self.current.pool.add_listener(listener)

    # -- nodes in other epochs ---------------------------------------------------------

    def older_nodes(self, seen: list[NodeError]) -> set[int]:
        """Nodes among ``seen`` that said they sign in an epoch before the current one."""
        epoch = self.current.params.epoch
        return {e.node for e in seen if (other := epoch_of(e)) is not None and other < epoch}

    def newer_nodes(self, seen: list[NodeError]) -> list[int]:
        """Nodes among ``seen`` that said they sign in an epoch after the current one."""
        epoch = self.current.params.epoch
        return sorted(
            {e.node for e in seen if (other := epoch_of(e)) is not None and other > epoch}
        )

    async def hand_certificate(self, view: EpochView, nodes: set[int]) -> bool:
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
        links = self.links(view)
        timeout = self._settings.node_timeout
        order = sorted(nodes)
        outcomes = await asyncio.gather(
            *(links[i].commit(certificate, timeout) for i in order), return_exceptions=True
        )
        committed = False
        for index, outcome in zip(order, outcomes, strict=True):
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

    async def learn(self, nodes: list[int]) -> bool:
        """Follow, in memory, the epochs whose certificates a node in a newer epoch holds,
        each checked against the epoch before (starting from the cluster file's sites).
        True if the client moved to a newer epoch."""
        view = self.current
        if any(n.site is None for n in view.cluster.nodes):
            log.warning(
                "nodes sign in a newer epoch than %s names, and it lists no site identities "
                "to check their certificates with: copy the new cluster file here",
                view.cluster.path,
            )
            return False
        links = self.links(view)
        for index in nodes[:_LEARN_FROM]:
            try:
                chain = await links[index].certificates(
                    view.params.epoch, self._settings.node_timeout
                )
            except NodeError as exc:
                log.warning("node %d: no certificates: %s", index, exc.reason)
                continue
            cluster, last = await asyncio.to_thread(follow_chain, view.cluster, chain)
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

    # -- closing -----------------------------------------------------------------------

    async def close_idle(self) -> None:
        """Close the replaced views no batch uses any more."""
        idle = [v for v in self._retired if v.users == 0]
        self._retired = [v for v in self._retired if v.users]
        for view in idle:
            await view.close()

    async def close(self) -> None:
        for view in [self.current, *self._retired]:
            await view.close()
        self._retired = []
