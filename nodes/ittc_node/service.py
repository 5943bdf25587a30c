"""The ``ittc.v1.Signer`` gRPC service: who may ask, what is checked, what is answered.

Every call starts with the caller's identity (:mod:`ittc_node.gate`: a caller not
allowed is refused before its message is parsed, and the refusal audited). ``Sign``
then validates the whole request before any arithmetic (cheapest checks first),
builds each message representative itself from (padding, hash, digest, salt) — a node
never exponentiates a caller's integer — computes the shares off the event loop, writes
the audit record, and answers only once that record is on disk. The thread that made
the shares hands the record to the audit writer itself, so a request wakes the event
loop once between its arrival and its answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from ittc.config import Limits, NodeConfig
from ittc.errors import AuditLogError, ComputeError, EncodingError, WireError
from ittc.scheme.encoding import encode
from ittc.scheme.params import PublicParams
from ittc.version import __version__
from ittc.wire import codec
from ittc.wire.v1 import signer_pb2 as pb
from ittc_node.audit import AuditLog, utc_iso
from ittc_node.compute import Commit, Compute
from ittc_node.faults import Faults
from ittc_node.gate import Caller, Gate, Refusal
from ittc_node.refusals import RefusalLimiter
from ittc_node.replay import ReplayCache

__all__ = ["Refusal", "SignerService", "parse_message", "validate_sign_request"]

log = logging.getLogger("ittc_node.service")

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


_NO_FAULTS = Faults()


@dataclass
class _Progress:
    """How far a request whose id is spent got: were its shares computed, is its audit
    line queued (then a cancellation needs no line of its own)."""

    computed: bool = False
    audited: bool = False


def _quiet(future: asyncio.Future[None]) -> None:
    """Retrieve a background audit write's outcome (a failure is logged by the log)."""
    if not future.cancelled():
        future.exception()


def parse_message(message_type: Any, data: bytes) -> Any:
    """``data`` parsed as ``message_type``, or :class:`Refusal` (INVALID_ARGUMENT).

    The node parses requests itself (not gRPC), so that a message that is not one is
    refused with the right status, after the caller's identity is checked, and audited.
    """
    try:
        return message_type.FromString(data)
    except DecodeError:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"not a valid {message_type.DESCRIPTOR.full_name} message ({len(data)} bytes)",
        ) from None


def validate_sign_request(
    request: pb.SignRequest,
    *,
    params: PublicParams,
    limits: Limits,
    now: float,
    started_ms: float,
    replay: ReplayCache,
    pending: int = 0,
    faults: Faults = _NO_FAULTS,
    identity: str | None = None,
) -> list[int]:
    """Every check on a SignRequest, cheapest first; the representatives to sign.

    ``now`` is the node's clock (seconds), ``started_ms`` the oldest timestamp it serves
    (ms: its start, when its audit log told it nothing of earlier runs), ``pending``
    the items already waiting for compute, ``identity`` the caller (its own share of the
    replay memory). Raises :class:`Refusal` with the status code
    and reason the caller is sent. Reads ``replay`` but does not record the id: the
    caller does that once it commits to the request. No I/O, no gRPC.
    """
    window_ms = int(limits.freshness_seconds * 1000)
    if not _REQUEST_ID.fullmatch(request.request_id):
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id must be 16..64 characters of [A-Za-z0-9_-]",
        )
    if request.key_id != params.key_id:
        raise Refusal(grpc.StatusCode.NOT_FOUND, "unknown key id")
    if request.epoch != params.epoch or request.epoch_id != params.epoch_id:
        named = (
            f"epoch {request.epoch}"
            if request.epoch != params.epoch
            else f"another epoch {request.epoch} (epoch id {request.epoch_id[:16]!r})"
        )
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"wrong epoch: the request names {named}; this node signs in epoch "
            f"{params.epoch} (epoch id {params.epoch_id[:16]})",
            ((codec.EPOCH_METADATA, str(params.epoch)),),
        )
    skew_ms = request.timestamp_ms - now * 1000.0
    if skew_ms < -window_ms:
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"stale request: timestamp is {-skew_ms / 1000:.1f} s behind the "
            f"node's clock (allowed: {limits.freshness_seconds:g} s)",
        )
    if skew_ms > window_ms:
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"request from the future: timestamp is {skew_ms / 1000:.1f} s "
            f"ahead of the node's clock (allowed: {limits.freshness_seconds:g} s)",
        )
    if request.timestamp_ms < started_ms:
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            "stale request: dated before this node started on a new audit log, so it "
            "may have been served already; send a new request",
        )
    if replay.seen(request.request_id, now):
        raise Refusal(grpc.StatusCode.ALREADY_EXISTS, "request_id already used")
    if replay.full(now, identity):
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too many recent requests from this client (its share of the replay memory is "
            "full); retry later",
        )
    count = len(request.items)
    if not 1 <= count <= limits.max_batch:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a request holds 1..{limits.max_batch} items, not {count}",
        )
    bits = params.bits
    xs = []
    for position, item in enumerate(request.items):
        where = f"items[{position}]"
        try:
            wanted = codec.item_from_wire(item)
        except WireError as exc:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {exc.reason}") from None
        signed = faults.item(wanted.padding, wanted.hash_name, wanted.digest, wanted.salt)
        try:
            xs.append(encode(*signed[:3], bits, signed[3]))
        except EncodingError as exc:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {exc}") from None
    if pending + count > limits.max_pending_items:
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"node busy: {pending} items waiting; retry later"
        )
    return xs


class SignerService:
    """One node's Signer. ``ready`` is False until the daemon finished starting."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        params: PublicParams,
        compute: Compute | None,
        audit: AuditLog,
        replay: ReplayCache,
        faults: Faults,
        clock: Callable[[], float],
        refusals: RefusalLimiter | None = None,
        index: int | None = None,
    ) -> None:
        self.config = config
        #: The epoch the node signs in, and its share's compute pool (None: no share of
        #: this epoch, as a site that joins at a reshare or that retired).
        self.params = params
        self.compute = compute
        #: This node's index in that epoch (the configured one unless a reshare moved it).
        self.index: int | None = config.index if index is None and compute else index
        #: The node's site name, when it takes part in reshares.
        self.site = ""
        self.limits = config.limits
        self.audit = audit
        self.replay = replay
        self.faults = faults
        self.clock = clock
        self.ready = False
        #: Set when the node's certificate (or the CA's) stops being valid while it runs.
        self.certificate_problem: str | None = None
        #: Who may call, and the audit of refused calls.
        self.gate = Gate(
            config.allowed_clients,
            audit=audit,
            clock=clock,
            max_batch=self.limits.max_batch,
            refusals=refusals,
        )
        self._window_ms = int(self.limits.freshness_seconds * 1000)
        # The replay memory lives in memory and a restart empties it. Every request whose
        # shares an earlier run computed has its line in the audit log (written before the
        # answer), so the memory is rebuilt from the log exactly: nobody is locked out, and
        # no copy is served twice. A node started on a new log knows nothing of earlier
        # runs: it refuses requests dated before its start (and the operator waits a
        # window after rotating a log, nodes/README.md).
        for request_id, timestamp_ms, client in audit.recent:
            replay.restore(request_id, timestamp_ms, client)
        self.started_ms = clock() * 1000.0 if audit.opened_lines == 0 else -math.inf

    @property
    def allowed_clients(self) -> frozenset[str]:
        """The client identities allowed to call Sign and GetInfo now."""
        return self.gate.allowed_clients

    def allow(self, clients: Iterable[str]) -> None:
        """Replace the allowed identities (a reload): from the next call on."""
        self.gate.allow(clients)

    # -- the wire ----------------------------------------------------------------------

    def rpc_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The Signer's methods taking the request's raw bytes: the node checks who the
        caller is first, and only then parses them itself (:func:`parse_message`), so a
        caller that is not allowed never has its message parsed, and a message that is not
        one is refused INVALID_ARGUMENT and audited, like any other bad request."""
        return {
            "GetInfo": grpc.unary_unary_rpc_method_handler(
                self._get_info_wire, response_serializer=pb.NodeInfo.SerializeToString
            ),
            "Sign": grpc.unary_unary_rpc_method_handler(
                self._sign_wire, response_serializer=pb.SignResponse.SerializeToString
            ),
        }

    async def _get_info_wire(self, data: bytes, context: grpc.aio.ServicerContext) -> pb.NodeInfo:
        caller = await self.gate.authorize(context, "GetInfo", data)
        try:
            parse_message(pb.GetInfoRequest, data)
        except Refusal as refusal:
            await self.gate.refuse(context, caller, "GetInfo", refusal, raw=data)
        return self.info()

    async def _sign_wire(self, data: bytes, context: grpc.aio.ServicerContext) -> pb.SignResponse:
        caller = await self.gate.authorize(context, "Sign", data)
        try:
            request: pb.SignRequest = parse_message(pb.SignRequest, data)
        except Refusal as refusal:
            await self.gate.refuse(context, caller, "Sign", refusal, raw=data)
        return await self.sign(caller, request, context)

    # -- GetInfo -----------------------------------------------------------------------

    def switch(self, params: PublicParams, compute: Compute | None, index: int | None) -> None:
        """Sign in a new epoch from now on (after a reshare commits): its parameters, its
        share's compute pool (None: the site retired) and this node's index in it. Requests
        for the old epoch are refused from this moment; the caller closes the old pool."""
        self.params, self.compute, self.index = params, compute, index

    def info(self) -> pb.NodeInfo:
        """Who this node is (for allowed callers; not audited)."""
        p = self.params
        return pb.NodeInfo(
            index=self.index or 0,
            key_id=p.key_id,
            n=p.n,
            k=p.k,
            modulus_bits=p.bits,
            proofs_sound=p.proofs_sound,
            software_version=__version__,
            ready=self.serving,
            max_batch=self.limits.max_batch,
            freshness_window_ms=self._window_ms,
            epoch=p.epoch,
            epoch_id=p.epoch_id,
            site=self.site,
        )

    @property
    def serving(self) -> bool:
        return (
            self.ready
            and self.audit.healthy
            and self.compute is not None
            and self.compute.failure is None
            and self.certificate_problem is None
        )

    # -- Sign --------------------------------------------------------------------------

    def _validate(self, request: pb.SignRequest, now: float, identity: str | None) -> list[int]:
        """Every check on a request, in order; the representatives to sign, or Refusal."""
        return validate_sign_request(
            request,
            params=self.params,
            limits=self.limits,
            now=now,
            started_ms=self.started_ms,
            replay=self.replay,
            pending=self.compute.pending if self.compute is not None else 0,
            faults=self.faults,
            identity=identity,
        )

    async def sign(
        self, caller: Caller, request: pb.SignRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignResponse:
        """Signature shares for a validated batch from an allowed caller, after the audit
        record is durable."""

        async def refuse(code: grpc.StatusCode, reason: str) -> NoReturn:
            await self.gate.refuse(context, caller, "Sign", Refusal(code, reason), request)

        if not self.ready:
            await refuse(grpc.StatusCode.UNAVAILABLE, "node is starting")
        if not self.audit.healthy:
            await refuse(grpc.StatusCode.UNAVAILABLE, "audit log unavailable")
        if self.certificate_problem is not None:
            await refuse(grpc.StatusCode.UNAVAILABLE, "the node's certificate is not valid now")
        if self.compute is not None and self.compute.failure is not None:
            await refuse(grpc.StatusCode.UNAVAILABLE, "node cannot compute (restart it)")
        if self.faults.refuse:
            await refuse(grpc.StatusCode.UNAVAILABLE, "refused (test fault)")
        if self.faults.dodge == "refuse" and request.with_proofs:
            await refuse(grpc.StatusCode.FAILED_PRECONDITION, "will not prove (test fault)")
        if self.faults.dodge == "stall" and request.with_proofs:
            await asyncio.sleep(context.time_remaining() or self.limits.max_deadline_seconds)
            await refuse(grpc.StatusCode.DEADLINE_EXCEEDED, "stalled (test fault)")
        now = self.clock()
        params, compute, index = self.params, self.compute, self.index
        try:
            xs = self._validate(request, now, caller.identity)
        except Refusal as refusal:
            await self.gate.refuse(context, caller, "Sign", refusal, request)
        if compute is None or index is None:
            await refuse(
                grpc.StatusCode.UNAVAILABLE,
                f"this node holds no share of epoch {params.epoch} (a site that joins at a "
                "reshare, or that retired)",
            )
        # Validated: from here on this request_id is spent, whatever happens next, and the
        # request gets a line whatever happens next (the caller may cancel it).
        self.replay.remember(request.request_id, now, caller.identity)
        progress = _Progress()
        try:
            return await self._sign_spent(
                caller, request, context, xs, progress, (params, compute, index)
            )
        except asyncio.CancelledError:
            if not progress.audited:
                self._audit_cancelled(caller, request, progress.computed)
            raise

    def _audit_cancelled(self, caller: Caller, request: pb.SignRequest, computed: bool) -> None:
        """The line of a request the caller cancelled after its id was spent (written
        without waiting: the handler is being cancelled)."""
        reason = "cancelled by the caller " + (
            "after its shares were computed (none was sent)"
            if computed
            else "while its shares were being computed (none was sent)"
        )
        try:
            written = self.audit.submit(
                self.gate.record(caller, "Sign", "cancelled", reason, request)
            )
        except AuditLogError:
            return  # logged by the audit log; health reflects it
        written.add_done_callback(_quiet)

    async def _sign_spent(
        self,
        caller: Caller,
        request: pb.SignRequest,
        context: grpc.aio.ServicerContext,
        xs: list[int],
        progress: _Progress,
        epoch: tuple[PublicParams, Compute, int],
    ) -> pb.SignResponse:
        params, compute, index = epoch

        async def refuse(
            code: grpc.StatusCode, reason: str, metadata: tuple[tuple[str, str], ...] = ()
        ) -> NoReturn:
            progress.audited = True
            await self.gate.refuse(
                context, caller, "Sign", Refusal(code, reason, metadata), request
            )

        def moved() -> str | None:
            """Why these shares must not go out: a reshare committed while they were made
            (they are of the epoch the node has left, which it refuses from then on)."""
            now_in = self.params
            if now_in is params:
                return None
            return f"wrong epoch: this node moved to epoch {now_in.epoch} while signing"

        remaining = context.time_remaining()
        budget = self.limits.max_deadline_seconds
        if remaining is not None:
            budget = min(budget, remaining)
        if not budget > 0 or math.isnan(budget):
            await refuse(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already passed")
        commit: Commit | None = None
        if not self.faults.slow_ms:  # (that test fault holds the answer before its line)
            record = self.gate.record(caller, "Sign", "signed", "", request)
            clock, audit = self.clock, self.audit

            def commit(done: Callable[[BaseException | None], None]) -> Callable[[], None] | None:
                # In the thread that made the shares: the line goes straight to the audit
                # log, and the loop hears of the request once, when it is durable. With
                # no other work waiting for the pool, this thread writes it itself (a
                # wake-up of the writer thread saved); else the writer thread does, with
                # other lines. The epoch is decided here, where the line is: signed, or
                # refused as moved.
                progress.computed = progress.audited = True
                reason = moved()
                if reason is not None:
                    record["outcome"], record["reason"] = "refused", reason
                record["time"] = utc_iso(clock())
                return audit.append_threadsafe(record, done, here=compute.pending == 0)

        try:
            shares = await compute.sign(xs, request.with_proofs, commit=commit, timeout=budget)
        except TimeoutError:
            await refuse(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"not done within the deadline ({budget:.3f} s)"
            )
        except ComputeError:
            await refuse(grpc.StatusCode.UNAVAILABLE, "node cannot compute (restart it)")
        except AuditLogError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "audit log unavailable")
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the node
            log.error("Sign %s: internal error: %s", request.request_id, type(exc).__name__)
            await refuse(grpc.StatusCode.INTERNAL, "internal error")
        progress.computed = True
        metadata = ((codec.EPOCH_METADATA, str(self.params.epoch)),)
        if commit is not None and record["outcome"] == "refused":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, record["reason"], metadata)
        shares = self.faults.shares(shares, params.modulus, request.with_proofs)
        if commit is None:
            await asyncio.sleep(self.faults.slow_ms / 1000)
            reason = moved()
            if reason is not None:
                await refuse(grpc.StatusCode.FAILED_PRECONDITION, reason, metadata)
            progress.audited = True
            try:
                await self.audit.append(self.gate.record(caller, "Sign", "signed", "", request))
            except AuditLogError:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "audit log unavailable")
        return pb.SignResponse(
            index=self.faults.index(index, params.n),
            key_id=params.key_id,
            shares=[pb.Share(value=v, proof_c=c, proof_z=z) for v, c, z in shares],
            epoch=params.epoch,
            epoch_id=params.epoch_id,
        )
