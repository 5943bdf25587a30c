"""Run every node of a key ceremony's output on this machine, as real processes.

For ``ittc cluster up``, ``ittc demo``, the benchmarks and the tests: each node is
``python -m ittc_node --config DIR/site-<i>/etc/node.toml`` in its own process (its audit
log in ``site-<i>/var/``), health-checked with the ``combiner/`` identity, and is
considered up when its standard health service says SERVING over mutual TLS. Nodes can
be killed (SIGKILL), stopped (SIGTERM) and restarted one by one. Each node runs in its
own process group, so killing a node kills its worker processes too.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ittc.config import ClusterFile
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import IttcError, NodeStartError
from ittc.wire import tls

__all__ = ["LocalCluster", "NodeStartError", "free_loopback_ports"]


def free_loopback_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on right now (held open together, so distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class _Proc:
    index: int
    config: pathlib.Path
    log_path: pathlib.Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None


class LocalCluster:
    """The nodes of one ceremony output folder as local processes. A context manager.

    ``cluster`` is the ceremony's output folder, its ``combiner/`` folder or cluster file,
    or that file loaded.
    """

    def __init__(
        self,
        cluster: str | os.PathLike[str] | ClusterFile,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        env: Mapping[int, Mapping[str, str]] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.cluster = cluster if isinstance(cluster, ClusterFile) else ClusterFile.load(cluster)
        self.folder = CeremonyFolder.of(self.cluster)
        root = self.folder.root
        self.log_dir = pathlib.Path(log_dir) if log_dir is not None else root / "logs"
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.python = python
        self._procs = {
            entry.index: _Proc(
                entry.index,
                self.folder.node_config(entry.index),
                self.log_dir / f"node-{entry.index}.log",
                dict((env or {}).get(entry.index, {})),
            )
            for entry in self.cluster.nodes
        }
        if self.cluster.client_cert is None or self.cluster.client_key is None:
            raise IttcError("the cluster file names no client identity to probe health with")
        self._creds = tls.client_credentials(
            self.cluster.client_cert, self.cluster.client_key, self.cluster.ca, now=time.time()
        )
        self._groups: set[int] = set()

    # -- processes --------------------------------------------------------------------

    @property
    def indices(self) -> list[int]:
        return sorted(self._procs)

    def start(
        self,
        indices: Iterable[int] | None = None,
        *,
        wait: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start nodes (all by default); with ``wait``, until each one is SERVING."""
        chosen = list(self.indices if indices is None else indices)
        for index in chosen:
            proc = self._procs[index]
            if proc.popen is not None and proc.popen.poll() is None:
                continue
            child_env = dict(os.environ)
            child_env.update(proc.env)
            child_env.update(env or {})
            log = proc.log_path.open("ab")
            try:
                proc.popen = subprocess.Popen(
                    [self.python, "-m", "ittc_node", "--config", str(proc.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    start_new_session=True,
                )
                self._groups.add(proc.popen.pid)  # new session: its pid is its group id
            finally:
                log.close()
        if wait:
            self.wait_serving(chosen, timeout=timeout)

    def wait_serving(self, indices: Iterable[int] | None = None, *, timeout: float = 60.0) -> None:
        """Block until every given node answers SERVING; raise if one exits or times out."""
        deadline = time.monotonic() + timeout
        pending = set(self.indices if indices is None else indices)
        while pending:
            for index in sorted(pending):
                proc = self._procs[index]
                if proc.popen is not None and proc.popen.poll() is not None:
                    raise NodeStartError(
                        f"node {index} exited with code {proc.popen.returncode}: "
                        f"{self.log_tail(index)}"
                    )
                if self.health(index, timeout=1.0) == "SERVING":
                    pending.discard(index)
            if pending:
                if time.monotonic() > deadline:
                    raise NodeStartError(f"nodes {sorted(pending)} not SERVING after {timeout:g} s")
                time.sleep(0.1)

    def health(self, index: int, *, timeout: float = 2.0) -> str:
        """The node's health status name, or ``"UNREACHABLE"``."""
        entry = self.cluster.node(index)
        options = tls.channel_options(entry.tls_name, 1 << 20)
        with grpc.secure_channel(entry.address, self._creds, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.RpcError:
                return "UNREACHABLE"
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def pid(self, index: int) -> int | None:
        popen = self._procs[index].popen
        return popen.pid if popen is not None and popen.poll() is None else None

    def running(self, index: int) -> bool:
        return self.pid(index) is not None

    def returncode(self, index: int) -> int | None:
        popen = self._procs[index].popen
        return None if popen is None else popen.poll()

    def kill(self, index: int) -> None:
        """SIGKILL: the node dies at once, mid-request if need be."""
        self._signal(index, signal.SIGKILL)
        self._reap(index, 10.0)

    def terminate(self, index: int, *, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        self._signal(index, signal.SIGTERM, group=False)
        return self._reap(index, timeout)

    def pause(self, index: int) -> None:
        """SIGSTOP: the node stops answering but keeps its connections (a hung site)."""
        self._signal(index, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        self._signal(index, signal.SIGCONT)

    def restart(self, index: int, *, timeout: float = 60.0) -> None:
        self.terminate(index)
        self.start([index], timeout=timeout)

    def stop(self, *, timeout: float = 15.0) -> dict[int, int | None]:
        """SIGTERM every node, then SIGKILL what is left (workers too); returns exit codes."""
        for index in self.indices:
            if self.running(index):
                self._signal(index, signal.SIGCONT)
                self._signal(index, signal.SIGTERM, group=False)
        try:
            return {index: self._reap(index, timeout) for index in self.indices}
        finally:
            for group in self._groups:
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._groups.clear()

    def log_tail(self, index: int, lines: int = 20) -> str:
        try:
            text = self._procs[index].log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, index: int, sig: signal.Signals, *, group: bool = True) -> None:
        """Signal a node; ``group`` reaches its worker processes too (not for SIGTERM,
        which the daemon handles itself, stopping its workers in order)."""
        popen = self._procs[index].popen
        if popen is not None and popen.poll() is None:
            try:
                if group:
                    os.killpg(popen.pid, sig)
                else:
                    popen.send_signal(sig)
            except ProcessLookupError:  # pragma: no cover - raced with its exit
                pass

    def _reap(self, index: int, timeout: float) -> int | None:
        popen = self._procs[index].popen
        if popen is None:
            return None
        try:
            return popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            return popen.wait(timeout=10)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
