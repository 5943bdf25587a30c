"""Five nodes on five "hosts": Linux network namespaces with their own addresses.

Each node runs in its own namespace (``ip netns exec``), listens on its own address
``10.77.X.1i`` and presents a certificate for that IP; the combiner (this test process)
reaches them from the root namespace through a switch (a bridge in a namespace of its
own). Then the network fails for real: switch ports go down (every packet to and from
the node silently lost, as when a link is cut) and a node's packets are delayed.

Needs root and the ``ip`` command; skipped with the reason otherwise. Namespace names
carry this run's pid and a random tag; they are deleted when the module ends however it
ends, and leftovers of earlier aborted runs are deleted first (tests/netns.py).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import statistics
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.combiner import ClusterClient
from tests.cluster import LocalCluster, make_cluster, track_answers, track_asks
from tests.netns import (
    PREFIX,
    clean_leftovers,
    lab_for_module,
    listening,
    netns_id,
    unavailable_reason,
)

pytestmark = [pytest.mark.network, pytest.mark.netns]

_REASON = unavailable_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

#: Every client's deadline: each call below must return a signature within it.
DEADLINE = 5.0
#: Bound on waiting for a node that came back to be used again.
REJOIN_WITHIN = 30.0
DELAY_MS = 200
#: How long links stay cut: longer than the client's keepalive (10 s ping + 5 s timeout),
#: so its connections to the cut nodes are declared dead and must be made anew.
CUT_SECONDS = 18.0


@pytest.fixture(scope="module")
def lab():
    yield from lab_for_module(5)


@pytest.fixture(scope="module")
def hosts(lab, tmp_path_factory):
    """The cluster, node i in namespace i at lab.address(i):7100+i."""
    tmp = tmp_path_factory.mktemp("multihost")
    root = make_cluster(tmp, addresses=[f"{lab.address(i)}:{7100 + i}" for i in range(1, 6)])
    wrapper = lab.python_wrapper(tmp / "python-in-netns")
    with LocalCluster(root, python=wrapper) as nodes:
        nodes.start(timeout=120)
        yield nodes


def check(nodes: LocalCluster, message: bytes, signature: bytes) -> None:
    nodes.params.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


async def sign_many(
    client: ClusterClient, nodes: LocalCluster, tag: str, count: int
) -> list[float]:
    """Sign ``count`` messages one after another; each must verify and come back within
    the deadline. Returns the latencies."""
    latencies = []
    for i in range(count):
        message = f"{tag} {i}".encode()
        started = time.monotonic()
        signature = await client.sign(message)
        latencies.append(time.monotonic() - started)
        check(nodes, message, signature)
        assert latencies[-1] < DEADLINE
    return latencies


async def sign_for(
    client: ClusterClient, nodes: LocalCluster, tag: str, seconds: float
) -> list[float]:
    """Sign one message after another (a pause of 20 ms between) for ``seconds``."""
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        latencies += await sign_many(client, nodes, f"{tag} {len(latencies)}", 1)
        await asyncio.sleep(0.02)
    return latencies


async def sign_burst(client: ClusterClient, nodes: LocalCluster, tag: str, count: int) -> None:
    batch = [f"{tag} {i}".encode() for i in range(count)]
    for message, sig in zip(
        batch, await asyncio.gather(*(client.sign(m) for m in batch)), strict=True
    ):
        check(nodes, message, sig)


async def sign_until_used(
    client: ClusterClient,
    nodes: LocalCluster,
    answered: collections.Counter[int],
    indices: list[int],
    tag: str,
) -> float:
    before = {i: answered[i] for i in indices}
    started = time.monotonic()
    count = 0
    while any(answered[i] == before[i] for i in indices):
        assert time.monotonic() - started < REJOIN_WITHIN, (
            f"nodes {[i for i in indices if answered[i] == before[i]]} not used again within "
            f"{REJOIN_WITHIN} s"
        )
        await sign_many(client, nodes, f"{tag} {count}", 1)
        count += 1
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_each_node_is_a_host_of_its_own(lab, hosts):
    """Pass: every node process is in its own network namespace (not ours), listens on
    its own lab address and nothing else, has a certificate naming that IP, and signs
    for a client in the root namespace (all five answer)."""
    nodes = hosts
    namespaces = set()
    for index in nodes.indices:
        pid = nodes.pid(index)
        assert pid is not None
        namespaces.add(netns_id(pid))
        assert listening(pid) == {(lab.address(index), 7100 + index)}
        cert = x509.load_pem_x509_certificate((nodes.node_dir(index) / "tls.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address(lab.address(index)) in san.get_values_for_type(x509.IPAddress)
    assert len(namespaces) == 5 and netns_id() not in namespaces

    async def scenario() -> collections.Counter[int]:
        async with ClusterClient(nodes.cluster, deadline=DEADLINE) as client:
            answered = track_answers(client)
            await sign_many(client, nodes, "five hosts", 10)
            await sign_burst(client, nodes, "five hosts burst", 50)
            return answered

    answered = asyncio.run(scenario())
    assert set(answered) == {1, 2, 3, 4, 5}


def test_links_cut_then_restored(lab, hosts):
    """Node 2's link is cut, then node 4's too (n - k = 2): packets are silently lost,
    no connection is refused or reset.

    Pass: for the 18 s the links are down (past the client's keepalive, so its
    connections to those nodes die), with one and with two nodes cut off, every call
    returns a valid signature within the deadline and the cut nodes answer nothing; once
    the links are back, the same client uses both nodes again (within 30 s)."""
    nodes = hosts
    figures = {}

    async def scenario() -> None:
        async with ClusterClient(nodes.cluster, deadline=DEADLINE) as client:
            answered = track_answers(client)
            await sign_many(client, nodes, "before the cut", 10)
            try:
                lab.cut(2)
                before = answered[2]
                one_cut = await sign_for(client, nodes, "node 2 cut", CUT_SECONDS / 2)
                await sign_burst(client, nodes, "node 2 cut burst", 100)
                assert answered[2] == before
                lab.cut(4)
                before = answered[2], answered[4]
                two_cut = await sign_for(client, nodes, "nodes 2 and 4 cut", CUT_SECONDS / 2)
                await sign_burst(client, nodes, "nodes 2 and 4 cut burst", 100)
                assert (answered[2], answered[4]) == before
                figures.update(
                    {
                        "calls with one cut": len(one_cut),
                        "calls with two cut": len(two_cut),
                        "max latency, s": round(max(one_cut + two_cut), 3),
                        "p50 latency, ms": round(1000 * statistics.median(one_cut + two_cut), 1),
                    }
                )
            finally:
                lab.heal(2)
                lab.heal(4)
            figures["rejoined after s"] = await sign_until_used(
                client, nodes, answered, [2, 4], "links back"
            )
            figures["hedges"] = client.stats.hedges

    asyncio.run(scenario())
    print(f"links cut: {figures}")


def test_delayed_node_is_hedged_around(lab, hosts):
    """Every packet node 3 sends is delayed by 200 ms (tc netem; a user-space delay
    line where the kernel has no netem).

    Pass: calls keep returning valid signatures, half of them in under 100 ms (half the
    delay: they did not wait for node 3); after the first hedge the client asks node 3
    only now and then (at most a tenth of the calls, its retries after a backoff) instead
    of in every third-or-so batch; once the delay is gone node 3 is used again."""
    nodes = hosts
    figures: dict[str, object] = {}

    async def scenario() -> None:
        async with ClusterClient(nodes.cluster, deadline=DEADLINE) as client:
            answered = track_answers(client)
            asked = track_asks(client)
            base = await sign_many(client, nodes, "before the delay", 30)
            figures["p50 before, ms"] = round(1000 * statistics.median(base), 1)
            figures["delay by"] = lab.delay(3, DELAY_MS)
            try:
                asked.clear()
                calls = 100
                delayed = await sign_many(client, nodes, "node 3 delayed", calls)
                await sign_burst(client, nodes, "node 3 delayed burst", 200)
                figures["p50 delayed, ms"] = round(1000 * statistics.median(delayed), 1)
                figures["asked node 3"] = asked[3]
                figures["asked"] = dict(asked)
                assert statistics.median(delayed) < DELAY_MS / 1000 / 2
                assert asked[3] <= calls // 10, dict(asked)
            finally:
                lab.undelay(3)
            figures["rejoined after s"] = await sign_until_used(
                client, nodes, answered, [3], "delay gone"
            )

    asyncio.run(scenario())
    print(f"delayed node: {figures}")


def test_leftovers_of_dead_runs_are_removed_and_live_runs_kept():
    """Pass: a namespace named for a process that no longer exists is deleted; one named
    for a live process (another run) is left alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{PREFIX}-{dead.pid}-0badc0-n1"
    live = f"{PREFIX}-{os.getppid()}-0badc0-n2"
    for ns in (stale, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        removed = clean_leftovers()
        present = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale in removed and stale not in present
        assert live not in removed and live in present
    finally:
        for ns in (stale, live):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
