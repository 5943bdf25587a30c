"""Prometheus metrics of a combiner embedded in a service.

::

    from prometheus_client import CollectorRegistry, start_http_server
    from ittc.combiner.metrics import ClientCollector

    registry = CollectorRegistry()              # or prometheus_client.REGISTRY: your choice
    registry.register(ClientCollector(client))  # a ClusterClient or SyncClusterClient
    start_http_server(9466, registry=registry)

:class:`ClientCollector` reads :attr:`ClusterClient.stats` at each scrape and counts the
client's :class:`~ittc.combiner.pool.NodeEvent` as they happen (through
:meth:`ClusterClient.add_listener`); it registers nothing by itself and keeps no global
state, so an embedder decides where the metrics go. Every metric carries the key's short
id (label ``key``), so several clients can share a registry.

Exported (``_total`` is added to counters by the text format):
``ittc_client_signatures``, ``_batches``, ``_rpcs``, ``_hedges``, ``_proof_rounds``
(counters); ``ittc_client_node_failures``, ``_node_blamed``, ``_node_suspected`` by
``node``; ``ittc_client_node_events`` by ``node`` and ``kind`` (asked, answered, failed,
slow, cleared, lied, suspected) and ``ittc_client_node_items`` (items asked and
answered); gauges ``ittc_client_busy`` (items queued plus batches in flight),
``ittc_client_epoch`` and ``ittc_client_node_latency_seconds`` (the recent round trip the
client measured for each node).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ittc.combiner.client import ClusterClient, SyncClusterClient
from ittc.combiner.pool import NodeEvent

__all__ = ["ClientCollector"]


def _snapshot(counter: Mapping[Any, int]) -> dict[Any, int]:
    """A copy of a counter the client's event loop may be changing meanwhile."""
    for _ in range(5):
        try:
            return dict(counter)
        except RuntimeError:  # changed size during the copy: try again
            continue
    return {}


class ClientCollector(Collector):
    """A Prometheus collector over one combiner client (see the module docstring)."""

    def __init__(self, client: ClusterClient | SyncClusterClient) -> None:
        self.client = client.client if isinstance(client, SyncClusterClient) else client
        self._lock = threading.Lock()
        self._events: collections.Counter[tuple[int, str]] = collections.Counter()
        self._items: collections.Counter[tuple[int, str]] = collections.Counter()
        self.client.add_listener(self._on_event)

    def _on_event(self, event: NodeEvent) -> None:
        with self._lock:
            self._events[(event.node, event.kind)] += 1
            if event.items:
                self._items[(event.node, event.kind)] += event.items

    def collect(self) -> Iterator[Any]:
        client = self.client
        key = client.params.short_id
        stats = client.stats
        for name, value, about in (
            ("signatures", stats.signatures, "Signatures made"),
            ("batches", stats.batches, "Batches signed (each one round over k nodes or more)"),
            ("rpcs", stats.rpcs, "Sign RPCs sent to nodes"),
            ("hedges", stats.hedges, "Times another node was asked because one was slow"),
            ("proof_rounds", stats.proof_rounds, "Rounds that asked nodes to prove shares"),
        ):
            family = CounterMetricFamily(f"ittc_client_{name}", about, labels=["key"])
            family.add_metric([key], float(value))
            yield family
        for name, counter, about in (
            ("node_failures", stats.node_failures, "RPCs to the node that failed"),
            ("node_blamed", stats.blamed, "Times the node's shares were proven wrong"),
            ("node_suspected", stats.suspected, "Times the node did not prove a bad share"),
        ):
            family = CounterMetricFamily(f"ittc_client_{name}", about, labels=["key", "node"])
            for node, value in sorted(_snapshot(counter).items()):
                family.add_metric([key, str(node)], float(value))
            yield family
        with self._lock:
            events, items = dict(self._events), dict(self._items)
        family = CounterMetricFamily(
            "ittc_client_node_events",
            "What the client saw each node do",
            labels=["key", "node", "kind"],
        )
        for (node, kind), value in sorted(events.items()):
            family.add_metric([key, str(node), kind], float(value))
        yield family
        family = CounterMetricFamily(
            "ittc_client_node_items",
            "Items asked of and answered by each node",
            labels=["key", "node", "kind"],
        )
        for (node, kind), value in sorted(items.items()):
            family.add_metric([key, str(node), kind], float(value))
        yield family
        busy = GaugeMetricFamily(
            "ittc_client_busy", "Items queued plus batches in flight", labels=["key"]
        )
        busy.add_metric([key], float(client.busy))
        yield busy
        epoch = GaugeMetricFamily("ittc_client_epoch", "The epoch signed in", labels=["key"])
        epoch.add_metric([key], float(client.epoch))
        yield epoch
        latency = GaugeMetricFamily(
            "ittc_client_node_latency_seconds",
            "Recent round trip to each node (0: not measured yet)",
            labels=["key", "node"],
        )
        pool = client.pool
        for index in pool.indices:
            latency.add_metric([key, str(index)], pool.state(index).latency)
        yield latency
