"""The combiner's side of the wire: one mutual-TLS channel per node, and one RPC.

A node index whose address is a DNS name may be several replicas of one site: its
channel balances over every address the name resolves to and tries an RPC that one
replica fails on the next (:func:`service_config`).

:class:`NodeLink` sends a batch of items to one node and returns its shares, checked for
shape by the codec, with the node index taken from the channel (the node it dialled and
whose certificate it checked), never from the answer. Every failure is a typed
:class:`~ittc.errors.NodeError`: :class:`~ittc.errors.NodeUnavailable` (unreachable, no
answer in time), :class:`~ittc.errors.NodeRefused` (the node said no, with its gRPC
status; :class:`~ittc.errors.NodeInOtherEpoch` when it signs in another epoch) or
:class:`~ittc.errors.NodeMisbehaved` (a malformed or mislabelled answer, or shares of
another epoch).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ittc.config import ClusterFile, NodeEntry, parse_address
from ittc.errors import (
    NodeError,
    NodeInOtherEpoch,
    NodeMisbehaved,
    NodeRefused,
    NodeUnavailable,
    WireError,
)
from ittc.scheme.encoding import SignItem
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import SignatureShare
from ittc.wire import codec, tls
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc.wire.v1 import reshare_pb2_grpc as rpb_grpc
from ittc.wire.v1 import signer_pb2 as pb
from ittc.wire.v1 import signer_pb2_grpc as pb_grpc

__all__ = ["NodeLink", "open_links"]

#: gRPC codes that say the node could not be reached or did not answer, rather than
#: that it answered no.
_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}

_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.enable_retries", 1),
]

#: One try more, on the next replica, for an RPC that a replica failed as UNAVAILABLE
#: (it died, is starting, lost its audit log). Not throttled: a replica that keeps
#: failing costs one quick extra attempt per RPC sent to it, and every such RPC still
#: succeeds on the other; a busy node answers RESOURCE_EXHAUSTED, which is not retried.
_RETRY_ON_NEXT_REPLICA = {
    "name": [{"service": "ittc.v1.Signer"}],
    "retryPolicy": {
        "maxAttempts": 2,
        "initialBackoff": "0.01s",
        "maxBackoff": "0.05s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    },
}


def service_config(address: str) -> str:
    """gRPC's service config for the channel to one node index at ``address``.

    Every channel balances ``round_robin`` over the addresses its target resolves to. A
    DNS name may stand for several replicas of the site (nodes/README.md, "Replicas"):
    then an RPC one replica fails as UNAVAILABLE is tried once more, on the next one,
    before the combiner counts the site as failing. An IP address is one node: no
    retry (it would only ask the same node again)."""
    host, _ = parse_address(address)
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if not _is_ip(host):
        config["methodConfig"] = [_RETRY_ON_NEXT_REPLICA]
    return json.dumps(config)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


def _rpc_error(index: int, exc: grpc.aio.AioRpcError) -> NodeError:
    code = exc.code()
    reason = f"{code.name}: {exc.details()}"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        epoch = codec.node_epoch(exc.trailing_metadata())
        if epoch is not None:
            return NodeInOtherEpoch(index, reason, epoch)
    kind = NodeUnavailable if code in _UNAVAILABLE else NodeRefused
    return kind(index, reason, code.name)


class NodeLink:
    """The channel to one node."""

    def __init__(
        self,
        entry: NodeEntry,
        params: PublicParams,
        credentials: grpc.ChannelCredentials,
        clock: Callable[[], float],
    ) -> None:
        self.entry = entry
        self.index = entry.index
        self.params = params
        self.clock = clock
        options = tls.channel_options(entry.tls_name, codec.MAX_CLIENT_MESSAGE_BYTES)
        options += [*_CHANNEL_OPTIONS, ("grpc.service_config", service_config(entry.address))]
        self.channel = grpc.aio.secure_channel(entry.address, credentials, options=options)
        self._stub = pb_grpc.SignerStub(self.channel)  # type: ignore[no-untyped-call]

    def connecting(self) -> bool:
        """The channel is waiting to reconnect after a failed attempt (gRPC's own
        back-off): an RPC now would fail at once, so ask another node first."""
        state = self.channel.get_state(try_to_connect=True)
        return bool(state == grpc.ChannelConnectivity.TRANSIENT_FAILURE)

    async def sign(
        self, items: Sequence[SignItem], *, with_proofs: bool, timeout: float
    ) -> list[SignatureShare]:
        """This node's shares of ``items`` (in order), or a :class:`NodeError`."""
        request = pb.SignRequest(
            request_id=secrets.token_urlsafe(18),
            timestamp_ms=int(self.clock() * 1000),
            key_id=self.params.key_id,
            with_proofs=with_proofs,
            items=[codec.item_to_wire(item) for item in items],
            epoch=self.params.epoch,
            epoch_id=self.params.epoch_id,
        )
        try:
            response: pb.SignResponse = await self._stub.Sign(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.index, exc) from None
        if response.index != self.index:
            raise NodeMisbehaved(self.index, f"answered as node {response.index}")
        if response.key_id != self.params.key_id:
            raise NodeMisbehaved(self.index, "answered for another key")
        if response.epoch != self.params.epoch or response.epoch_id != self.params.epoch_id:
            raise NodeMisbehaved(self.index, f"answered for another epoch ({response.epoch})")
        try:
            return codec.shares_from_wire(
                response.shares,
                index=self.index,
                params=self.params,
                count=len(items),
                with_proofs=with_proofs,
            )
        except WireError as exc:
            raise NodeMisbehaved(self.index, exc.reason) from None

    async def health(self, timeout: float) -> str:
        """The node's ``grpc.health.v1`` status name, or why it could not be asked."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def info(self, timeout: float) -> pb.NodeInfo | str:
        """The node's self-description, or why it could not be asked."""
        try:
            info: pb.NodeInfo = await self._stub.GetInfo(pb.GetInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return info

    async def commit(self, certificate: bytes, timeout: float) -> None:
        """Hand the node the commit certificate of the epoch the client signs in (a node
        still in the epoch before it commits; a node accepts a certificate from anyone,
        since it proves itself). Raises a :class:`NodeError` if the node does not."""
        stub = rpb_grpc.ReshareStub(self.channel)  # type: ignore[no-untyped-call]
        try:
            await stub.Commit(rpb.CommitRequest(certificate=certificate), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.index, exc) from None

    async def certificates(self, after_epoch: int, timeout: float) -> list[bytes]:
        """The commit certificates the node holds for the epochs after ``after_epoch``, up
        to its current one, in order (to be checked by the caller: they prove
        themselves)."""
        stub = rpb_grpc.ReshareStub(self.channel)  # type: ignore[no-untyped-call]
        request = rpb.StatusRequest(certificates_after=after_epoch, with_certificates=True)
        try:
            status: rpb.ReshareStatus = await stub.Status(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.index, exc) from None
        return [bytes(c) for c in status.certificates[:64]]

    async def close(self) -> None:
        await self.channel.close()


def open_links(
    cluster: ClusterFile, cert: Path, key: Path, clock: Callable[[], float]
) -> dict[int, NodeLink]:
    """One link per node of ``cluster``, presenting the client identity ``cert``/``key``,
    checked first (:func:`ittc.wire.tls.client_credentials`: a problem of the client's
    own raises :class:`~ittc.errors.ClientIdentityError` before any node is dialled)."""
    credentials = tls.client_credentials(cert, key, cluster.ca, now=clock())
    return {
        entry.index: NodeLink(entry, cluster.params, credentials, clock) for entry in cluster.nodes
    }
