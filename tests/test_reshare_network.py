"""Resharing over the network, end to end: real node processes over mutual TLS, the
coordinator, site keys, approvals, certificates; signing keeps working during and after.

Small keys (512 bits, fast KDF) keep this quick; the arithmetic at full size is in the
benchmark (python -m benchmarks.reshare).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import threading

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.combiner import SyncClusterClient
from ittc.config import ClusterFile
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import SigningError
from ittc.lifecycle import Member
from ittc.storage import read_share_file
from tests.cluster import make_cluster, pkcs1_item, sign_request, site_passphrase
from tests.reshare_cluster import (
    ReshareCluster,
    add_site,
    approvals,
    current_members,
    enable_resharing,
    make_plan,
    refresh_plan,
    run_reshare,
)

pytestmark = pytest.mark.network


class Signer:
    """Signs in the background while a reshare runs; every signature is checked."""

    def __init__(self, root: pathlib.Path) -> None:
        self.client = SyncClusterClient(root, deadline=15.0, node_timeout=5.0)
        self.public = self.client.params.public_key()
        self.signed = 0
        self.failures: list[str] = []
        self.epochs: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            message = b"during %d" % n
            n += 1
            try:
                signature = self.client.sign(message)
                self.public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
                self.signed += 1
                self.epochs.add(self.client.client.epoch)
            except SigningError as exc:
                self.failures.append(str(exc))
            self._stop.wait(0.05)

    def __enter__(self) -> Signer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


@pytest.fixture
def resharing(tmp_path: pathlib.Path):
    root = make_cluster(tmp_path, bits=512)
    enable_resharing(root)
    with ReshareCluster(root) as nodes:
        nodes.start(timeout=120)
        yield root, nodes


def test_a_refresh_moves_every_site_to_a_new_epoch_while_signing_goes_on(resharing) -> None:
    root, nodes = resharing
    folder = CeremonyFolder(root)
    before = ClusterFile.load(root)
    old_shares = {
        i: read_share_file(folder.etc(i) / "share.enc", before.params, i, site_passphrase(root, i))
        for i in range(1, 6)
    }
    plan = refresh_plan(root)
    lines: list[str] = []
    with Signer(root) as signer:
        certificate = run_reshare(root, plan, approvals(root, plan, [1, 3, 5]), say=lines.append)
        # A few more signatures after the commit, in the new epoch.
        deadline_signed = signer.signed + 5
        while signer.signed < deadline_signed and not signer.failures:
            signer._stop.wait(0.05)
    assert not signer.failures, signer.failures
    assert signer.epochs == {0, 1} or signer.epochs == {1}, signer.epochs

    after = ClusterFile.load(root)
    assert after.epoch == 1 == certificate.epoch
    assert after.params.key_id == before.params.key_id
    assert after.params.epoch_id != before.params.epoch_id
    # The first reshare of a generated key converts it to integer shares (the secret
    # multiplied by 5!), and the parameters record the new combine exponent.
    assert (before.params.sharing, after.params.sharing) == ("shoup", "integer")
    assert (after.params.kind, after.params.secret_multiplier) == ("generated", 120)
    assert after.params.combine_exponent == 4 * 120**3 * 120
    assert after.certificate is not None and after.certificate.exists()

    # Every site now signs in epoch 1 with a new share, and its old share is gone.
    new_shares = {}
    for i in range(1, 6):
        status = nodes.status(i)
        assert (status.epoch, status.index, status.retired) == (1, i, False)
        store = nodes.store(i)
        assert store.current() is not None and store.current().epoch == 1
        assert not (folder.etc(i) / "share.enc").exists()
        assert sorted(p.name for p in store.root.glob("*.share")) == ["epoch-1.share"]
        assert store.pending_runs() == []
        new_shares[i] = store.read_share(after.params, i, site_passphrase(root, i))
        assert (
            new_shares[i].dangerously_export_secret() != old_shares[i].dangerously_export_secret()
        )

    # The old epoch is refused by every node, with the node's epoch named.
    stub = nodes.stub(1)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Sign(sign_request(before.params, [pkcs1_item(b"old")]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(refused.value.trailing_metadata())["ittc-epoch"] == "1"

    # Nothing secret in what the coordinator wrote, or said.
    run_folder = after.root / "reshare" / plan.digest.hex()[:16]
    written = "\n".join(
        p.read_text(errors="replace") for p in run_folder.rglob("*") if p.is_file()
    ) + "\n".join(lines)
    for share in [*old_shares.values(), *new_shares.values()]:
        secret = share.dangerously_export_secret()
        for form in (format(secret, "x"), str(secret)):
            assert form[:24] not in written and form[-24:] not in written
    for i in range(1, 6):
        assert site_passphrase(root, i).decode() not in written
    outcome = json.loads((run_folder / "outcome.json").read_text())
    assert outcome["committed"] and outcome["not_delivered"] == {}

    # Every node audited the plan, the approvals that counted and the outcome.
    records = [json.loads(line) for line in nodes.audit_log(2).read_text().splitlines()]
    steps = [(r["step"], r["outcome"]) for r in records if r.get("type") == "reshare"]
    assert ("Prepare", "prepared") in steps and ("Commit", "committed") in steps
    prepared = next(r for r in records if r.get("step") == "Prepare")
    assert prepared["approved_by"] == ["alpha", "charlie", "echo"]
    assert prepared["plan"] == plan.digest.hex()


def _signs_in(root: pathlib.Path, epoch: int, messages: int = 3) -> None:
    """A fresh combiner, from the cluster file as it is now, signs in ``epoch``."""
    with SyncClusterClient(root, deadline=15.0) as client:
        assert client.params.epoch == epoch
        public = client.params.public_key()
        for n in range(messages):
            message = b"after %d" % n
            public.verify(client.sign(message), message, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture
def split_resharing(tmp_path: pathlib.Path):
    """Like ``resharing``, for a key split from an ordinary RSA key (integer shares)."""
    root = make_cluster(tmp_path, bits=1024, split_existing_key=True)
    enable_resharing(root)
    with ReshareCluster(root) as nodes:
        nodes.start(timeout=120)
        yield root, nodes


def test_a_site_whose_disk_died_is_dealt_a_new_share(split_resharing) -> None:
    """A split key. Site 2 loses its share file (its site key survives): it restarts
    without a share, and a refresh approved by three other sites gives it a new one.
    Later it loses its whole state folder, twice: given the current epoch's public files
    (docs/runbooks.md), it starts in that epoch; given nothing, it starts in the
    ceremony's, the next coordinator hands it the certificates since, it follows them
    holding nothing; either way the refresh deals it a share again."""
    root, nodes = split_resharing
    folder = CeremonyFolder(root)
    nodes.kill(2)
    (folder.etc(2) / "share.enc").unlink()
    nodes.start_waiting([2])
    assert nodes.health(2) == "NOT_SERVING" and nodes.status(2).index == 0
    # What the operator sees: a site waiting for its share, not a wrong node.
    status = subprocess.run(
        [sys.executable, "-m", "ittc", "status", "--cluster", str(root), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    waiting = next(n for n in json.loads(status.stdout)["nodes"] if n["index"] == 2)
    assert waiting["problem"].startswith("NO SHARE"), waiting
    plan = refresh_plan(root)
    with Signer(root) as signer:
        certificate = run_reshare(root, plan, approvals(root, plan, [1, 3, 4]))
    assert not signer.failures, signer.failures
    assert 2 not in certificate.holders
    nodes.wait_serving([2], timeout=30)
    assert nodes.status(2).index == 2
    params = ClusterFile.load(root).params
    assert (params.kind, params.sharing, params.secret_multiplier) == ("split", "integer", 1)
    _signs_in(root, 1)

    # Its disk dies again, now with its state folder (its epochs): it would start in the
    # ceremony's epoch and refuse every plan of epoch 1, until it is given the current
    # epoch's public files, as docs/runbooks.md says.
    ceremony = {
        name: (folder.etc(2) / name).read_bytes() for name in ("params.json", "cluster.toml")
    }
    nodes.kill(2)
    shutil.rmtree(folder.var(2) / "state")
    cluster = ClusterFile.load(root)
    assert cluster.params_path is not None and cluster.certificate is not None
    shutil.copyfile(cluster.params_path, folder.etc(2) / "params.json")
    for public in (cluster.path, cluster.params_path, cluster.certificate):
        shutil.copy(public, folder.etc(2))
    nodes.start_waiting([2])
    assert (nodes.status(2).epoch, nodes.status(2).index) == (1, 0)
    plan = refresh_plan(root)
    run_reshare(root, plan, approvals(root, plan, [1, 3, 4]))
    nodes.wait_serving([2], timeout=30)
    assert nodes.status(2).index == 2

    # And again, rebuilt from its ceremony folder as it was, and nobody copies anything:
    # it starts in the ceremony's epoch, the coordinator hands it the certificates of
    # epochs 1 and 2, it follows them holding nothing, and is dealt a share. (No combiner
    # runs meanwhile: one would hand it the last certificate itself.)
    nodes.kill(2)
    shutil.rmtree(nodes.store(2).root)
    for name, data in ceremony.items():
        (folder.etc(2) / name).write_bytes(data)
    nodes.start_waiting([2])
    assert (nodes.status(2).epoch, nodes.status(2).index) == (0, 0)
    plan = refresh_plan(root)
    lines: list[str] = []
    run_reshare(root, plan, approvals(root, plan, [3, 4, 5]), say=lines.append)
    assert any("bravo was still in epoch 0: handed it" in line for line in lines), lines
    nodes.wait_serving([2], timeout=30)
    assert (nodes.status(2).epoch, nodes.status(2).index) == (3, 2)
    records = [json.loads(line) for line in nodes.audit_log(2).read_text().splitlines()]
    assert any(r.get("step") == "Commit" and r["outcome"] == "followed" for r in records)
    _signs_in(root, 3)


def test_site_3_is_replaced_by_a_new_site_at_a_new_address(resharing) -> None:
    root, nodes = resharing
    newcomer = add_site(root, 6)
    nodes.add(6)
    nodes.start_waiting([6])
    members = current_members(root)
    members[2] = Member(3, newcomer.site, newcomer.address, newcomer.tls_name)
    plan = make_plan(root, members, 3)
    with Signer(root) as signer:
        run_reshare(root, plan, approvals(root, plan, [1, 2, 4]))
    assert not signer.failures, signer.failures
    cluster = ClusterFile.load(root)
    assert cluster.node(3).address == newcomer.address and cluster.node(3).site == newcomer.site
    # The old site 3 retired: its share is destroyed and it refuses to sign.
    status = nodes.status(3)
    assert status.retired and status.index == 0
    assert not (CeremonyFolder(root).etc(3) / "share.enc").exists()
    assert list(nodes.store(3).root.glob("*.share")) == []
    nodes.wait_serving([6], timeout=30)
    assert nodes.status(6).index == 3
    nodes.kill(3)
    _signs_in(root, 1)
    # A retired site does not start again.
    nodes.start([3], wait=False)
    deadline = 30.0
    import time

    start = time.monotonic()
    while nodes.returncode(3) is None and time.monotonic() - start < deadline:
        time.sleep(0.1)
    assert nodes.returncode(3) == 2 and "retired" in nodes.log_tail(3)


def test_five_to_seven_sites_with_k_3_to_4_then_back_to_five(resharing) -> None:
    root, nodes = resharing
    added = [add_site(root, 6), add_site(root, 7)]
    for i in (6, 7):
        nodes.add(i)
    nodes.start_waiting([6, 7])
    plan = make_plan(root, current_members(root) + added, 4)
    with Signer(root) as signer:
        run_reshare(root, plan, approvals(root, plan, [2, 4, 5]))
    assert not signer.failures, signer.failures
    grown = ClusterFile.load(root)
    assert (grown.params.n, grown.params.k, grown.epoch) == (7, 4, 1)
    nodes.wait_serving([6, 7], timeout=30)
    _signs_in(root, 1)

    # 7 -> 5: four of the seven approve; sites 6 and 7 retire.
    plan = make_plan(root, current_members(root)[:5], 3)
    with Signer(root) as signer:
        run_reshare(root, plan, approvals(root, plan, [1, 3, 6, 7]))
    assert not signer.failures, signer.failures
    shrunk = ClusterFile.load(root)
    assert (shrunk.params.n, shrunk.params.k, shrunk.epoch) == (5, 3, 2)
    assert nodes.status(6).retired and nodes.status(7).retired
    _signs_in(root, 2)


def test_a_commit_that_reached_too_few_sites_is_finished_by_a_combiner(resharing) -> None:
    """5 sites, k 3 -> 4; the commit reaches only three of them (two hang while it is
    delivered): neither epoch has a threshold of sites. A combiner with the new cluster
    file hands the certificate to the two others and signs."""
    root, nodes = resharing
    plan = make_plan(root, current_members(root), 4)

    def during(line: str) -> None:
        if "is decided" in line:
            nodes.pause(4)
            nodes.pause(5)

    run_reshare(root, plan, approvals(root, plan, [1, 2, 3]), say=during, timeout=3.0)
    outcome = json.loads(
        (
            ClusterFile.load(root).root / "reshare" / plan.digest.hex()[:16] / "outcome.json"
        ).read_text()
    )
    assert sorted(outcome["not_delivered"]) == ["delta", "echo"]
    nodes.resume(4)
    nodes.resume(5)
    assert nodes.status(4).epoch == 0 and nodes.status(4).pending_runs
    _signs_in(root, 1, messages=2)
    assert nodes.status(4).epoch == 1 and nodes.status(5).epoch == 1

    # Again, site 5 missing the commit; this time the next reshare's coordinator hands it
    # the certificate before it starts (no combiner signed in between).
    plan = refresh_plan(root)

    def during_again(line: str) -> None:
        if "is decided" in line:
            nodes.pause(5)

    given = approvals(root, plan, [1, 2, 3, 4])  # epoch 1 is 4 of 5
    run_reshare(root, plan, given, say=during_again, timeout=3.0)
    nodes.resume(5)
    assert nodes.status(5).epoch == 1
    lines: list[str] = []
    plan = refresh_plan(root)
    run_reshare(root, plan, approvals(root, plan, [1, 2, 3, 4]), say=lines.append)
    assert any("echo was still in epoch 1: handed it" in line for line in lines), lines
    assert {nodes.status(i).epoch for i in range(1, 6)} == {3}


def _allow_unattended_refresh(root: pathlib.Path, index: int, days: int) -> None:
    path = CeremonyFolder(root).node_config(index)
    text = path.read_text()
    path.write_text(text.replace("[reshare]\n", f"[reshare]\nauto_approve_refresh_days = {days}\n"))


def test_a_scheduled_refresh_and_a_combiner_that_follows_certificates(
    resharing, tmp_path: pathlib.Path
) -> None:
    """Sites 1-4 approve refreshes unattended (at most every 20 days); site 5 only by hand.
    ``ittc reshare refresh`` (what the monthly timer runs) moves the cluster to epoch 1;
    a second run at once is refused by the sites. A combiner on another host, whose copy
    of the cluster file still names epoch 0, follows two epochs by checking the nodes'
    certificates itself."""
    import shutil
    import subprocess
    import sys

    root, nodes = resharing
    for i in (1, 2, 3, 4):
        _allow_unattended_refresh(root, i, 20)
        nodes.restart(i)
    remote = tmp_path / "remote-combiner"
    shutil.copytree(CeremonyFolder(root).combiner, remote)
    with SyncClusterClient(remote, deadline=15.0) as elsewhere:
        assert elsewhere.sign(b"before") and elsewhere.client.epoch == 0

        def refresh() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "ittc", "reshare", "refresh", "--cluster", str(root)],
                text=True,
                capture_output=True,
                timeout=180,
                check=False,
            )

        # Anyone who can connect may ask for a refresh approval and never run it: that
        # does not hold back the scheduled one.
        from ittc.wire.v1 import reshare_pb2 as rpb

        unused = refresh_plan(root)
        for i in (1, 2, 3, 4):
            nodes.reshare_stub(i).ApproveRefresh(
                rpb.ApproveRefreshRequest(plan=unused.canonical()), timeout=10
            )
        first = refresh()
        assert first.returncode == 0, first.stderr
        assert "echo did not approve" in first.stderr and "only by hand" in first.stderr
        assert ClusterFile.load(root).epoch == 1
        second = refresh()
        assert second.returncode == 2 and "days ago" in second.stderr, second.stderr
        assert ClusterFile.load(root).epoch == 1

        # A refresh by hand (approvals from the sites' keys) to epoch 2.
        plan = refresh_plan(root)
        run_reshare(root, plan, approvals(root, plan, [2, 3, 5]))
        assert ClusterFile.load(remote).epoch == 0  # never copied there
        public = elsewhere.params.public_key()
        signature = elsewhere.sign(b"after two epochs")
        public.verify(signature, b"after two epochs", padding.PKCS1v15(), hashes.SHA256())
        assert elsewhere.client.epoch == 2

    # Not a refresh (another threshold; a site moved, which combiners that follow the
    # certificate would dial): never approved unattended.
    import dataclasses

    from ittc.wire.v1 import reshare_pb2 as rpb

    members = current_members(root)
    moved = [dataclasses.replace(members[0], address="198.51.100.7:7001"), *members[1:]]
    for other in (make_plan(root, members, 4), make_plan(root, moved, 3)):
        with pytest.raises(grpc.RpcError) as refused:
            nodes.reshare_stub(1).ApproveRefresh(
                rpb.ApproveRefreshRequest(plan=other.canonical()), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not a refresh" in (refused.value.details() or "")


def test_a_commit_whose_caller_hangs_up_is_finished_by_the_node(resharing) -> None:
    """Callers that give up on Commit early (deadlines of 5 ms and up, as a coordinator
    killed mid-delivery): a commit the node started is finished all the same, so the node's
    memory (the epoch it signs in) and its disk (its ``current`` pointer) always agree; and a
    later Commit finds it done."""
    import asyncio
    import time

    from ittc.deploy.reshare import Coordinator
    from ittc.wire.v1 import reshare_pb2 as rpb

    root, nodes = resharing

    class NoDelivery(Coordinator):
        async def deliver(self, certificate):  # type: ignore[override]
            return [], {}

    plan = refresh_plan(root)
    coordinator = NoDelivery(ClusterFile.load(root), plan, approvals(root, plan, [1, 2, 3]))
    certificate = asyncio.run(coordinator.run())
    request = rpb.CommitRequest(certificate=certificate.to_json().encode())
    hung_up = 0
    for deadline in (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64):
        try:
            nodes.reshare_stub(1).Commit(request, timeout=deadline)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            hung_up += 1
        time.sleep(1.0)  # whatever the node started, it has finished by now
        on_disk = nodes.store(1).current()
        assert nodes.status(1).epoch == (on_disk.epoch if on_disk else 0)
        if on_disk is not None:
            break
    assert hung_up and nodes.status(1).epoch == 1
    for i in range(1, 6):
        assert nodes.reshare_stub(i).Commit(request, timeout=30).epoch == 1
    _signs_in(root, 1)
