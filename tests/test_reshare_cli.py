"""The reshare command line, as a script runs it (no terminal), and what nodes refuse.

A whole refresh through ``ittc site keygen``, ``ittc reshare enroll | plan | approve |
run | status``; then the authorization: a plan with fewer than ``k`` approvals, an
approval of another plan, a signing client's certificate sending ``Prepare`` itself, and
a forged certificate are refused by every node, and audited.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import grpc
import pytest

from ittc.config import ClusterFile
from ittc.deploy.layout import CeremonyFolder
from ittc.lifecycle import Approval, Plan, approve
from ittc.wire.v1 import reshare_pb2 as rpb
from tests.cluster import make_cluster
from tests.reshare_cluster import ReshareCluster, site_key, site_name

pytestmark = pytest.mark.network


def ittc(*args: object, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ittc", *map(str, args)],
        cwd=cwd,
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=180,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def test_a_refresh_by_script_and_what_nodes_refuse(tmp_path: pathlib.Path) -> None:
    root = make_cluster(tmp_path, bits=512)
    folder = CeremonyFolder(root)
    work = tmp_path / "operator"
    work.mkdir()

    # At each site: a key, made there. At the desk: the identities, enrolled.
    sites = []
    for i in folder.sites():
        config = folder.node_config(i)
        out = ok(ittc("site", "keygen", "--config", config, "--name", site_name(i), cwd=work))
        identity = json.loads(out)
        assert identity["site"] == site_name(i)
        (work / f"{i}.json").write_text(out)
        sites += ["--site", f"{i}={work / f'{i}.json'}"]
        assert ok(ittc("site", "show", "--config", config, cwd=work)) == out
    ok(ittc("reshare", "enroll", "--cluster", root, *sites, cwd=work))
    for i in folder.sites():
        shutil.copyfile(folder.cluster_file, folder.etc(i) / "cluster.toml")

    with ReshareCluster(root) as nodes:
        nodes.start(timeout=120)
        plan_file = work / "plan.json"
        described = ok(ittc("reshare", "plan", "--cluster", root, "--out", plan_file, cwd=work))
        assert "to epoch 1: any 3 of these 5 sites sign" in described
        plan = Plan.from_json(plan_file.read_bytes())

        # -- refusals first: the cluster stays at epoch 0 through all of them -----------
        for i in (1, 2):
            ok(
                ittc(
                    "reshare", "approve", "--plan", plan_file, "--config",
                    folder.node_config(i), "--out", work / f"{i}.approval", "--yes", cwd=work,
                )
            )  # fmt: skip
        other = Plan.new(
            ClusterFile.load(root).params,
            plan.members,
            3,
            not_after=int(time.time() + 600),
        )
        (work / "3-other.approval").write_text(
            json.dumps(approve(site_key(root, 3), other).to_dict())
        )
        few = ittc(
            "reshare", "run", "--cluster", root, "--plan", plan_file, "--approvals",
            work / "1.approval", work / "2.approval", work / "3-other.approval", cwd=work,
        )  # fmt: skip
        assert few.returncode == 2 and "2 valid approvals" in few.stderr, few.stderr
        # The coordinator refuses before sending anything; the nodes refuse on their own:
        # a Prepare with these approvals, or with none (a signing client's certificate
        # is all it takes to connect), is refused by every node and audited.
        given = [Approval.from_dict(json.loads((work / f).read_text())) for f in
                 ("1.approval", "2.approval", "3-other.approval")]  # fmt: skip
        for approvals in (given, []):
            request = rpb.PrepareRequest(
                plan=plan.canonical(),
                approvals=[rpb.Approval(site=a.site, signature=a.signature) for a in approvals],
                holders=[1, 2, 3],
                attempt=bytes(16),
            )
            for i in range(1, 6):
                with pytest.raises(grpc.RpcError) as refused:
                    nodes.reshare_stub(i).Prepare(request, timeout=10)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        records = [json.loads(line) for line in nodes.audit_log(4).read_text().splitlines()]
        refusals = [r for r in records if r.get("step") == "Prepare" and r["outcome"] == "refused"]
        assert len(refusals) == 2 and refusals[0]["client"] == "ittc-client"
        assert refusals[0]["invalid_approvals"] == {
            "charlie": "signature does not verify for this plan"
        }
        # A certificate nobody approved, pushed by a client: refused and audited.
        # Nor one nested too deep to parse (it was a RecursionError, unaudited).
        for pushed in (b"{}", b"[" * 60_000):
            with pytest.raises(grpc.RpcError) as refused:
                nodes.reshare_stub(1).Commit(rpb.CommitRequest(certificate=pushed), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        records = [json.loads(line) for line in nodes.audit_log(1).read_text().splitlines()]
        assert [r["outcome"] for r in records if r.get("step") == "Commit"] == ["refused"] * 2
        assert all(nodes.status(i).epoch == 0 for i in range(1, 6))

        # -- the refresh ------------------------------------------------------------------
        ok(
            ittc(
                "reshare", "approve", "--plan", plan_file, "--config", folder.node_config(4),
                "--out", work / "4.approval", "--yes", cwd=work,
            )
        )  # fmt: skip
        run = ittc(
            "reshare", "run", "--cluster", root, "--plan", plan_file, "--approvals",
            work / "1.approval", work / "2.approval", work / "4.approval", cwd=work,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "committed at every site" in run.stderr
        status = ok(ittc("reshare", "status", "--cluster", root, "--plan", plan_file, cwd=work))
        assert len(re.findall(r"site \w+, epoch 1 \(", status)) == 5, status
        assert "certificate: written" in status
        # Run again: the plan's certificate exists, so only --resume is allowed (and
        # changes nothing: every site has committed).
        again = ittc(
            "reshare", "run", "--cluster", root, "--plan", plan_file, "--approvals",
            work / "1.approval", work / "2.approval", work / "4.approval", cwd=work,
        )  # fmt: skip
        assert again.returncode == 2
        resumed = ittc(
            "reshare", "run", "--cluster", root, "--plan", plan_file, "--resume", cwd=work,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        ok(ittc("sign", "--cluster", root, "--in", plan_file, "--out", work / "sig", cwd=work))

    # Approving needs a terminal or --yes; an expired plan is not approved.
    refused_approval = ittc(
        "reshare", "approve", "--plan", plan_file, "--config", folder.node_config(5), cwd=work
    )
    assert refused_approval.returncode == 2 and "--yes" in refused_approval.stderr


def test_a_site_reads_the_plan_against_its_own_epoch_before_approving(
    tmp_path: pathlib.Path,
) -> None:
    """Approving is the people's check on who will hold the key, so the site is shown the
    plan against the epoch its node is in: who stays, who leaves, and a site whose keys
    change under a name that stays (every member was shown as a "new site", nobody as
    leaving)."""
    from ittc.lifecycle import Member, SiteKey
    from tests.reshare_cluster import current_members, enable_resharing, make_plan

    root = make_cluster(tmp_path, bits=512)
    enable_resharing(root)
    members = current_members(root)[:4]
    impostor = SiteKey.generate(members[2].site.name).identity
    members[2] = Member(3, impostor, members[2].address, members[2].tls_name)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(make_plan(root, members, 3).to_json())
    shown = ittc(
        "reshare", "approve", "--plan", plan_file, "--config",
        CeremonyFolder(root).node_config(1), "--yes", cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[1]: line for line in shown.stderr.splitlines() if "fingerprint" in line}
    assert "(was 1)" in lines[site_name(1)] and "(was 4)" in lines[site_name(4)]
    assert "NEW KEYS for site 3" in lines[site_name(3)]
    assert f"{site_name(5)}         (was 5) leaves" in shown.stderr
    assert "from epoch 0" in shown.stderr and "3 of 5" in shown.stderr
    # The operator's own tool makes no such plan: the coordinator knows sites by name, so
    # it refused the run only after the approvals were gathered.
    (tmp_path / "impostor.json").write_text(json.dumps(impostor.to_dict()))
    replace = ittc(
        "reshare", "plan", "--cluster", root, "--out", tmp_path / "replaced.json",
        "--replace", f"3={tmp_path / 'impostor.json'}@127.0.0.1:7003", cwd=tmp_path,
    )  # fmt: skip
    assert replace.returncode == 2 and "needs a new name" in replace.stderr, replace.stderr
    assert not (tmp_path / "replaced.json").exists()
