"""A reshare across five "hosts" (network namespaces) while links fail for real.

Node ``i`` runs in namespace ``i`` behind a switch; the coordinator and the combiner run
here. The switch lets no node reach another (port isolation): values between sites travel
through the coordinator only. A member's link is cut while the members check and store
their shares: the run fails, nothing commits, and the cluster signs in its epoch with the
other four; once the link is back, the same command commits. Then two links are cut
while the commit is delivered: the three sites reached commit, and ``--resume`` after the
links return finishes the other two. The cluster signs in exactly one epoch after each.
"""

from __future__ import annotations

import asyncio

import pytest

from ittc.config import ClusterFile
from ittc.deploy.reshare import Coordinator, ReshareFailed
from tests.cluster import make_cluster
from tests.netns import lab_for_module, unavailable_reason
from tests.reshare_cluster import ReshareCluster, approvals, enable_resharing, refresh_plan
from tests.test_reshare_faults import one_epoch

pytestmark = [pytest.mark.network, pytest.mark.netns]

_REASON = unavailable_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

#: Seconds the coordinator waits for one site's answer (a cut link never answers).
TIMEOUT = 6.0


@pytest.fixture(scope="module")
def lab():
    yield from lab_for_module(5)


def test_links_cut_during_a_reshare(lab, tmp_path) -> None:
    root = make_cluster(
        tmp_path, bits=512, addresses=[f"{lab.address(i)}:{7300 + i}" for i in range(1, 6)]
    )
    enable_resharing(root)
    wrapper = lab.python_wrapper(tmp_path / "python-in-netns")
    with ReshareCluster(root, python=wrapper) as nodes:
        nodes.start(timeout=120)
        # Sites talk only to the coordinator: no node can open a connection to another
        # (bridge port isolation), and every run below goes through all the same.
        assert lab.reaches(1, f"{lab.address(2)}:7302")
        for i in range(1, 6):
            lab.isolate(i)
        assert not lab.reaches(1, f"{lab.address(2)}:7302")
        assert not lab.reaches(3, f"{lab.address(5)}:7305")

        def run(plan, *, cut_at: str | None = None, cut: tuple[int, ...] = ()):
            def say(line: str) -> None:
                if cut_at is not None and cut_at in line:
                    for i in cut:
                        lab.cut(i)

            cluster = ClusterFile.load(root)
            coordinator = Coordinator(
                cluster, plan, approvals(root, plan, [1, 2, 3]), timeout=TIMEOUT, say=say
            )
            return coordinator, asyncio.run(coordinator.run())

        # Member 4's link goes down as the members are asked to store their shares.
        plan = refresh_plan(root)
        with pytest.raises(ReshareFailed, match="delta"):
            run(plan, cut_at="contributions check out", cut=(4,))
        assert ClusterFile.load(root).epoch == 0
        assert all(nodes.status(i).epoch == 0 for i in (1, 2, 3, 5))
        lab.heal(4)
        assert one_epoch(root, nodes) == 0
        run(plan)
        assert one_epoch(root, nodes) == 1

        # Sites 4 and 5 are cut off while the commit is delivered.
        plan = refresh_plan(root)
        coordinator, certificate = run(plan, cut_at="is decided", cut=(4, 5))
        outcome = coordinator.folder.outcome()
        assert outcome is not None and sorted(outcome["not_delivered"]) == ["delta", "echo"]
        assert [nodes.status(i).epoch for i in (1, 2, 3)] == [2, 2, 2]
        lab.heal(4)
        lab.heal(5)
        cluster = ClusterFile.load(root)
        resumed = Coordinator(cluster, plan, approvals(root, plan, [1, 2, 3]), timeout=TIMEOUT)
        assert asyncio.run(resumed.resume()) == certificate
        assert one_epoch(root, nodes) == 2
