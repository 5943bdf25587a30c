"""Reaching the sites of a run: one mutual-TLS channel and one RPC per site, and the
failures that say a site did not answer (never that it lied)."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ittc.errors import IttcError
from ittc.lifecycle import SiteIdentity
from ittc.wire import tls
from ittc.wire.v1 import reshare_pb2_grpc as rpb_grpc

__all__ = ["CRASH_VAR", "RPC_TIMEOUT", "ReshareFailed", "Site"]

#: Seconds one reshare RPC may take (Accept stores a share: a key derivation and fsyncs).
RPC_TIMEOUT = 120.0

#: TEST ONLY: the coordinator SIGKILLs itself at this point of a run (``prepared``,
#: ``dealt``, ``acknowledged``, ``certificate``, ``published``, ``delivered``), honoured
#: only with the enabling variable of the node's test faults (:mod:`ittc_node.faults`).
CRASH_VAR = "ITTC_TEST_COORDINATOR_CRASH"


def _crash(point: str) -> None:
    from ittc_node.faults import ENABLE_VALUE, ENABLE_VAR

    if os.environ.get(CRASH_VAR) == point and os.environ.get(ENABLE_VAR) == ENABLE_VALUE:
        os.kill(os.getpid(), signal.SIGKILL)


class ReshareFailed(IttcError):
    """A run that cannot finish: ``blamed`` names the sites the evidence convicts."""

    def __init__(self, reason: str, blamed: Sequence[str] = ()) -> None:
        self.reason = reason
        self.blamed = tuple(blamed)
        who = f" (at fault: {', '.join(self.blamed)})" if self.blamed else ""
        super().__init__(f"reshare failed: {reason}{who}")


# -- talking to one site -----------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A site the coordinator talks to: its identity, where it is reached, and its index
    in the old epoch and in the new (None where it has none)."""

    identity: SiteIdentity
    address: str
    tls_name: str
    old_index: int | None
    new_index: int | None

    @property
    def name(self) -> str:
        return self.identity.name


class _Link:
    def __init__(self, site: Site, credentials: grpc.ChannelCredentials) -> None:
        self.site = site
        options = tls.channel_options(site.tls_name, 64 << 20)
        self.channel = grpc.aio.secure_channel(site.address, credentials, options=options)
        self.stub = rpb_grpc.ReshareStub(self.channel)  # type: ignore[no-untyped-call]

    async def call(self, method: str, request: Any, timeout: float) -> Any:
        try:
            return await getattr(self.stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _SiteFailed(self.site, f"{method}: {exc.code().name}: {exc.details()}") from None


class _SiteFailed(Exception):
    def __init__(self, site: Site, reason: str) -> None:
        super().__init__(f"site {site.name}: {reason}")
        self.site = site
        self.reason = reason
