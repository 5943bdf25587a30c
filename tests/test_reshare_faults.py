"""Resharing against liars in every role and crashes at every phase, with real processes.

Liars (test faults of the node, ``ittc_node.faults``): a holder whose mask, masked value,
sub-share or sealed value is wrong, and a new member that complains falsely or signs a
wrong acceptance share. Each is caught before anything commits and named, and nobody
else is; a cheating holder is left out of the next attempt, which succeeds; a cheating
member ends the run (it is in the plan), and the cluster stays in its epoch.

Crashes: the coordinator SIGKILLed after each phase, then ``--resume``; a node SIGKILLed
after each of its steps. After each, the cluster signs in exactly one epoch: every node
is in the same one, and a combiner signs in it.

One cluster per module (3-of-5, 512-bit generated key), restarted between cases.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.combiner import SyncClusterClient
from ittc.config import ClusterFile
from ittc.deploy.reshare import CRASH_VAR, ReshareFailed, RunFolder
from ittc.lifecycle import Plan
from ittc.scheme.params import PublicParams
from ittc.wire import codec
from ittc.wire.v1 import reshare_pb2 as rpb
from tests.cluster import fault_env, make_cluster, pkcs1_item, sign_request
from tests.reshare_cluster import (
    ReshareCluster,
    approvals,
    enable_resharing,
    refresh_plan,
    run_reshare,
    site_name,
)

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = make_cluster(tmp_path_factory.mktemp("faults"), bits=512)
    enable_resharing(root)
    with ReshareCluster(root) as nodes:
        nodes.start(timeout=120)
        yield root, nodes


def one_epoch(root: pathlib.Path, nodes: ReshareCluster) -> int:
    """Every site is in the same epoch, the cluster file names it, and a combiner signs
    in it, and no site signs in the epoch before. Returns the epoch."""
    epochs = {i: nodes.status(i).epoch for i in range(1, 6)}
    assert len(set(epochs.values())) == 1, epochs
    cluster = ClusterFile.load(root)
    assert set(epochs.values()) == {cluster.epoch}
    if cluster.epoch > 0:
        name = "params.json" if cluster.epoch == 1 else f"params-{cluster.epoch - 1}.json"
        before = PublicParams.from_json((cluster.root / name).read_bytes())
        for i in range(1, 6):
            with pytest.raises(grpc.RpcError) as refused:
                nodes.stub(i).Sign(sign_request(before, [pkcs1_item(b"old")]), timeout=10)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with SyncClusterClient(root, deadline=15.0) as client:
        signature = client.sign(b"one epoch")
        cluster.params.public_key().verify(
            signature, b"one epoch", padding.PKCS1v15(), hashes.SHA256()
        )
    return cluster.epoch


def restart(nodes: ReshareCluster, index: int, spec: str | None = None) -> None:
    nodes.kill(index)
    nodes.start([index], env=fault_env(spec) if spec else None, timeout=60)


# -- liars -----------------------------------------------------------------------------------

#: (the liar's site, its fault, whether the run still commits)
LIARS = [
    (2, "reshare:bad-mask", True),
    (2, "reshare:bad-contribution", True),
    (2, "reshare:bad-sub-share:4", True),
    (2, "reshare:unopenable:4", True),
    (4, "reshare:false-complaint", False),
    (4, "reshare:bad-acceptance", False),
]


@pytest.mark.parametrize("liar, fault, commits", LIARS, ids=[f for _, f, _ in LIARS])
def test_a_liar_is_named_and_nobody_else(cluster, liar: int, fault: str, commits: bool) -> None:
    root, nodes = cluster
    epoch = one_epoch(root, nodes)
    restart(nodes, liar, fault)
    try:
        plan = refresh_plan(root)
        given = approvals(root, plan, [1, 3, 5])
        if commits:
            certificate = run_reshare(root, plan, given)
            assert liar not in certificate.holders
        else:
            with pytest.raises(ReshareFailed) as failed:
                run_reshare(root, plan, given)
            assert failed.value.blamed == (site_name(liar),)
    finally:
        restart(nodes, liar)
    folder = RunFolder.of(ClusterFile.load(root), plan)
    first = folder.attempts()[0]
    assert first["holders"] == [1, 2, 3]
    assert first["outcome"]["convicted_sites"] == [site_name(liar)], first["outcome"]
    blamed = {s for a in folder.attempts() for s in a["outcome"].get("convicted_sites", [])}
    assert blamed == {site_name(liar)}
    assert one_epoch(root, nodes) == epoch + (1 if commits else 0)


# -- crashes ---------------------------------------------------------------------------------


def coordinator(
    root: pathlib.Path, work: pathlib.Path, *extra: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(fault_env("")) if crash else {}
    if crash:
        env[CRASH_VAR] = crash
    import os

    return subprocess.run(
        [sys.executable, "-m", "ittc", "reshare", "run", "--cluster", str(root),
         "--plan", str(work / "plan.json"), "--timeout", "20", *extra],
        env={**os.environ, **env},
        text=True,
        capture_output=True,
        timeout=240,
        check=False,
    )  # fmt: skip


def write_plan(root: pathlib.Path, work: pathlib.Path) -> list[str]:
    work.mkdir(exist_ok=True)
    plan = refresh_plan(root)
    (work / "plan.json").write_text(plan.to_json())
    names = []
    for approval in approvals(root, plan, [1, 2, 4]):
        path = work / f"{approval.site}.approval"
        path.write_text(json.dumps(approval.to_dict()))
        names.append(str(path))
    return ["--approvals", *names]


#: Where the coordinator dies (after round 1; after the contributions; after every member
#: stored and acknowledged; after the certificate is written; after the new cluster file;
#: after the first site committed) and whether ``--resume`` goes forward.
COORDINATOR_CRASHES = [
    ("prepared", False),
    ("dealt", False),
    ("acknowledged", False),
    ("certificate", True),
    ("published", True),
    ("delivered", True),
]


@pytest.mark.parametrize("point, forward", COORDINATOR_CRASHES)
def test_a_coordinator_killed_after_each_phase_resumes_or_rolls_back_with_one_command(
    cluster, tmp_path: pathlib.Path, point: str, forward: bool
) -> None:
    root, nodes = cluster
    epoch = one_epoch(root, nodes)
    given = write_plan(root, tmp_path)
    killed = coordinator(root, tmp_path, *given, crash=point)
    assert killed.returncode == -9, killed.stderr
    resumed = coordinator(root, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = epoch + 1 if forward else epoch
    assert one_epoch(root, nodes) == expected
    plan = Plan.from_json((tmp_path / "plan.json").read_bytes())
    folder = RunFolder.of(ClusterFile.load(root), plan)
    outcome = folder.outcome()
    assert outcome is not None and outcome["committed"] is forward
    if forward:
        # The commit deleted every pending share.
        assert all(nodes.status(i).pending_runs == [] for i in range(1, 6))
    elif "new_epoch_id" in folder.attempts()[-1]:
        # Rolled back: the epoch the members computed (and may keep a share of, until a
        # later commit deletes it) signs nowhere.
        params = ClusterFile.load(root).params
        never = sign_request(
            params,
            [pkcs1_item(b"never")],
            epoch=epoch + 1,
            epoch_id=folder.attempts()[-1]["new_epoch_id"],
        )
        for i in range(1, 6):
            with pytest.raises(grpc.RpcError) as refused:
                nodes.stub(i).Sign(never, timeout=10)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("step", ["prepare", "deal", "accept", "commit-midway", "commit"])
def test_a_node_killed_after_each_step(cluster, tmp_path: pathlib.Path, step: str) -> None:
    """Site 3 (a holder and a member) dies right after a step. Before the commit the run
    fails and the cluster stays in its epoch; a second run (after the site is back)
    commits. Killed in the middle of its commit (the new share in place, the epoch pointer
    not moved) it completes the commit as it starts again; killed after it, it comes back
    in the new epoch."""
    root, nodes = cluster
    epoch = one_epoch(root, nodes)
    given = write_plan(root, tmp_path)
    restart(nodes, 3, f"reshare:crash:{step}")
    run = coordinator(root, tmp_path, *given)
    assert nodes.returncode(3) == -9
    if step == "commit-midway":
        store = nodes.store(3)
        assert store.current() is None or store.current().epoch == epoch
        assert store.share_path(epoch + 1).exists() and not store.pending_runs()
    nodes.start([3], timeout=60)
    if step.startswith("commit"):
        assert run.returncode == 3, run.stderr  # committed; charlie did not answer
        assert nodes.status(3).epoch == epoch + 1
        if step == "commit-midway":
            assert "completed the commit of epoch" in nodes.log_tail(3, lines=200)
        assert coordinator(root, tmp_path, "--resume").returncode == 0
    else:
        assert run.returncode == 2, run.stderr
        assert "charlie" in run.stderr
        assert one_epoch(root, nodes) == epoch
        if step == "accept":
            assert nodes.status(3).pending_runs  # stored, kept until an epoch commits
        again = coordinator(root, tmp_path, *given)
        assert again.returncode == 0, again.stderr
        assert nodes.status(3).pending_runs == []
    assert one_epoch(root, nodes) == epoch + 1


# -- a coordinator that tampers ---------------------------------------------------------


class _Tampering:
    """Wraps a coordinator's link: alters what one RPC carries, once."""

    def __init__(self, link, tamper) -> None:
        self._link, self._tamper = link, tamper
        self.site = link.site

    async def call(self, method: str, request, timeout: float):
        request = self._tamper(method, self.site, request)
        return await self._link.call(method, request, timeout)


@pytest.mark.parametrize("what", ["altered mask", "swapped sub-shares", "altered commitments"])
def test_a_coordinator_that_tampers_is_caught_and_blames_nobody(cluster, what: str) -> None:
    """The coordinator relays: what it alters is refused by the site that receives it
    (signatures inside and outside), nobody is convicted, and a clean attempt commits."""
    from ittc.deploy.reshare import Coordinator

    root, nodes = cluster
    epoch = one_epoch(root, nodes)
    done: set[str] = set()

    def tamper(method: str, site, request):
        if what in done:
            return request
        if what == "altered mask" and method == "Deal" and request.masks:
            done.add(what)
            request.masks[0].ciphertext = bytes([request.masks[0].ciphertext[0] ^ 1]) + bytes(
                request.masks[0].ciphertext[1:]
            )
        elif what == "altered commitments" and method == "Deal":
            done.add(what)
            body = bytearray(request.commitments[0].body)
            body[-1] ^= 1
            request.commitments[0].body = bytes(body)
        elif what == "swapped sub-shares" and method == "Accept" and site.new_index == 4:
            done.add(what)
            request.sub_shares[0].recipient = "echo"
        return request

    class TamperingCoordinator(Coordinator):
        def _link(self, site):  # type: ignore[override]
            return _Tampering(super()._link(site), tamper)

    import asyncio

    plan = refresh_plan(root)
    coordinator = TamperingCoordinator(
        ClusterFile.load(root), plan, approvals(root, plan, [1, 2, 3]), timeout=20
    )
    certificate = asyncio.run(coordinator.run())
    assert what in done
    attempts = coordinator.folder.attempts()
    assert len(attempts) == 2
    assert (
        "altered in transit" in attempts[0]["outcome"]["failed"]
        or "not a sub-share" in (attempts[0]["outcome"]["failed"])
    ), attempts[0]["outcome"]
    assert all(not a["outcome"].get("convicted_sites") for a in attempts)
    assert certificate.epoch == epoch + 1
    assert one_epoch(root, nodes) == epoch + 1


def test_a_coordinator_that_replays_an_acknowledged_run_is_refused_everywhere(cluster) -> None:
    """Before delivering a certificate, a coordinator Prepares its run again (same plan,
    holders and attempt nonce, so the same run id). Let in, the holders would deal again
    and a member would store a second share over the one it acknowledged: the certificate
    would then commit at every other site and not there (with n' - k' + 1 such members,
    no epoch would be left that signs). Every site refuses a run id it has seen, and the
    certificate commits everywhere."""
    import asyncio

    from ittc.deploy.reshare import Coordinator
    from ittc.deploy.reshare.links import _SiteFailed

    root, nodes = cluster
    epoch = one_epoch(root, nodes)
    refused: dict[str, str] = {}

    class Replaying(Coordinator):
        async def _finish(self, certificate) -> None:  # type: ignore[no-untyped-def]
            again = rpb.PrepareRequest(
                plan=self.plan.canonical(),
                approvals=codec.approvals_to_wire(self.approvals),
                holders=list(certificate.holders),
                attempt=certificate.attempt,
            )
            for site in self.sites.values():
                try:
                    await self._link(site).call("Prepare", again, self.timeout)
                except _SiteFailed as exc:
                    refused[site.name] = exc.reason
            await super()._finish(certificate)

    plan = refresh_plan(root)
    replaying = Replaying(ClusterFile.load(root), plan, approvals(root, plan, [1, 2, 3]))
    asyncio.run(replaying.run())
    assert sorted(refused) == sorted(site_name(i) for i in range(1, 6)), refused
    assert all("a run id is used once" in reason for reason in refused.values()), refused
    assert one_epoch(root, nodes) == epoch + 1


def test_a_signing_client_cannot_abort_a_run_it_sees(cluster) -> None:
    """Status shows the run in progress to anyone with a certificate of the cluster CA;
    stopping it takes the run's attempt nonce, which only its coordinator (and the sites
    it prepared) saw. Otherwise one signing client could stop every reshare, the one
    that would evict a site that was broken into too. Refused and audited."""
    import secrets

    import grpc

    root, nodes = cluster
    plan = refresh_plan(root)
    nonce = secrets.token_bytes(16)
    stub = nodes.reshare_stub(5)  # a new member, not a holder: nothing to compute
    prepared = stub.Prepare(
        rpb.PrepareRequest(
            plan=plan.canonical(),
            approvals=codec.approvals_to_wire(approvals(root, plan, [1, 2, 3])),
            holders=[1, 2, 3],
            attempt=nonce,
        ),
        timeout=30,
    )
    assert nodes.status(5).run_id == prepared.run_id
    for wrong in (b"", secrets.token_bytes(16)):
        request = rpb.AbortRequest(run_id=prepared.run_id)
        if wrong:
            request.attempt = wrong
        with pytest.raises(grpc.RpcError):
            stub.Abort(request, timeout=10)
        assert nodes.status(5).run_id == prepared.run_id
    stub.Abort(rpb.AbortRequest(run_id=prepared.run_id, attempt=nonce), timeout=10)
    assert nodes.status(5).run_id == b""
    records = [json.loads(line) for line in nodes.audit_log(5).read_text().splitlines()]
    aborts = [r for r in records if r.get("step") == "Abort"]
    assert [r["outcome"] for r in aborts[-3:]] == ["refused", "refused", "aborted"], aborts
