"""Linux network namespaces as separate hosts, for multi-host tests (root only).

    lab = NetLab(5)                        # namespaces <prefix>-sw (a switch) and -n1..-n5
    lab.up()                               # bridge, veth links, 10.77.X.1 here, .11-.15 there
    lab.address(3)                         # "10.77.X.13"
    lab.command(3, [python, "-m", ...])    # a command run inside node 3's namespace
    lab.cut(3); lab.heal(3)                # switch port down / up: packets silently lost
    lab.delay(3, 200); lab.undelay(3)      # 200 ms more on every packet node 3 sends
    lab.down()                             # kill what runs inside, delete every namespace

Topology: a "switch" namespace holds a bridge; each node namespace has one veth link
``eth0`` to a port ``p<i>`` of that bridge; the root namespace (where the test process
and so the combiner run) has one veth link to the bridge too, with address ``.1``.
Cutting a node takes its switch port down: the node is not told, its packets and the
combiner's are simply dropped, as when a cable or a WAN link fails.

Delay uses ``tc netem`` when the kernel has it. Kernels built without
``CONFIG_NET_SCH_NETEM`` (some VM kernels) get a delay line in user space instead: the
node's switch port leaves the bridge and a small relay process in the switch namespace
copies every Ethernet frame between that port and a new bridge port, holding the frames
the node sends for the delay (the same place in the path as netem on the node's link).

Names are unique per run (``ittc-<pid>-<tag>-...``) and one subnet ``10.77.X.0/24`` is
chosen that is not routed here yet, so runs can share a machine. :func:`clean_leftovers`
removes the namespaces of earlier runs whose process is gone (an aborted run).

This file is also the relay's program: ``python tests/netns.py relay IN OUT DELAY_MS``.
Keep it free of imports beyond the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence

__all__ = [
    "PREFIX",
    "NetLab",
    "NetLabError",
    "clean_leftovers",
    "listening",
    "netns_id",
    "unavailable_reason",
]

PREFIX = "ittc"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)-(sw|n\d+)$")
_LOCK = "/run/lock/ittc-netlab.lock"


class NetLabError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message has the command and its stderr."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (apt-get install iproute2)"
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise NetLabError(f"{' '.join(args)}: {out.stderr.strip() or out.returncode}")
    return out


def _ns_pids(ns: str) -> list[int]:
    out = _run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def _kill_and_delete(ns: str) -> None:
    """SIGKILL every process inside ``ns``, then delete it (a namespace lives on while a
    process is in it, so the order matters)."""
    for _ in range(50):
        pids = _ns_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _run("ip", "netns", "del", ns, check=False)


def _namespaces() -> list[str]:
    out = _run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers() -> list[str]:
    """Delete namespaces left by earlier runs of these tests whose process has died."""
    removed = []
    for ns in _namespaces():
        match = _NAME.match(ns)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            _kill_and_delete(ns)
            removed.append(ns)
    return removed


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialize subnet choice and creation between concurrent runs on one machine."""
    os.makedirs(os.path.dirname(_LOCK), exist_ok=True)
    with open(_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_subnet() -> int:
    routes = _run("ip", "-4", "route", "show", "table", "all", check=False).stdout
    addrs = _run("ip", "-4", "-o", "addr", "show", check=False).stdout
    used = {int(m) for m in re.findall(r"\b10\.77\.(\d+)\.", routes + addrs)}
    for third in range(256):
        if third not in used:
            return third
    raise NetLabError("no free 10.77.X.0/24 subnet")


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in ``pid``'s network namespace
    (IPv4-mapped IPv6 addresses, as gRPC binds them, shown as IPv4)."""
    found = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            rows = fh.read().splitlines()[1:]
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(packed)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.add((str(address), int(port_hex, 16)))
    return found


def netns_id(pid: int | str = "self") -> str:
    """The network namespace a process is in (``net:[inode]``)."""
    return os.readlink(f"/proc/{pid}/ns/net")


class NetLab:
    """``n`` node namespaces on one switch, linked to the root namespace."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tag = secrets.token_hex(3)
        base = f"{PREFIX}-{os.getpid()}-{self.tag}"
        self.switch = f"{base}-sw"
        self.nodes = {i: f"{base}-n{i}" for i in range(1, n + 1)}
        self.root_if = f"it{self.tag}"  # 8 characters: interface names have at most 15
        self.subnet = -1
        self._relays: dict[int, subprocess.Popen[bytes]] = {}
        self._netem: set[int] = set()
        self._created: list[str] = []
        self._netem_ok: bool | None = None

    # -- addresses ----------------------------------------------------------------------

    @property
    def host_address(self) -> str:
        """The root namespace's (the combiner's) address on the lab network."""
        return f"10.77.{self.subnet}.1"

    def address(self, index: int) -> str:
        return f"10.77.{self.subnet}.{10 + index}"

    def namespace(self, index: int) -> str:
        return self.nodes[index]

    def command(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside node ``index``'s namespace (same pid: ``ip`` execs it)."""
        return ["ip", "netns", "exec", self.nodes[index], *argv]

    def python_wrapper(self, path: str | os.PathLike[str], python: str = sys.executable) -> str:
        """An executable that runs ``python ARGS`` inside the node namespace named by ARGS'
        ``--config .../site-<i>/etc/node.toml``: give it to LocalCluster as ``python=``."""
        lines = ["#!/bin/sh", 'for arg in "$@"; do config="$arg"; done', 'case "$config" in']
        for index, ns in self.nodes.items():
            run = f'exec ip netns exec {ns} {shlex.quote(python)} "$@"'
            lines.append(f"  */site-{index}/etc/node.toml) {run} ;;")
        lines += ["esac", 'echo "no namespace for $config" >&2', "exit 2", ""]
        target = os.fspath(path)
        with open(target, "w") as fh:
            fh.write("\n".join(lines))
        os.chmod(target, 0o755)
        return target

    # -- building and tearing down ------------------------------------------------------

    def up(self) -> NetLab:
        with _machine_lock():
            self.subnet = _free_subnet()
            try:
                self._build()
            except BaseException:
                self.down()
                raise
        return self

    def _build(self) -> None:
        sw = self.switch
        _run("ip", "netns", "add", sw)
        self._created.append(sw)
        _run("ip", "-n", sw, "link", "set", "lo", "up")
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        # The root namespace's link; its peer is created straight inside the switch.
        _run("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "up0", "netns", sw)
        _run("ip", "addr", "add", f"{self.host_address}/24", "dev", self.root_if)
        _run("ip", "link", "set", self.root_if, "up")
        _run("ip", "-n", sw, "link", "set", "up0", "master", "br0", "up")
        for index, ns in self.nodes.items():
            _run("ip", "netns", "add", ns)
            self._created.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run(
                "ip",
                "-n",
                sw,
                "link",
                "add",
                f"p{index}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _run("ip", "-n", sw, "link", "set", f"p{index}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        """Stop relays, kill every process in the namespaces, delete them all."""
        for index in list(self._relays):
            self._stop_relay(index)
        for ns in reversed(self._created):
            _kill_and_delete(ns)
        self._created.clear()
        # The root end of a veth pair goes with its peer; make sure anyway.
        _run("ip", "link", "del", self.root_if, check=False)

    def exists(self) -> list[str]:
        """This lab's namespaces that exist right now (for cleanup checks)."""
        mine = {self.switch, *self.nodes.values()}
        return [ns for ns in _namespaces() if ns in mine]

    # -- faults ---------------------------------------------------------------------------

    def cut(self, index: int) -> None:
        """Take node ``index``'s switch port down: its traffic is silently lost."""
        _run("ip", "-n", self.switch, "link", "set", f"p{index}", "down")

    def heal(self, index: int) -> None:
        _run("ip", "-n", self.switch, "link", "set", f"p{index}", "up")

    def isolate(self, index: int) -> None:
        """Node ``index``'s switch port forwards to and from the root namespace's port only,
        never to another isolated port (the bridge's port isolation): with every node
        isolated, the nodes form a star around this namespace and cannot reach each other."""
        _run(
            "ip", "netns", "exec", self.switch,
            "bridge", "link", "set", "dev", f"p{index}", "isolated", "on",
        )  # fmt: skip

    def reaches(self, index: int, address: str, *, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from node ``index``'s namespace to ``address`` opens."""
        host, port = address.rsplit(":", 1)
        code = f"import socket; socket.create_connection(({host!r}, {port}), {timeout}).close()"
        result = subprocess.run(
            self.command(index, [sys.executable, "-c", code]),
            capture_output=True,
            timeout=timeout + 30,
            check=False,
        )
        return result.returncode == 0

    @property
    def has_netem(self) -> bool:
        """Whether this kernel has the netem qdisc (tried once on a scratch device)."""
        if self._netem_ok is None:
            ns = self.nodes[1]
            out = _run(
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
                check=False,
            )
            self._netem_ok = out.returncode == 0
            if self._netem_ok:
                _run(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    "lo",
                    "root",
                    check=False,
                )
        return self._netem_ok

    def delay(self, index: int, ms: int) -> str:
        """Delay every frame node ``index`` sends by ``ms``; returns the means used."""
        if self.has_netem:
            _run(
                "ip",
                "netns",
                "exec",
                self.nodes[index],
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                f"{ms}ms",
            )
            self._netem.add(index)
            return "tc netem"
        self._start_relay(index, ms)
        return "user-space delay line (no netem in this kernel)"

    def undelay(self, index: int) -> None:
        if index in self._netem:
            _run(
                "ip",
                "netns",
                "exec",
                self.nodes[index],
                "tc",
                "qdisc",
                "del",
                "dev",
                "eth0",
                "root",
                check=False,
            )
            self._netem.discard(index)
        if index in self._relays:
            self._stop_relay(index)

    def _start_relay(self, index: int, ms: int) -> None:
        sw, port, a, b = self.switch, f"p{index}", f"d{index}a", f"d{index}b"
        _run("ip", "-n", sw, "link", "add", a, "type", "veth", "peer", "name", b)
        _run("ip", "-n", sw, "link", "set", b, "master", "br0", "up")
        _run("ip", "-n", sw, "link", "set", a, "up", "promisc", "on")
        _run("ip", "-n", sw, "link", "set", port, "promisc", "on")
        relay = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                sw,
                sys.executable,
                os.path.abspath(__file__),
                "relay",
                port,
                a,
                str(ms),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert relay.stdout is not None
        ready = relay.stdout.readline()  # the relay says "ready" once its sockets are bound
        if ready.strip() != b"ready":
            relay.kill()
            _, err = relay.communicate(timeout=10)
            raise NetLabError(f"delay relay did not start: {err.decode(errors='replace')}")
        self._relays[index] = relay
        # Only now leave the bridge: the relay is already copying frames.
        _run("ip", "-n", sw, "link", "set", port, "nomaster")

    def _stop_relay(self, index: int) -> None:
        relay = self._relays.pop(index)
        _run("ip", "-n", self.switch, "link", "set", f"p{index}", "master", "br0", check=False)
        relay.kill()
        relay.communicate(timeout=10)
        _run("ip", "-n", self.switch, "link", "del", f"d{index}a", check=False)

    def __enter__(self) -> NetLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def lab_for_module(nodes: int) -> Iterator[NetLab]:
    """A module fixture's body: earlier runs' leftovers cleaned, a lab of ``nodes`` hosts
    up for the module, and down after it, leaving no namespace behind."""
    clean_leftovers()
    with NetLab(nodes) as net:
        yield net
    assert not net.exists(), f"namespaces left behind: {net.exists()}"


# -- the user-space delay line ------------------------------------------------------------

_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_VNET_HDR = 15  # frames keep their offload metadata (GSO, partial checksums)
_PACKET_IGNORE_OUTGOING = 23
_PACKET_OUTGOING = 4


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    s.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ifname, 0))
    return s


def relay(slow_in: str, out: str, delay_ms: int) -> None:
    """Frames arriving on ``slow_in`` leave on ``out`` ``delay_ms`` later (in order);
    frames arriving on ``out`` leave on ``slow_in`` at once."""
    a, b = _packet_socket(slow_in), _packet_socket(out)
    delay = delay_ms / 1000
    line: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def receive(src: socket.socket, forward: object) -> None:
        while True:
            data, addr = src.recvfrom(1 << 17)
            if addr[2] == _PACKET_OUTGOING:
                continue
            forward(data)  # type: ignore[operator]

    def send_now(data: bytes) -> None:
        with contextlib.suppress(OSError):
            a.send(data)

    def send_later() -> None:
        while True:
            due, data = line.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with contextlib.suppress(OSError):
                b.send(data)

    threading.Thread(target=send_later, daemon=True).start()
    threading.Thread(target=receive, args=(b, send_now), daemon=True).start()
    print("ready", flush=True)
    receive(a, lambda data: line.put((time.monotonic() + delay, data)))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "relay":
        relay(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: netns.py relay IN OUT DELAY_MS")
