"""The combiner: the embedder's client that signs through the cluster's nodes.

Parts: :mod:`~ittc.combiner.options` (the options both clients take),
:mod:`~ittc.combiner.pool` (which node to ask and when; pure, clock injected),
:mod:`~ittc.combiner.batcher` (concurrent calls share RPCs),
:mod:`~ittc.combiner.round` (one batch: gather, combine, retry),
:mod:`~ittc.combiner.repair` (who lied, when a signature fails its check),
:mod:`~ittc.combiner.transport` (one mTLS channel and one RPC per node),
:mod:`~ittc.combiner.combining` (combines and proof checks off the event loop),
:mod:`~ittc.combiner.client` (the two clients).
"""

from ittc.combiner.client import ClusterClient, SyncClusterClient
from ittc.combiner.context import ClientStats
from ittc.combiner.options import ClientOptions
from ittc.combiner.pool import NodeEvent
from ittc.scheme.encoding import SignItem

__all__ = [
    "ClientOptions",
    "ClientStats",
    "ClusterClient",
    "NodeEvent",
    "SignItem",
    "SyncClusterClient",
]
