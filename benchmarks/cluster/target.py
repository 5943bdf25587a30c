"""The cluster being measured: a cached benchmark cluster started as local node
processes, or a running one named by its cluster file."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import time

import tomlkit

from benchmarks.micro import Progress
from ittc import storage
from ittc.config import ClusterFile, NodeConfig, parse_address
from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.deploy.localcluster import LocalCluster, free_loopback_ports
from ittc.scheme import dealer
from ittc.scheme.params import PublicParams

__all__ = ["Target", "cached_cluster", "start_local"]


def _fault_env(spec: str) -> dict[str, str]:
    from ittc_node.faults import environment

    return environment(spec)


def _port_free(address: str) -> bool:
    host, port = parse_address(address)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _create(folder: pathlib.Path, dealt: dealer.DealtKey) -> pathlib.Path:
    out = folder / "cluster"
    create_cluster(
        out,
        dealt,
        addresses=[f"127.0.0.1:{p}" for p in free_loopback_ports(dealt.params.n)],
        kdf=storage.KdfLimits.fast_for_tests(),
    )
    return out


def cached_cluster(
    cache: pathlib.Path, bits: int, k: int, n: int, progress: Progress, *, insecure: bool = False
) -> pathlib.Path:
    """A benchmark cluster folder for (bits, k, n): made once, then reused.

    Made with ``dealer.generate`` and the fastest share-file KDF (the nodes start in a
    second). If one of its ports is taken now, the folder is written again around the
    same shares with new ports.
    """
    folder = cache / f"rsa{bits}-{k}of{n}"
    root = folder / "cluster"
    # (A cache written before site folders, root/cluster.toml, is made anew.)
    if (root / "combiner" / "cluster.toml").exists():
        cluster = ClusterFile.load(root)
        if all(_port_free(entry.address) for entry in cluster.nodes):
            return root
        progress.line(f"  {folder.name}: a port is taken; rewriting its folder with new ports")
        shares = []
        sites = CeremonyFolder(root)
        for entry in cluster.nodes:
            config = NodeConfig.load(sites.node_config(entry.index))
            passphrase = storage.read_passphrase_file(sites.passphrase(entry.index))
            shares.append(
                storage.read_share_file(config.share_file, cluster.params, entry.index, passphrase)
            )
        old = folder / "cluster.old"
        shutil.rmtree(old, ignore_errors=True)
        root.rename(old)
        try:
            _create(folder, dealer.DealtKey(cluster.params, tuple(shares)))
        except BaseException:
            old.rename(root)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return root
    progress.line(
        f"  generating a {bits}-bit key for a {k}-of-{n} benchmark cluster (cached in {folder}) ..."
    )
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    start = time.monotonic()
    dealt = dealer.generate(bits, n=n, k=k, insecure_allow_small_modulus_for_tests=insecure)
    shutil.rmtree(root, ignore_errors=True)
    _create(folder, dealt)
    progress.line(f"  key and cluster folder made in {time.monotonic() - start:.1f} s")
    return root


class Target:
    """The cluster being measured: its file and, for local ones, its node processes."""

    def __init__(
        self,
        cluster: ClusterFile,
        local: LocalCluster | None,
        *,
        cores: int,
        root: pathlib.Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.local = local
        self.cores = cores
        #: The ceremony folder of local nodes (their configs and audit logs).
        self.root = root
        self.faults: dict[int, str] = {}
        #: The nodes' ``[node] backend`` (a cluster elsewhere: unknown, its default).
        self.backend = "auto"

    @property
    def params(self) -> PublicParams:
        return self.cluster.params

    def node_groups(self) -> list[int] | None:
        """Process group ids of the node processes (each node leads its own group)."""
        if self.local is None:
            return None
        pids = [self.local.pid(i) for i in self.local.indices]
        return [p for p in pids if p is not None]

    def set_fault(self, index: int, spec: str | None) -> None:
        """Restart node ``index`` with test fault ``spec`` (or none) if it differs."""
        if self.faults.get(index) == spec:
            return
        if self.local is None:
            raise RuntimeError("faults need local node processes")
        self.local.terminate(index)
        self.local.start([index], env=_fault_env(spec) if spec else None, timeout=60)
        if spec:
            self.faults[index] = spec
        else:
            self.faults.pop(index, None)

    def set_backend(self, backend: str | None) -> None:
        """Restart every node with ``[node] backend = backend`` (None: ``auto``) if the
        nodes run another one."""
        wanted = backend or "auto"
        if wanted == self.backend:
            return
        if self.local is None:
            raise RuntimeError("choosing the nodes' backend needs local node processes")
        assert self.root is not None
        self.local.stop()
        write_backend(self.root, [e.index for e in self.cluster.nodes], wanted)
        self.local.start(timeout=120)
        self.faults.clear()
        self.backend = wanted

    def audit_dir(self) -> pathlib.Path:
        """Where node 1 keeps its audit log (this process's folder for a remote cluster)."""
        if self.root is None:
            return pathlib.Path.cwd()
        config = NodeConfig.load(CeremonyFolder(self.root).node_config(self.cluster.nodes[0].index))
        return config.audit_log.parent

    def clear_faults(self) -> None:
        for index in list(self.faults):
            self.set_fault(index, None)

    def close(self) -> None:
        if self.local is not None:
            self.local.stop()


def write_backend(root: pathlib.Path, indices: list[int], backend: str) -> None:
    """Set ``[node] backend`` in the node configs of the cluster folder ``root``."""
    for index in indices:
        path = CeremonyFolder(root).node_config(index)
        doc = tomlkit.parse(path.read_text())
        node = doc["node"]
        assert isinstance(node, dict)
        node["backend"] = backend
        path.write_text(tomlkit.dumps(doc))


def start_local(
    root: pathlib.Path, log_dir: pathlib.Path, cores: int, progress: Progress
) -> Target:
    """Start every node of the cluster folder ``root`` (their default backend, ``auto``)
    and wait until all are SERVING."""
    cluster = ClusterFile.load(root)
    write_backend(root, [e.index for e in cluster.nodes], "auto")
    for entry in cluster.nodes:  # a benchmark cluster's audit log need not grow forever
        config = NodeConfig.load(CeremonyFolder(root).node_config(entry.index))
        if config.audit_log.exists() and config.audit_log.stat().st_size > 64 << 20:
            config.audit_log.unlink()
    local = LocalCluster(cluster, log_dir=log_dir)
    start = time.monotonic()
    try:
        local.start(timeout=120)
    except BaseException:
        local.stop()
        raise
    p = cluster.params
    progress.line(
        f"  started {p.n} nodes ({p.bits}-bit, k={p.k}) in {time.monotonic() - start:.1f} s"
    )
    return Target(cluster, local, cores=cores, root=root)
