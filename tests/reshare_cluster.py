"""Test helpers for resharing over the network: sites with keys, plans, approvals, the
coordinator, and node processes that outlive a membership change.

    root = make_cluster(tmp_path, bits=512)
    sites = enable_resharing(root)                # a site key at every site, enrolled
    with ReshareCluster(root) as nodes:
        nodes.start()
        plan = refresh_plan(root)                  # same sites, same k
        certificate = run_reshare(root, plan, approvals(root, plan, [1, 2, 3]))

Site ``i`` of the ceremony is folder ``site-<i>``; a site added later is the folder
:func:`add_site` makes. Processes are keyed by folder number, not by epoch index (a
reshare may move a site to another index).
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ittc import storage
from ittc.config import ClusterFile, NodeConfig
from ittc.deploy.layout import CeremonyFolder
from ittc.deploy.localcluster import _Proc
from ittc.deploy.reshare import Coordinator
from ittc.deploy.sites import enroll_local_sites, new_site, site_keygen
from ittc.lifecycle import Approval, Certificate, Member, Plan, SiteIdentity, SiteKey, approve
from ittc.storage.epochs import EpochStore
from ittc.wire import tls
from ittc.wire.v1 import reshare_pb2 as rpb
from ittc.wire.v1 import reshare_pb2_grpc
from tests.cluster import LocalCluster, free_ports, site_passphrase

NAMES = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliett", "kilo", "lima",
]  # fmt: skip


def site_name(folder_index: int) -> str:
    return NAMES[folder_index - 1]


def enable_resharing(root: pathlib.Path) -> dict[int, SiteIdentity]:
    """What the operator and the sites do once: a key made at each site, the identities
    written into the cluster file, the cluster file installed at each site."""
    folder = CeremonyFolder(root)
    return enroll_local_sites(folder, [site_name(i) for i in folder.sites()])


def add_site(root: pathlib.Path, folder_index: int, *, port: int | None = None) -> Member:
    """A new site (no share) in folder ``site-<folder_index>``, listening on a fresh
    loopback port, with its key made there. Returns what a plan names for it (its index
    set to ``folder_index``; a plan renumbers as it needs)."""
    folder = CeremonyFolder(root)
    cluster = ClusterFile.load(folder.cluster_file)
    address = f"127.0.0.1:{port or free_ports(1)[0]}"
    config = new_site(folder, cluster, folder_index, address)
    identity = site_keygen(config, site_name(folder_index))
    return Member(folder_index, identity, address, f"ittc-node-{folder_index}")


def site_key(root: pathlib.Path, folder_index: int) -> SiteKey:
    folder = CeremonyFolder(root)
    return storage.read_site_key(
        folder.etc(folder_index) / "site.key", site_passphrase(root, folder_index)
    )


def current_members(root: pathlib.Path) -> list[Member]:
    """The members of the cluster's current epoch, as a plan names them."""
    cluster = ClusterFile.load(root)
    return [
        Member(n.index, n.site, n.address, n.tls_name) for n in cluster.nodes if n.site is not None
    ]


def make_plan(root: pathlib.Path, members: Sequence[Member], k: int, *, ttl: float = 600) -> Plan:
    cluster = ClusterFile.load(root)
    renumbered = [Member(j, m.site, m.address, m.tls_name) for j, m in enumerate(members, 1)]
    return Plan.new(cluster.params, renumbered, k, not_after=int(time.time() + ttl))


def refresh_plan(root: pathlib.Path) -> Plan:
    cluster = ClusterFile.load(root)
    return make_plan(root, current_members(root), cluster.params.k)


def folder_of(root: pathlib.Path, site: str) -> int:
    return NAMES.index(site) + 1


def approvals(root: pathlib.Path, plan: Plan, folders: Iterable[int]) -> list[Approval]:
    return [approve(site_key(root, i), plan) for i in folders]


def run_reshare(
    root: pathlib.Path,
    plan: Plan,
    given: Sequence[Approval],
    *,
    say: Callable[[str], None] | None = None,
    timeout: float = 60.0,
) -> Certificate:
    cluster = ClusterFile.load(root)
    return asyncio.run(Coordinator(cluster, plan, given, say=say, timeout=timeout).run())


def resume_reshare(root: pathlib.Path, plan: Plan, given: Sequence[Approval]) -> Certificate | None:
    cluster = ClusterFile.load(root)
    return asyncio.run(Coordinator(cluster, plan, given).resume())


class ReshareCluster(LocalCluster):
    """Node processes by site folder, including sites added after the ceremony."""

    def __init__(self, root: pathlib.Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self._where = {i: (self._listen(i), f"ittc-node-{i}") for i in self.indices}

    def _listen(self, folder_index: int) -> str:
        return NodeConfig.load(self.folder.node_config(folder_index)).listen

    def add(self, folder_index: int, env: dict[str, str] | None = None) -> None:
        """Manage the node of a site folder made after the ceremony."""
        self._procs[folder_index] = _Proc(
            folder_index,
            self.folder.node_config(folder_index),
            self.log_dir / f"node-{folder_index}.log",
            dict(env or {}),
        )
        self._where[folder_index] = (self._listen(folder_index), f"ittc-node-{folder_index}")

    def health(self, index: int, *, timeout: float = 2.0) -> str:
        address, name = self._where[index]
        options = tls.channel_options(name, 1 << 20)
        with grpc.secure_channel(address, self._creds, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.RpcError:
                return "UNREACHABLE"
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def start_waiting(self, indices: Iterable[int], *, timeout: float = 60.0) -> None:
        """Start sites that hold no share yet: up when health answers (NOT_SERVING)."""
        chosen = list(indices)
        self.start(chosen, wait=False)
        deadline = time.monotonic() + timeout
        for index in chosen:
            while self.health(index, timeout=1.0) == "UNREACHABLE":
                if self.returncode(index) is not None:
                    raise RuntimeError(f"site {index} exited: {self.log_tail(index)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"site {index} did not come up: {self.log_tail(index)}")
                time.sleep(0.1)

    def reshare_stub(self, index: int) -> reshare_pb2_grpc.ReshareStub:
        address, name = self._where[index]
        channel = self.channel_at(address, name)
        return reshare_pb2_grpc.ReshareStub(channel)  # type: ignore[no-untyped-call]

    def status(self, index: int) -> rpb.ReshareStatus:
        reply: rpb.ReshareStatus = self.reshare_stub(index).Status(rpb.StatusRequest(), timeout=10)
        return reply

    def store(self, index: int) -> EpochStore:
        config = NodeConfig.load(self.folder.node_config(index))
        assert config.state_dir is not None
        return EpochStore(config.state_dir)
