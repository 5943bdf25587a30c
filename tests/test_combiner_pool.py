"""The node pool's policy, with a hand-driven clock: no sockets, no processes."""

from __future__ import annotations

import pytest

from ittc.combiner.pool import (
    FIRST_BACKOFF,
    FIRST_QUARANTINE,
    MAX_BACKOFF,
    MAX_QUARANTINE,
    SUSPECT_MEMORY,
    NodeEvent,
    NodePool,
)
from ittc.errors import NodeMisbehaved, NodeUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, n: int = 5, **kwargs) -> NodePool:
    return NodePool(range(1, n + 1), node_timeout=5.0, clock=clock, **kwargs)


def test_work_rotates_over_all_nodes(clock):
    pool = make(clock)
    firsts = []
    for _ in range(5):
        pool.rotate()
        firsts.append(tuple(pool.ranked()[:3]))
    # Every node leads once in five batches, and every k-window is different.
    assert {f[0] for f in firsts} == {1, 2, 3, 4, 5}
    assert len(set(firsts)) == 5


def test_busy_nodes_come_after_idle_ones(clock):
    pool = make(clock)
    pool.asked(1, 10)
    pool.asked(2, 3)
    order = pool.ranked()
    assert order[-2:] == [2, 1]
    pool.returned(1, 10)
    pool.returned(2, 3)
    assert pool.state(1).inflight == pool.state(2).inflight == 0


def test_a_failed_node_backs_off_one_step_per_outage_and_comes_back(clock):
    pool = make(clock)
    failure = NodeUnavailable(3, "UNAVAILABLE: connection refused", "UNAVAILABLE")
    assert pool.failed(failure) == FIRST_BACKOFF
    # Many RPCs in flight fail together: still one step.
    assert pool.failed(failure) == FIRST_BACKOFF
    assert pool.ranked()[-1] == 3 and not pool.usable(3)
    reasons = pool.reasons()
    assert isinstance(reasons[3], NodeUnavailable) and reasons[3].code == "UNAVAILABLE"
    clock.now += FIRST_BACKOFF + 0.01
    assert pool.usable(3) and 3 not in pool.reasons()
    # The next outage doubles, up to the maximum.
    delays = []
    for _ in range(8):
        delays.append(pool.failed(failure))
        clock.now += delays[-1] + 0.01
    assert delays[0] == 2 * FIRST_BACKOFF
    assert max(delays) == MAX_BACKOFF


def test_only_good_shares_reset_the_back_off(clock):
    """An answer alone does not reset it (a liar's answers fail to combine); clearing does."""
    pool = make(clock)
    failure = NodeUnavailable(2, "no answer")
    pool.failed(failure)
    clock.now += 1.0
    pool.answered(2, 0.01, 1)
    assert pool.state(2).backoff == FIRST_BACKOFF
    assert pool.failed(failure) == 2 * FIRST_BACKOFF
    clock.now += 1.0
    pool.cleared(2)
    assert pool.state(2).backoff == 0.0
    assert pool.failed(failure) == FIRST_BACKOFF


def test_a_liar_is_quarantined_longer_each_time(clock):
    pool = make(clock)
    quarantines = []
    for _ in range(12):
        quarantines.append(pool.lied(4, "share disproved by its own proof"))
        assert pool.ranked()[-1] == 4
        assert isinstance(pool.reasons()[4], NodeMisbehaved)
        clock.now += quarantines[-1] + 0.01
        assert pool.usable(4)
    assert quarantines[:3] == [FIRST_QUARANTINE, 2 * FIRST_QUARANTINE, 4 * FIRST_QUARANTINE]
    assert quarantines[-1] == MAX_QUARANTINE


def test_failing_to_prove_twice_quarantines(clock):
    pool = make(clock)
    assert pool.suspected(5, "did not prove its share in time") == 0.0
    assert pool.usable(5)
    clock.now += SUSPECT_MEMORY + 1  # long ago: a first time again
    assert pool.suspected(5, "did not prove its share in time") == 0.0
    clock.now += 1.0
    assert pool.suspected(5, "did not prove its share in time") == FIRST_QUARANTINE
    assert not pool.usable(5)


def test_hedge_delay_follows_the_median_node_not_the_slow_one(clock):
    pool = make(clock)
    assert pool.hedge_delay() == pytest.approx(1.0)  # 4 x the default 0.25 s
    for index in (1, 2, 3, 4):
        pool.answered(index, 0.02, 1)
    pool.answered(5, 3.0, 1)
    assert pool.hedge_delay() == pytest.approx(0.08)
    # The slow node is asked after the others while its slowness is recent...
    pool.rotate()
    assert pool.ranked()[-1] == 5
    # ...and measured afresh once that is old.
    clock.now += 10.0
    assert pool.hedge_delay() == pytest.approx(1.0)
    assert make(clock, hedge_after=0.3).hedge_delay() == 0.3


def test_listeners_see_every_event(clock):
    pool = make(clock)
    seen: list[NodeEvent] = []
    pool.add_listener(seen.append)
    pool.asked(1, 2)
    pool.answered(1, 0.01, 2)
    pool.cleared(1)
    pool.failed(NodeUnavailable(2, "down"))
    pool.lied(3, "bad share")
    pool.suspected(4, "no proof")
    pool.slow(5)
    assert [(e.kind, e.node) for e in seen] == [
        ("asked", 1),
        ("answered", 1),
        ("cleared", 1),
        ("failed", 2),
        ("lied", 3),
        ("suspected", 4),
        ("slow", 5),
    ]
    assert seen[0].items == 2 and seen[3].detail == "down"
