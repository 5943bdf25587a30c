"""One signing round against in-memory nodes that lie, stall, refuse or die.

The nodes here are real key shares behind a fake transport (no sockets, no processes),
so every strategy of a faulty node is exact and the tests are fast; the same behaviours
against real node processes over mTLS are in tests/test_faults.py.

What must hold, from docs/security.md: with at most ``n - k`` faulty nodes every item is
signed within the deadline, without waiting a node timeout for a node that will not
prove; the signature verifies; a node that sent a wrong share is named whenever the
evidence allows (a second, different share; a failed proof; every other share proven
correct; a subset search for split keys) and an honest node never is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import secrets
import time
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ittc.combiner.batcher import Pending
from ittc.combiner.combining import Combiner
from ittc.combiner.context import ClientStats, RoundContext
from ittc.combiner.options import Settings
from ittc.combiner.pool import NodePool
from ittc.combiner.round import SigningRound
from ittc.errors import NodeError, NodeRefused, NodeUnavailable, SigningError
from ittc.scheme import dealer
from ittc.scheme.encoding import SignItem
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.proofs import SignatureShare

#: The README's example deadline; a node timeout as long as the default.
DEADLINE = 5.0
NODE_TIMEOUT = 5.0
#: A signature that waits a node timeout (5 s) for a silent liar fails this bound.
FAST = 1.5

#: How a liar answers a plain request (a wrong share) and then a request for proof.
STRATEGIES = ("lie-then-refuse", "lie-then-stall", "lie-then-honest")


@dataclasses.dataclass
class FakeLink:
    """A node behind a fake transport: real shares, scripted behaviour."""

    share: KeyShare
    behaviour: str = "honest"
    delay: float = 0.002

    @property
    def index(self) -> int:
        return self.share.index

    def connecting(self) -> bool:
        return False

    async def sign(
        self, items: Sequence[SignItem], *, with_proofs: bool, timeout: float
    ) -> list[SignatureShare]:
        b = self.behaviour
        if b == "down":
            raise NodeUnavailable(self.index, "UNAVAILABLE: connection refused", "UNAVAILABLE")
        stall = b == "silent" or (b == "lie-then-stall" and with_proofs)
        if stall or self.delay > timeout:
            await asyncio.sleep(timeout)
            raise NodeUnavailable(self.index, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
        await asyncio.sleep(self.delay)
        if b == "lie-then-refuse" and with_proofs:
            raise NodeRefused(self.index, "FAILED_PRECONDITION: no", "FAILED_PRECONDITION")
        params = self.share.params
        out = []
        for item in items:
            x = item.representative(params.bits)
            honest = self.share.signature_share(x, proof=with_proofs)
            lie = b == "random" or (b.startswith("lie-then-") and not with_proofs)
            if lie:
                value = _random_unit(params.modulus)
                honest = SignatureShare(self.index, value, honest.proof)
            out.append(honest)
        return out


def _random_unit(modulus: int) -> int:
    while True:
        value = secrets.randbelow(modulus - 2) + 2
        if math.gcd(value, modulus) == 1:
            return value


class Cluster:
    """A round context over fake links, and ``sign`` as the client does it."""

    def __init__(self, dealt: dealer.DealtKey, behaviours: dict[int, str], **options) -> None:
        self.params = dealt.params
        self.links = {s.index: FakeLink(s, behaviours.get(s.index, "honest")) for s in dealt.shares}
        settings = Settings.from_options(
            {"deadline": DEADLINE, "node_timeout": NODE_TIMEOUT, **options}
        )
        self.stats = ClientStats()
        self.pool = NodePool(
            self.links, node_timeout=NODE_TIMEOUT, hedge_after=settings.hedge_after
        )
        self.ctx = RoundContext(
            self.params, settings, self.pool, self.links, Combiner(self.params), self.stats
        )

    async def sign(self, messages: Sequence[bytes]) -> list[bytes | Exception]:
        loop = asyncio.get_running_loop()
        batch = []
        for m in messages:
            item = SignItem.make(data=m)
            batch.append(Pending(item, item.representative(self.params.bits), loop.create_future()))
        return await SigningRound(self.ctx, batch, time.monotonic() + DEADLINE).run()

    def verify(self, message: bytes, signature: object) -> None:
        assert isinstance(signature, bytes), signature
        self.params.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(scope="module")
def safe_prime_key() -> dealer.DealtKey:
    return dealer.generate(512, n=5, k=3, insecure_allow_small_modulus_for_tests=True)


@pytest.fixture(scope="module")
def split_key() -> dealer.DealtKey:
    key = rsa.generate_private_key(65537, 1024)
    numbers = key.private_numbers()
    return dealer.deal_integer(numbers.public_numbers.n, 65537, numbers.d, n=5, k=3)


def run(cluster: Cluster, rounds: int = 10) -> list[float]:
    """Sign ``rounds`` messages one after another; every signature must verify."""

    async def scenario() -> list[float]:
        times = []
        for i in range(rounds):
            message = f"message {i}".encode()
            started = time.monotonic()
            (signature,) = await cluster.sign([message])
            times.append(time.monotonic() - started)
            cluster.verify(message, signature)
        return times

    return asyncio.run(scenario())


def test_honest_nodes_are_asked_exactly_k_at_a_time(safe_prime_key):
    cluster = Cluster(safe_prime_key, {})
    run(cluster, 5)
    assert cluster.stats.rpcs == 5 * 3
    assert not cluster.stats.blamed and not cluster.stats.proof_rounds


@pytest.mark.parametrize("key", ["safe_prime_key", "split_key"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_liar_that_dodges_the_proof_is_named_and_not_waited_for(request, key, strategy):
    """One liar: a wrong share, then a refusal, a stall or an honest answer when asked to
    prove it. Pass: every signature verifies, none waits anything like the node timeout,
    and exactly the liar is blamed."""
    for liar in (1, 3, 5):
        cluster = Cluster(request.getfixturevalue(key), {liar: strategy})
        times = run(cluster, 10)
        assert max(times) < FAST, f"waited for the liar: {max(times):.2f} s"
        assert set(cluster.stats.blamed) == {liar}, dict(cluster.stats.blamed)


def test_after_a_liar_is_named_it_is_left_out(safe_prime_key):
    cluster = Cluster(safe_prime_key, {2: "lie-then-stall"})
    run(cluster, 20)
    assert cluster.stats.blamed[2] == 1  # named once, then quarantined and not asked
    assert cluster.stats.proof_rounds == 1


@pytest.mark.parametrize("key", ["safe_prime_key", "split_key"])
def test_two_liars_with_different_strategies(request, key):
    """n - k = 2 liars: every signature verifies, fast; no honest node is ever blamed."""
    cluster = Cluster(request.getfixturevalue(key), {2: "lie-then-stall", 4: "lie-then-refuse"})
    times = run(cluster, 15)
    assert max(times) < 2 * FAST
    assert set(cluster.stats.blamed) <= {2, 4}
    assert set(cluster.stats.suspected) <= {2, 4}


def test_a_silent_node_and_a_liar(safe_prime_key):
    cluster = Cluster(safe_prime_key, {1: "silent", 3: "lie-then-refuse"}, hedge_after=0.1)
    times = run(cluster, 10)
    assert max(times) < FAST
    assert set(cluster.stats.blamed) == {3}


def test_more_faults_than_n_minus_k_is_a_typed_error_naming_them(safe_prime_key):
    cluster = Cluster(safe_prime_key, {1: "down", 2: "down", 4: "random"})

    async def scenario() -> object:
        (result,) = await cluster.sign([b"cannot be signed"])
        return result

    started = time.monotonic()
    result = asyncio.run(scenario())
    assert time.monotonic() - started < DEADLINE + 0.5
    assert isinstance(result, SigningError)
    assert {1, 2, 4} <= set(result.nodes)
    assert all(isinstance(e, NodeError) for e in result.nodes.values())
    assert result.nodes[1].code == "UNAVAILABLE"
    assert set(cluster.stats.blamed) <= {4}


def test_a_node_that_answered_is_not_reported_as_not_asked(safe_prime_key):
    """Three nodes down, two honest ones answer: the error says the two answered (not
    'not asked'), and why each of the others failed."""
    cluster = Cluster(safe_prime_key, {1: "down", 2: "down", 4: "down"})
    (result,) = asyncio.run(cluster.sign([b"cannot be signed"]))
    assert isinstance(result, SigningError)
    assert {i: result.nodes[i].reason for i in (3, 5)} == {
        3: "answered, but too few other nodes did",
        5: "answered, but too few other nodes did",
    }
    assert all(result.nodes[i].reason.startswith("UNAVAILABLE") for i in (1, 2, 4))


def test_a_batch_with_one_liar_signs_every_item(safe_prime_key):
    cluster = Cluster(safe_prime_key, {3: "lie-then-honest"})
    messages = [b"batch %d" % i for i in range(12)]
    for _ in range(3):
        results = asyncio.run(cluster.sign(messages))
        for message, signature in zip(messages, results, strict=True):
            cluster.verify(message, signature)
    assert set(cluster.stats.blamed) <= {3}
