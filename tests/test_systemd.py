"""The node under systemd: the ``sd_notify`` protocol over a real Unix datagram socket,
and the unit shipped in the package.

There is no systemd running on the test machines (no PID 1 systemd), so the node is
started as ``Type=notify`` would start it: with ``$NOTIFY_SOCKET`` naming a socket the
test binds and reads, and ``$WATCHDOG_USEC`` set. (``systemd-analyze verify`` checks the
shipped units in tests/test_deploy.py.)
"""

from __future__ import annotations

import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from ittc_node.sdnotify import Notifier

from tests.cluster import LocalCluster, make_cluster

TIMEOUT = 60.0


class NotifySocket:
    """What systemd listens on: a Unix datagram socket (a path, or abstract)."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, after: int = 0) -> dict[str, str]:
        """The first message from number ``after`` on holding ``key`` (= ``value``)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for message in self.messages[after:]:
                if key in message and (value is None or message[key] == value):
                    return message
            assert time.monotonic() < deadline, f"no {key} in {self.messages}"
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Every message that arrives in the next ``seconds``."""
        first = len(self.messages)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(
                dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            )
        return self.messages[first:]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: pathlib.Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


@pytest.mark.network
def test_a_node_speaks_sd_notify(tmp_path: pathlib.Path, notify_socket: NotifySocket) -> None:
    """A node started with ``$NOTIFY_SOCKET`` (as ``Type=notify`` does) and a 0.4 s
    watchdog. Pass: ``READY=1`` arrives once health is SERVING (checked at that moment),
    with a STATUS line; ``WATCHDOG=1`` keeps coming; SIGHUP brings ``RELOADING=1`` with
    ``MONOTONIC_USEC`` and then ``READY=1`` again; SIGTERM brings ``STOPPING=1`` and
    exit status 0."""
    root = make_cluster(tmp_path)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    with LocalCluster(root) as nodes:
        nodes.start([1], wait=False, env=env)
        ready = notify_socket.wait_for("READY", "1")
        assert nodes.health(1) == "SERVING"
        assert ready["STATUS"].startswith("serving as node 1")
        watchdogs = [m for m in notify_socket.collect(1.0) if m.get("WATCHDOG") == "1"]
        assert len(watchdogs) >= 3, notify_socket.messages  # every 0.2 s

        pid = nodes.pid(1)
        assert pid is not None
        os.kill(pid, signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify_socket.wait_for("READY", "1", after=notify_socket.messages.index(reloading))
        assert nodes.terminate(1) == 0
        notify_socket.wait_for("STOPPING", "1")


def test_the_notifier_reaches_an_abstract_socket_and_is_silent_without_one() -> None:
    """Pass: ``@name`` in ``$NOTIFY_SOCKET`` is the abstract namespace (a leading NUL);
    without ``$NOTIFY_SOCKET`` nothing is sent; a socket that is gone is logged, never
    raised."""
    name = f"ittc-test-{secrets.token_hex(6)}"
    listener = NotifySocket(b"\0" + name.encode())
    try:
        notifier = Notifier({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.ready("serving as a test")
        assert listener.wait_for("READY") == {"READY": "1", "STATUS": "serving as a test"}
    finally:
        listener.close()
    assert not Notifier({}).ready("nobody listens")
    assert not Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"}).stopping()
    assert Notifier({"WATCHDOG_USEC": "5000000"}).watchdog_seconds == 5.0
    assert Notifier({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None


def test_the_unit_and_example_config_ship_with_the_package(tmp_path: pathlib.Path) -> None:
    """Pass: ``ittc node --print-systemd-unit`` prints the unit in the source tree's
    nodes/systemd/ (Type=notify, ExecReload, the passphrase as an encrypted credential),
    ``--print-example-config`` the example node.toml, which loads. (``systemd-analyze
    verify`` on that unit: tests/test_deploy.py.)"""
    from ittc.config import NodeConfig

    root = pathlib.Path(__file__).resolve().parent.parent
    unit = subprocess.run(
        [sys.executable, "-m", "ittc", "node", "--print-systemd-unit"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert unit == (root / "nodes" / "systemd" / "ittc-node@.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredentialEncrypted=passphrase:",
        "WatchdogSec=",
    ):
        assert line in unit, line
    example = subprocess.run(
        [sys.executable, "-m", "ittc", "node", "--print-example-config"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert example == (root / "nodes" / "examples" / "node.toml").read_text()
    (tmp_path / "node.toml").write_text(example)
    assert NodeConfig.load(tmp_path / "node.toml").health_listen == "0.0.0.0:8080"
