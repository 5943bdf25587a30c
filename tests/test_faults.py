"""Intrusion tolerance with real node processes: crashes, hung and slow nodes, liars, load.

Every test runs real ``python -m ittc_node`` processes over mutual TLS on loopback and
makes them misbehave for real: SIGKILL (also while they compute a batch), SIGSTOP, test
faults that delay or lie (``ittc_node.faults``). What "pass" means is said per test; in
short, with at most ``n - k`` faulty nodes every signature comes out within the
deadline and verifies for its own message, ``ClientStats.blamed`` names exactly the
nodes that sent bad data, and with more faults the caller gets a typed
:class:`~ittc.errors.SigningError` naming the nodes, never a wrong signature.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import threading
import time
from collections.abc import Callable, Iterable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.combiner import ClusterClient
from ittc.errors import IttcError, SigningError
from tests.cluster import FaultCluster, make_cluster, open_fds, rss_bytes, track_answers

pytestmark = pytest.mark.network

#: The deadline every client here gets; a test that ends later has failed.
DEADLINE = 8.0
#: Bound on waiting for a node to be used again after it came back.
REJOIN_WITHIN = 30.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Five nodes (3-of-5, 1024-bit test key), restarted with faults as tests need."""
    root = make_cluster(tmp_path_factory.mktemp("faults"))
    with FaultCluster(root) as local:
        local.start(timeout=120)
        yield local


@pytest.fixture
def honest(nodes):
    """The module's nodes, all running, resumed and honest when the test starts."""
    nodes.set_faults({})
    return nodes


def check(nodes: FaultCluster, message: bytes, signature: object) -> None:
    """``signature`` is bytes and a valid PKCS#1 v1.5 signature on ``message``."""
    assert isinstance(signature, bytes), f"expected a signature, got {signature!r}"
    nodes.params.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def messages(tag: str, count: int) -> list[bytes]:
    return [f"{tag} {i} {os.urandom(4).hex()}".encode() for i in range(count)]


async def until(predicate, timeout: float, poll: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(poll)
    return True


async def sign_until_used(
    client: ClusterClient,
    answered: collections.Counter[int],
    indices: Iterable[int],
    nodes: FaultCluster,
    tag: str,
) -> float:
    """Sign (and verify) until every node in ``indices`` answered the client again;
    returns how long that took. Fails after REJOIN_WITHIN seconds."""
    wanted = set(indices)
    before = {i: answered[i] for i in wanted}
    started = time.monotonic()
    count = 0
    while any(answered[i] == before[i] for i in wanted):
        assert time.monotonic() - started < REJOIN_WITHIN, (
            f"nodes {sorted(i for i in wanted if answered[i] == before[i])} not used again "
            f"within {REJOIN_WITHIN} s"
        )
        message = f"{tag} {count}".encode()
        check(nodes, message, await client.sign(message))
        count += 1
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# -- 1. crashes --------------------------------------------------------------------------


def test_two_nodes_killed_while_computing_a_batch(honest):
    """n-k = 2 nodes SIGKILLed while several batches are in flight on them.

    Pass: every signature comes out, verifies for its own message, within the deadline;
    the killed nodes' in-flight RPCs were failed and replaced at once (no hedge fired:
    the hedge delay is longer than the test), and after a restart the same client uses
    both nodes again."""
    nodes = honest
    nodes.set_faults({1: "slow:1000", 2: "slow:1000"})  # computing for a second
    batch = messages("crash", 40)

    async def scenario() -> None:
        async with ClusterClient(nodes.cluster, deadline=DEADLINE, hedge_after=5.0) as client:
            await client.info()  # every channel connected
            answered = track_answers(client)
            tasks = []
            for wave in range(4):  # four separate batches
                tasks += [
                    asyncio.ensure_future(client.sign(m))
                    for m in batch[wave * 10 : (wave + 1) * 10]
                ]
                await asyncio.sleep(0.03)
            assert await until(
                lambda: client.pool.state(1).inflight and client.pool.state(2).inflight, 5.0
            ), "the slow nodes were never asked"
            await asyncio.sleep(0.1)
            killed_at = time.monotonic()
            nodes.kill(1)
            nodes.kill(2)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            elapsed = time.monotonic() - killed_at
            for message, result in zip(batch, results, strict=True):
                check(nodes, message, result)
            assert elapsed < min(DEADLINE, 5.0)  # the kill was noticed, not waited out
            assert client.stats.hedges == 0
            assert client.stats.node_failures[1] >= 1 and client.stats.node_failures[2] >= 1
            assert answered[1] == answered[2] == 0
            assert not client.stats.blamed  # a crash is not a lie
            nodes.set_faults({})  # both back, honest
            await sign_until_used(client, answered, [1, 2], nodes, "after the crash")

    asyncio.run(scenario())


def test_fewer_than_k_left_mid_batch_is_a_typed_error(honest):
    """Three nodes SIGKILLed while computing: only two left, fewer than k = 3.

    Pass: every call raises SigningError within the deadline (plus a second), naming the
    killed nodes; no call returns anything, so no wrong signature can come out."""
    nodes = honest
    nodes.set_faults({i: "slow:1500" for i in (1, 2, 3)})
    batch = messages("too few", 20)
    deadline = 4.0

    async def scenario() -> tuple[list[object], float]:
        async with ClusterClient(nodes.cluster, deadline=deadline, hedge_after=5.0) as client:
            await client.info()
            tasks = []
            for wave in range(2):
                tasks += [
                    asyncio.ensure_future(client.sign(m))
                    for m in batch[wave * 10 : (wave + 1) * 10]
                ]
                await asyncio.sleep(0.03)
            assert await until(lambda: all(client.pool.state(i).inflight for i in (1, 2, 3)), 5.0)
            started = time.monotonic()
            for index in (1, 2, 3):
                nodes.kill(index)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return results, time.monotonic() - started

    results, elapsed = asyncio.run(scenario())
    assert elapsed < deadline + 1.0
    for result in results:
        assert isinstance(result, SigningError), f"expected SigningError, got {result!r}"
        assert {1, 2, 3} <= set(result.nodes), result.nodes
        assert "node 1" in str(result) and "node 3" in str(result)


# -- 2. slow and hung nodes ---------------------------------------------------------------


async def _rounds_without_leaks(
    client: ClusterClient, nodes: FaultCluster, tag: str, rounds: int = 5
) -> list[float]:
    """Rounds of sequential and concurrent signing; checks that tasks and file
    descriptors come back to where they were after every round. Returns latencies."""
    tasks_before = len(asyncio.all_tasks())
    channels = dict(client.channels)
    fds: list[int] = []
    latencies: list[float] = []
    for r in range(rounds):
        for message in messages(f"{tag} {r}", 6):
            started = time.monotonic()
            check(nodes, message, await client.sign(message))
            latencies.append(time.monotonic() - started)
        burst = messages(f"{tag} burst {r}", 20)
        started = time.monotonic()
        for message, sig in zip(
            burst, await asyncio.gather(*(client.sign(m) for m in burst)), strict=True
        ):
            check(nodes, message, sig)
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.05)  # cancelled RPCs finish unwinding
        assert not client.busy, "batch tasks left behind"
        assert len(asyncio.all_tasks()) == tasks_before, "asyncio tasks leaked"
        fds.append(open_fds())
    assert fds[-1] <= fds[0] + 2, f"file descriptors keep growing: {fds}"
    # The same five channels all along: none was replaced, none added.
    assert dict(client.channels) == channels
    return latencies


@pytest.mark.parametrize("hedge_after", [0.3, None], ids=["hedge-0.3s", "hedge-adaptive"])
def test_slow_node_is_not_waited_for_and_rejoins_after_restart(honest, hedge_after):
    """Node 3 answers 3 s late (slow:3000).

    Pass: every call, sequential or a burst of 20, completes in under 1.5 s, half the
    node's delay (the hedge delay bounds it: 0.3 s, or at most 1 s adaptive); node 3 is
    never waited for; no batch task, asyncio task or file descriptor is left behind
    over the rounds; once node 3 is restarted without the fault, the same client uses
    it again."""
    nodes = honest
    nodes.set_faults({3: "slow:3000"})

    async def scenario() -> None:
        async with ClusterClient(
            nodes.cluster, deadline=DEADLINE, hedge_after=hedge_after
        ) as client:
            answered = track_answers(client)
            check(nodes, b"warm up", await client.sign(b"warm up"))
            latencies = await _rounds_without_leaks(client, nodes, "slow node")
            assert max(latencies) < 1.5, f"waited for the slow node: {max(latencies):.2f} s"
            assert answered[3] == 0
            nodes.set_faults({})  # the fault is gone; the client is the same
            await sign_until_used(client, answered, [3], nodes, "after the restart")

    asyncio.run(scenario())


def test_hung_node_is_not_waited_for_and_rejoins_after_sigcont(honest):
    """Node 4 is SIGSTOPped after the client connected to it (a hung site whose
    kernel still holds the connection open).

    Pass: every call completes in under 1.5 s with a 0.3 s hedge delay; no leaked
    tasks or descriptors; after SIGCONT the same client uses node 4 again; once the
    client is closed, the process has no more descriptors than before it was made."""
    nodes = honest

    async def scenario() -> None:
        fds_before = open_fds()
        async with ClusterClient(nodes.cluster, deadline=DEADLINE, hedge_after=0.3) as client:
            answered = track_answers(client)
            await client.info()
            check(nodes, b"warm up", await client.sign(b"warm up"))
            nodes.pause(4)
            try:
                latencies = await _rounds_without_leaks(client, nodes, "hung node")
                assert max(latencies) < 1.5, f"waited for the hung node: {max(latencies):.2f} s"
                stopped_answers = answered[4]
            finally:
                nodes.resume(4)
            assert stopped_answers == answered[4]  # nothing came from it while stopped
            await sign_until_used(client, answered, [4], nodes, "after SIGCONT")
        await asyncio.sleep(0.1)
        assert open_fds() <= fds_before, "the closed client left descriptors open"

    asyncio.run(scenario())


# -- 3. lying nodes -----------------------------------------------------------------------

LIES = ["random-share", "other-message", "replay-old", "wrong-index", "bad-proof"]
#: One liar per mode, each at its own index (``wrong-index`` at 4 claims to be node 5).
SINGLE = {"random-share": 1, "other-message": 2, "replay-old": 3, "wrong-index": 4, "bad-proof": 5}
#: Two liars with different modes (n - k = 2); every mode appears twice. In the first,
#: node 4 claims to be node 5 and the only honest nodes are 1, 3, 5: signing needs node
#: 5's share, so the false claim must not push the honest node 5 out.
PAIRS = [
    {4: "wrong-index", 2: "random-share"},
    {1: "other-message", 3: "replay-old"},
    {2: "bad-proof", 5: "random-share"},
    {3: "wrong-index", 5: "other-message"},
    {1: "replay-old", 4: "bad-proof"},
]


def _must_be_blamed(liars: dict[int, str], proofs: str, mode: str) -> set[int]:
    """Liars whose lie the client must see. In exact mode every node is asked in turn
    and each answer is combined, so every liar is, except that a ``bad-proof`` node
    sends honest shares and only lies when asked for a proof, which the optimistic mode
    asks for only after another share failed (it may be blamed then: it did lie). In
    all-n mode a liar whose answer comes after the first k is never looked at."""
    if mode == "all":
        return set()
    return {i for i, lie in liars.items() if proofs == "always" or lie != "bad-proof"}


async def _sign_with_liars(
    nodes: FaultCluster, liars: dict[int, str], proofs: str, mode: str
) -> tuple[ClusterClient, collections.Counter[int]]:
    async with ClusterClient(
        nodes.cluster,
        proofs=proofs,
        mode=mode,  # type: ignore[arg-type]
        deadline=DEADLINE,
    ) as client:
        answered = track_answers(client)
        sequential = messages(f"liars {sorted(liars.items())} {proofs} {mode}", 8)
        for message in sequential:
            check(nodes, message, await client.sign(message))
        burst = messages(f"liars burst {proofs} {mode}", 24)
        for message, sig in zip(
            burst, await asyncio.gather(*(client.sign(m) for m in burst)), strict=True
        ):
            check(nodes, message, sig)
    return client, answered


def _check_blame(client: ClusterClient, liars: dict[int, str], proofs: str, mode: str) -> None:
    blamed = set(client.stats.blamed)
    assert blamed <= set(liars), f"honest nodes blamed: {sorted(blamed - set(liars))}"
    required = _must_be_blamed(liars, proofs, mode)
    assert required <= blamed, f"liars not blamed: {sorted(required - blamed)}"


@pytest.mark.parametrize(
    ("lie", "proofs"), [(lie, proofs) for lie in LIES for proofs in ("on-failure", "always")]
)
def test_one_liar_is_blamed_exactly(honest, lie, proofs):
    """One node lies (each fault mode; optimistic and always-proofs clients; exact-k
    and all-n modes).

    Pass: every signature verifies for its own message; ClientStats.blamed is exactly
    the liar (for ``bad-proof`` in the optimistic mode, nobody: its shares are honest
    and they were used; in all-n mode the liar or nobody, if its answers always came
    after the first k); no honest node is ever blamed."""
    nodes = honest
    liar = SINGLE[lie]
    nodes.set_faults({liar: lie})
    for mode in ("exact", "all"):
        client, answered = asyncio.run(_sign_with_liars(nodes, {liar: lie}, proofs, mode))
        if lie == "bad-proof" and proofs == "on-failure":
            assert not client.stats.blamed
            assert answered[liar] > 0  # it was asked, its honest shares were fine
        else:
            _check_blame(client, {liar: lie}, proofs, mode)
        if lie == "wrong-index":
            assert answered[liar] == 0  # its answers were refused, not combined
            assert answered[liar % 5 + 1] > 0  # the node it claimed to be is still used


@pytest.mark.parametrize(
    ("liars", "proofs"),
    [(pair, proofs) for pair in PAIRS for proofs in ("on-failure", "always")],
    ids=[
        f"{'+'.join(f'{i}:{m}' for i, m in sorted(p.items()))}-{proofs}"
        for p in PAIRS
        for proofs in ("on-failure", "always")
    ],
)
def test_two_liars_with_mixed_lies_are_blamed_exactly(honest, liars, proofs):
    """n - k = 2 liars with different lies.

    Pass: every signature verifies; blamed is exactly the two liars in exact-k mode
    (a ``bad-proof`` node in optimistic mode may or may not be asked for a proof, so
    it may or may not be blamed), a subset of them in all-n mode; no honest node is
    ever blamed."""
    nodes = honest
    nodes.set_faults(liars)
    for mode in ("exact", "all"):
        client, answered = asyncio.run(_sign_with_liars(nodes, liars, proofs, mode))
        _check_blame(client, liars, proofs, mode)
        for index, lie in liars.items():
            if lie == "wrong-index":
                assert answered[index] == 0


@pytest.mark.parametrize("proofs", ["on-failure", "always"])
@pytest.mark.parametrize("silent", ["sigstop", "slow:3000"])
def test_liar_and_silent_node_together(honest, proofs, silent):
    """One liar (random-share, node 2) and one node that does not answer (node 4,
    SIGSTOPped after the client connected, or 3 s late): two faults, n - k = 2.

    Pass: every call returns a valid signature in under 1.5 s, half the slow node's
    delay (the proof round that node 2's bad shares cause must not wait for the silent
    node: 0.3 s hedge delay), and only node 2 is blamed."""
    nodes = honest
    faults = {2: "random-share"}
    if silent != "sigstop":
        faults[4] = silent
    nodes.set_faults(faults)

    async def scenario() -> None:
        async with ClusterClient(
            nodes.cluster,
            proofs=proofs,  # type: ignore[arg-type]
            deadline=DEADLINE,
            hedge_after=0.3,
        ) as client:
            await client.info()
            if silent == "sigstop":
                nodes.pause(4)
            try:
                for message in messages(f"liar and silent {proofs}", 10):
                    started = time.monotonic()
                    check(nodes, message, await client.sign(message))
                    assert time.monotonic() - started < 1.5, "waited for the silent node"
            finally:
                nodes.resume(4)
            assert set(client.stats.blamed) == {2}, dict(client.stats.blamed)

    asyncio.run(scenario())


@pytest.mark.parametrize("proofs", ["on-failure", "always"])
def test_three_liars_give_a_typed_error_never_a_signature(honest, proofs):
    """Three liars, only two honest nodes: beyond what the scheme tolerates.

    Pass: every call raises SigningError within the deadline naming the three liars;
    nothing is returned; the honest nodes 4 and 5 are not blamed."""
    nodes = honest
    liars = {1: "random-share", 2: "other-message", 3: "replay-old"}
    nodes.set_faults(liars)

    async def scenario() -> ClusterClient:
        async with ClusterClient(
            nodes.cluster,
            proofs=proofs,  # type: ignore[arg-type]
            deadline=4.0,
        ) as client:
            for message in messages("three liars", 4):
                started = time.monotonic()
                with pytest.raises(SigningError) as info:
                    await client.sign(message)
                assert time.monotonic() - started < 5.0
                assert set(liars) <= set(info.value.nodes), info.value.nodes
        return client

    client = asyncio.run(scenario())
    assert set(client.stats.blamed) <= set(liars)
    assert not {4, 5} & set(client.stats.blamed)


# -- 5. load while nodes crash and come back ----------------------------------------------

LOAD_REQUESTS = 3000
LOAD_WORKERS = 128  # concurrent callers, each signing one message after another
LOAD_PAUSE = (0.5, 2.0)  # a caller's pause between its calls, seconds: ~100 calls/s


class _Chaos(threading.Thread):
    """Kills and restarts nodes 1-4 every second or two, never more than two down at once
    (node 5 stays up all along, so its memory use can be compared before and after)."""

    def __init__(self, nodes: FaultCluster, inflight: Callable[[int], int]) -> None:
        super().__init__(name="chaos", daemon=True)
        self.nodes = nodes
        self.inflight = inflight
        #: Items the client had in flight on each node it killed, at the moment of the kill.
        self.inflight_at_kill: list[int] = []
        self.stop = threading.Event()
        self.kills = 0
        self.restarts = 0
        self.max_down = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        pairs = [(1, 2), (3, 4), (2, 3), (4, 1), (1, 3), (2, 4)]
        rng = random.Random(6)
        try:
            for cycle in range(1000):
                a, b = pairs[cycle % len(pairs)]
                for action, index in (
                    (self._kill, a),
                    (self._kill, b),
                    (self._start, a),
                    (self._start, b),
                ):
                    if self.stop.wait(rng.uniform(0.8, 1.6)):
                        return
                    action(index)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            for index in self.nodes.indices:
                if not self.nodes.running(index):
                    self._start(index)

    def _kill(self, index: int) -> None:
        # Catch it computing for the client if that happens within a second.
        end = time.monotonic() + 1.0
        while not self.inflight(index) and time.monotonic() < end:
            time.sleep(0.002)
        self.inflight_at_kill.append(self.inflight(index))
        self.nodes.kill(index)
        self.kills += 1
        down = sum(not self.nodes.running(i) for i in self.nodes.indices)
        self.max_down = max(self.max_down, down)

    def _start(self, index: int) -> None:
        self.nodes.start([index], timeout=60)
        self.restarts += 1


@pytest.mark.slow
def test_load_while_nodes_crash_and_restart(honest, capsys):
    """3000 distinct messages from 128 concurrent callers (about 100 calls a second for
    about 30 s), while a thread SIGKILLs and restarts nodes every second or two, also
    while they compute (at most n - k = 2 down at once).

    Pass: every returned signature verifies for its own message; every failure is a
    typed IttcError and there are at most 0.5 % of them; no batch or asyncio task is
    left; the client's resident memory grows by less than 1.5x + 64 MB over the run and
    the node that ran all along by less than 2x + 64 MB."""
    nodes = honest
    outcomes: collections.Counter[str] = collections.Counter()
    figures: dict[str, object] = {}
    chaos: _Chaos | None = None

    async def scenario() -> None:
        nonlocal chaos
        async with ClusterClient(nodes.cluster, deadline=10.0) as client:
            chaos = _Chaos(nodes, lambda index: client.pool.state(index).inflight)
            # Warm up: channels, TLS, first batches, caches.
            warm = messages("warm", 200)
            for message, sig in zip(
                warm, await asyncio.gather(*(client.sign(m) for m in warm)), strict=True
            ):
                check(nodes, message, sig)
            tasks_before = len(asyncio.all_tasks())
            fds_before = open_fds()
            rss_client_before = rss_bytes()
            node5_pid = nodes.pid(5)
            rss_node5_before = rss_bytes(node5_pid)
            wrong: list[bytes] = []
            rng = random.Random(5)

            async def caller(mine: list[bytes]) -> None:
                for message in mine:
                    await asyncio.sleep(rng.uniform(*LOAD_PAUSE))
                    try:
                        sig = await client.sign(message)
                    except IttcError as exc:  # any other exception fails the test
                        outcomes[type(exc).__name__] += 1
                        continue
                    try:
                        check(nodes, message, sig)
                    except InvalidSignature:
                        wrong.append(message)
                    outcomes["ok"] += 1

            load = messages("load", LOAD_REQUESTS)
            started = time.monotonic()
            chaos.start()
            try:
                await asyncio.gather(*(caller(load[w::LOAD_WORKERS]) for w in range(LOAD_WORKERS)))
            finally:
                chaos.stop.set()
                await asyncio.get_running_loop().run_in_executor(None, chaos.join, 120)
            figures["seconds"] = round(time.monotonic() - started, 1)
            await asyncio.sleep(0.1)
            assert not wrong, f"{len(wrong)} signatures do not verify for their message"
            assert not client.busy
            assert len(asyncio.all_tasks()) == tasks_before
            figures.update(
                fds=(fds_before, open_fds()),
                client_rss_mb=(rss_client_before >> 20, rss_bytes() >> 20),
                node5_rss_mb=(rss_node5_before >> 20, rss_bytes(node5_pid) >> 20),
                nodes_rss_mb={
                    i: rss_bytes(nodes.pid(i)) >> 20 for i in nodes.indices if nodes.pid(i)
                },
                stats=dict(
                    signatures=client.stats.signatures,
                    batches=client.stats.batches,
                    rpcs=client.stats.rpcs,
                    hedges=client.stats.hedges,
                    node_failures=dict(client.stats.node_failures),
                    blamed=dict(client.stats.blamed),
                ),
            )
            assert open_fds() <= fds_before + 10
            assert rss_bytes() < 1.5 * rss_client_before + (64 << 20)
            assert nodes.pid(5) == node5_pid
            assert rss_bytes(node5_pid) < 2 * rss_node5_before + (64 << 20)
            assert not client.stats.blamed  # crashes are not lies

    asyncio.run(scenario())
    assert chaos is not None
    figures.update(
        outcomes=dict(outcomes),
        kills=chaos.kills,
        restarts=chaos.restarts,
        max_down=chaos.max_down,
        inflight_at_kill=chaos.inflight_at_kill,
    )
    with capsys.disabled():
        print(f"\nload under crashes: {figures}")
    assert chaos.error is None, chaos.error
    assert chaos.kills >= 6 and chaos.max_down == 2  # the faults really happened
    # ... and most hit a node while it computed for the client.
    assert sum(map(bool, chaos.inflight_at_kill)) >= chaos.kills // 2
    assert sum(outcomes.values()) == LOAD_REQUESTS
    failures = LOAD_REQUESTS - outcomes["ok"]
    assert failures <= LOAD_REQUESTS * 0.005, f"too many failures: {dict(outcomes)}"


# -- 3b. liars on a split key (no sound proofs) ---------------------------------------


@pytest.fixture(scope="module")
def split_nodes(tmp_path_factory):
    """Five nodes sharing an ordinary (split) RSA key: no sound proofs, so bad shares
    are found by combining k-subsets only."""
    root = make_cluster(tmp_path_factory.mktemp("split"), split_existing_key=True)
    with FaultCluster(root) as local:
        local.start(timeout=120)
        assert not local.params.proofs_sound
        yield local


@pytest.mark.parametrize(
    "faults",
    [
        {2: "random-share", 4: "other-message"},
        {1: "replay-old", 3: "wrong-index"},
        {5: "random-share", 3: "slow:3000"},
    ],
    ids=["random-share+other-message", "replay-old+wrong-index", "random-share+slow"],
)
def test_liars_on_a_split_key_found_by_subsets(split_nodes, faults):
    """A split key (``ittc split``): no proof can show who lied; the client tries other
    k-subsets of the shares it has.

    Pass: with two faulty nodes every signature verifies, each call takes under 1.5 s
    (a slow node is not waited for, in the first round nor in the subset round), the
    liars are blamed in exact-k mode and no honest (or merely slow) node ever is."""
    nodes = split_nodes
    nodes.set_faults(faults)
    liars = {i: f for i, f in faults.items() if not f.startswith("slow")}

    async def scenario(mode: str) -> ClusterClient:
        async with ClusterClient(
            nodes.cluster,
            mode=mode,  # type: ignore[arg-type]
            deadline=DEADLINE,
            hedge_after=0.3,
        ) as client:
            for message in messages(f"split key {mode}", 10):
                started = time.monotonic()
                check(nodes, message, await client.sign(message))
                assert time.monotonic() - started < 1.5
            burst = messages(f"split key burst {mode}", 24)
            for message, sig in zip(
                burst, await asyncio.gather(*(client.sign(m) for m in burst)), strict=True
            ):
                check(nodes, message, sig)
        return client

    for mode in ("exact", "all"):
        client = asyncio.run(scenario(mode))
        _check_blame(client, liars, "on-failure", mode)


# -- 3c. a liar that dodges blame when asked to prove -------------------------------------


@pytest.mark.parametrize("key", ["honest", "split_nodes"])
@pytest.mark.parametrize("how", ["refuse", "stall", "honest"])
def test_a_liar_that_dodges_the_proof_is_named_without_waiting(request, key, how):
    """Node 3 sends random shares, and when asked to prove one it refuses, stalls until
    the deadline, or answers with its honest, proven share (``dodge:<how>``). The
    client has the README's ``deadline=5.0`` and the default 5 s node timeout.

    Pass: every signature verifies and takes under 1.5 s (the stalling liar is left out
    after a grace period, not waited for until the node timeout); node 3 is blamed and
    no other node ever is."""
    nodes = request.getfixturevalue(key)
    nodes.set_faults({3: f"dodge:{how}"})

    async def scenario() -> ClusterClient:
        async with ClusterClient(nodes.cluster, deadline=5.0) as client:
            for message in messages(f"dodge {how}", 12):
                started = time.monotonic()
                check(nodes, message, await client.sign(message))
                assert time.monotonic() - started < 1.5, "waited for the dodging liar"
        return client

    client = asyncio.run(scenario())
    assert set(client.stats.blamed) == {3}, dict(client.stats.blamed)
