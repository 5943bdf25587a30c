"""Who may call a node, and what a refused call leaves in its audit log.

Every call starts with the caller's identity, taken from the TLS peer certificate and
nowhere else. A caller not in ``allowed_clients`` is refused before its message is
parsed, and the refusal audited with the message's size and hash: one line each up to a
per-identity rate, then counted in summary lines (:mod:`ittc_node.refusals`). A request
refused after it was parsed is audited with a bounded summary of what it asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from ittc.errors import AuditLogError
from ittc.scheme.encoding import MAX_SALT_BYTES
from ittc.wire import codec, tls
from ittc.wire.v1 import signer_pb2 as pb
from ittc_node.audit import AuditLog, utc_iso
from ittc_node.refusals import RefusalLimiter

__all__ = ["SHOWN_CHARS", "Caller", "Gate", "Refusal"]

log = logging.getLogger("ittc_node.service")

#: Wire strings shown in audit lines are cut to this length (a refused request's fields
#: are the caller's, unchecked).
SHOWN_CHARS = 128


class Refusal(Exception):
    """A request the node will not serve: the status code and the reason it sends back,
    and trailing metadata (the node's epoch, when the request named another)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metadata = metadata


@dataclass(frozen=True)
class Caller:
    """Who called: the identity from its certificate (None: none usable), and its address."""

    identity: str | None
    peer: str


def _items_summary(items: Any) -> list[dict[str, Any]]:
    """What the audit line records about the items (the caller slices them to a bound:
    only those become Python objects, however many the request holds)."""
    out = []
    for item in items:
        out.append(
            {
                "padding": codec.wire_name(pb.Padding, item.padding),
                "hash": codec.wire_name(pb.Hash, item.hash),
                "digest": bytes(item.digest[:64]).hex(),
                "salt": bytes(item.salt[:MAX_SALT_BYTES]).hex(),
            }
        )
    return out


class Gate:
    """The allowed identities of a node's Signer, and the audit of what it refuses."""

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        audit: AuditLog,
        clock: Callable[[], float],
        max_batch: int,
        refusals: RefusalLimiter | None = None,
    ) -> None:
        self._allowed = frozenset(allowed)
        self.audit = audit
        self.clock = clock
        self.max_batch = max_batch
        self.refusals = refusals if refusals is not None else RefusalLimiter()

    @property
    def allowed_clients(self) -> frozenset[str]:
        """The client identities allowed to call Sign and GetInfo now."""
        return self._allowed

    def allow(self, clients: Iterable[str]) -> None:
        """Replace the allowed identities (a reload): from the next call on."""
        self._allowed = frozenset(clients)

    def record(
        self,
        caller: Caller,
        method: str,
        outcome: str,
        reason: str,
        request: pb.SignRequest | None = None,
        raw: bytes | None = None,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "time": utc_iso(self.clock()),
            "type": "request",
            "client": caller.identity,
            "peer": caller.peer[:SHOWN_CHARS],
            "method": method,
        }
        if raw is not None:
            # Not parsed (a caller not allowed, or not a message): its size and hash only.
            record["request_bytes"] = len(raw)
            record["request_sha256"] = hashlib.sha256(raw).hexdigest()
        if request is not None:
            items = request.items
            record.update(
                {
                    "request_id": request.request_id[:SHOWN_CHARS],
                    "key_id": request.key_id[:SHOWN_CHARS],
                    "epoch": request.epoch,
                    "epoch_id": request.epoch_id[:SHOWN_CHARS],
                    "timestamp_ms": request.timestamp_ms,
                    "with_proofs": request.with_proofs,
                    "items": _items_summary(items[: self.max_batch]),
                }
            )
            if len(items) > self.max_batch:
                record["items_total"] = len(items)
        record["outcome"] = outcome
        record["reason"] = reason
        return record

    async def refuse(
        self,
        context: grpc.aio.ServicerContext,
        caller: Caller,
        method: str,
        refusal: Refusal,
        request: pb.SignRequest | None = None,
        raw: bytes | None = None,
    ) -> NoReturn:
        """Audit the refusal, then abort the call with its status."""
        try:
            await self.audit.append(
                self.record(caller, method, "refused", refusal.reason, request, raw)
            )
        except AuditLogError:
            pass  # the refusal stands; the audit failure is logged and health reflects it
        await context.abort(refusal.code, refusal.reason, refusal.metadata)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def authorize(
        self, context: grpc.aio.ServicerContext, method: str, data: bytes
    ) -> Caller:
        """The caller, if its identity is allowed; otherwise the call is refused.

        Runs before the request is parsed: a caller that is not allowed costs a hash of
        the bytes it sent and, within its identity's rate limit (:mod:`ittc_node.refusals`),
        an audit line; beyond that limit it is only counted.
        """
        caller = Caller(tls.peer_identity(context.auth_context()), context.peer() or "")
        if caller.identity is not None and caller.identity in self._allowed:
            return caller
        if caller.identity is None:
            refusal = Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "no client identity (a client certificate with one common name is required)",
            )
        else:
            refusal = Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client {caller.identity!r} is not allowed on this node",
            )
        if self.refusals.admit(
            caller.identity,
            self.clock(),
            method=method,
            peer=caller.peer[:SHOWN_CHARS],
            size=len(data),
        ):
            log.warning(
                "refused %s from %r at %s: identity not allowed",
                method,
                caller.identity,
                caller.peer,
            )
            await self.refuse(context, caller, method, refusal, raw=data)
        await context.abort(refusal.code, refusal.reason)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def write_refusal_summaries(self, *, final: bool = False) -> None:
        """Audit lines for refusals that were counted rather than written one by one: those
        due now, or (``final``, at a clean stop) all of them."""
        due = self.refusals.drain() if final else self.refusals.due(self.clock())
        for counted in due:
            log.warning(
                "refused %d requests from %r not allowed (over the audit rate limit; "
                "summarized in one audit line)",
                counted.count,
                counted.identity,
            )
            with contextlib.suppress(AuditLogError):
                await self.audit.append(
                    {
                        "time": utc_iso(self.clock()),
                        "type": "refusals",
                        "client": counted.identity,
                        "count": counted.count,
                        "first": utc_iso(counted.first),
                        "last": utc_iso(counted.last),
                        "methods": dict(sorted(counted.methods.items())),
                        "peers": counted.peers,
                        "request_bytes": counted.request_bytes,
                        "outcome": "refused",
                        "reason": "identity not allowed; over the per-identity audit rate limit, "
                        "so counted here instead of one line each",
                    }
                )

    async def summarize_refusals(self, stop: asyncio.Event) -> None:
        """Write due summaries every second until ``stop`` is set (the caller writes the
        rest once the server has stopped)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            await self.write_refusal_summaries()
