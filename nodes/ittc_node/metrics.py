"""What a node counts and measures, for Prometheus.

:class:`NodeMetrics` holds one node's metrics in a registry of its own (never the
process-wide default: two nodes embedded in one process do not mix). The daemon serves
it on the ``[monitoring] metrics_listen`` address (:mod:`ittc_node.monitoring`), in
Prometheus' text format, when the config asks for it.

Counted as they happen: requests by method and outcome (``ok``, ``refused``); refusals
by method, gRPC status and reason (a short fixed name, :data:`REASONS`); the time each
request took (histogram); items signed; the time each audit-log write and fsync took
(histogram); reloads by outcome. Read when scraped: whether the node is serving, items
waiting for compute, the expiry of the node's certificate and of its CA, which
exponentiation backend it uses, and the process's CPU, memory and file descriptors.
Nothing secret, and nothing whose number of values a caller controls: no client
identities, request ids or digests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

__all__ = ["REASONS", "LiveState", "NodeMetrics", "instrument", "reason_of"]

#: A refusal's reason label, from the start of what the caller was told (first match).
REASONS: tuple[tuple[str, str], ...] = (
    ("no client identity", "no_identity"),
    ("client ", "not_allowed"),
    ("not a valid", "malformed"),
    ("node is starting", "starting"),
    ("audit log unavailable", "audit_unavailable"),
    ("the node's certificate", "certificate"),
    ("node cannot compute", "compute_failed"),
    ("request_id already used", "replay"),
    ("too many recent requests", "replay_memory_full"),
    ("request_id", "bad_request_id"),
    ("unknown key id", "wrong_key"),
    ("wrong epoch", "wrong_epoch"),
    ("stale request", "stale"),
    ("request from the future", "future"),
    ("a request holds", "batch_size"),
    ("items[", "bad_item"),
    ("node busy", "busy"),
    ("not done within the deadline", "deadline"),
    ("deadline already passed", "deadline"),
    ("internal error", "internal"),
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


def reason_of(code: grpc.StatusCode | None, details: str | None) -> str:
    """The reason label of a refusal: fixed names only (a caller cannot add values)."""
    text = details or ""
    for prefix, reason in REASONS:
        if text.startswith(prefix):
            return reason
    if code is None:
        return "cancelled"
    return "other"


@dataclass(frozen=True)
class LiveState:
    """What a scrape reads from the running node (each a function, called then)."""

    serving: Callable[[], bool]
    pending_items: Callable[[], int]
    #: (file label, subject, not-after as seconds since the epoch) of each watched cert.
    certificates: Callable[[], list[tuple[str, str, float]]]
    info: Callable[[], Mapping[str, str]]


class _Live(Collector):
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        s = self.state
        ready = GaugeMetricFamily(
            "ittc_node_serving", "1 while the node can sign (health SERVING), else 0"
        )
        ready.add_metric([], 1.0 if s.serving() else 0.0)
        yield ready
        pending = GaugeMetricFamily(
            "ittc_node_pending_items", "Items accepted and waiting for or in compute"
        )
        pending.add_metric([], float(s.pending_items()))
        yield pending
        expiry = GaugeMetricFamily(
            "ittc_node_certificate_expiry_timestamp_seconds",
            "When the node's TLS certificate (file=cert) and its CA (file=ca) expire",
            labels=["file", "subject"],
        )
        for label, subject, not_after in s.certificates():
            expiry.add_metric([label, subject], not_after)
        yield expiry
        info = InfoMetricFamily("ittc_node", "The node: index, key, epoch, version, backend")
        info.add_metric([], dict(s.info()))
        yield info


class NodeMetrics:
    """One node's metrics; :meth:`attach` adds what is read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ittc_node_requests",
            "Requests answered by method and outcome (ok or refused)",
            ["method", "outcome"],
            registry=r,
        )
        self.refusals = Counter(
            "ittc_node_refusals",
            "Refused requests by method, gRPC status and reason",
            ["method", "code", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "ittc_node_request_seconds",
            "Time from receiving a request to answering it",
            ["method", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.items_signed = Counter(
            "ittc_node_items_signed", "Signature shares sent (one per item)", registry=r
        )
        self.audit_sync = Histogram(
            "ittc_node_audit_write_seconds",
            "Time each audit-log write and fsync took (lines of concurrent requests share one)",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "ittc_node_reloads", "Reloads (SIGHUP) by outcome", ["outcome"], registry=r
        )
        ProcessCollector(registry=r)

    def attach(self, state: LiveState) -> None:
        """Read ``state`` at every scrape (once, when the node has started)."""
        self.registry.register(_Live(state))

    def answered(self, method: str, elapsed: float, items: int) -> None:
        self.requests.labels(method, "ok").inc()
        self.latency.labels(method, "ok").observe(elapsed)
        if items:
            self.items_signed.inc(items)

    def refused(
        self, method: str, code: grpc.StatusCode | None, details: str | None, elapsed: float
    ) -> None:
        name = code.name if code is not None else "CANCELLED"
        self.requests.labels(method, "refused").inc()
        self.refusals.labels(method, name, reason_of(code, details)).inc()
        self.latency.labels(method, "refused").observe(elapsed)


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _items(response: Any) -> int:
    shares = getattr(response, "shares", None)
    return len(shares) if shares is not None else 0


def instrument(
    handlers: Mapping[str, grpc.RpcMethodHandler], metrics: NodeMetrics
) -> dict[str, grpc.RpcMethodHandler]:
    """The same unary handlers, each counted and timed: a call that returns is ``ok``; one
    that ends otherwise (an abort: every refusal) is ``refused`` with the status it sent."""
    out = {}
    for method, handler in handlers.items():
        behavior: Behavior = handler.unary_unary

        async def counted(
            request: Any,
            context: grpc.aio.ServicerContext,
            behavior: Behavior = behavior,
            method: str = method,
        ) -> Any:
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except BaseException:
                code = context.code()
                metrics.refused(
                    method,
                    code if isinstance(code, grpc.StatusCode) else None,
                    context.details(),
                    time.perf_counter() - started,
                )
                raise
            metrics.answered(method, time.perf_counter() - started, _items(response))
            return response

        out[method] = grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return out
