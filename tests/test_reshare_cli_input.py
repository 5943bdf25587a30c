"""Bad input to every ``ittc site`` and ``ittc reshare`` command, as an operator following
docs/runbooks.md might type it: exit status 2, one ``ittc: error:`` line that names the file
or the flag and what is wrong, never a traceback, and nothing written — the cluster file,
the site's config and key are byte for byte as before, and no run folder appears.

No node runs: every refusal here comes before the first connection.
"""

# ruff: noqa: E501  (the table of cases below: one case a line)

from __future__ import annotations

import json
import os
import pathlib
import shlex
import stat
import time

import pytest

from ittc import cli
from ittc.config import ClusterFile
from ittc.deploy.layout import CeremonyFolder
from ittc.lifecycle import Plan, approve
from tests.cluster import make_cluster
from tests.reshare_cluster import enable_resharing, refresh_plan, site_key


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A 3-of-5 cluster with site keys enrolled, and an operator's desk beside it:
    identities, a refresh plan, two approvals of it, one of another plan, bad files."""
    root = make_cluster(tmp_path_factory.mktemp("cli-input"), bits=512)
    sites = enable_resharing(root)
    work = root.parent / "desk"
    work.mkdir()
    for identity in sites.values():
        (work / f"{identity.name}.json").write_text(json.dumps(identity.to_dict()))
    plan = refresh_plan(root)
    (work / "plan.json").write_text(plan.to_json())
    for i in (1, 2):
        (work / f"{i}.approval").write_text(json.dumps(approve(site_key(root, i), plan).to_dict()))
    other = refresh_plan(root)
    (work / "other.approval").write_text(json.dumps(approve(site_key(root, 3), other).to_dict()))
    expired = Plan.new(
        ClusterFile.load(root).params, plan.members, 3, not_after=int(time.time()) - 60
    )
    (work / "expired.json").write_text(expired.to_json())
    (work / "3-expired.approval").write_text(
        json.dumps(approve(site_key(root, 3), expired).to_dict())
    )
    data = json.loads(plan.to_json())
    data["k"] = 9
    (work / "k9.json").write_text(json.dumps(data))
    data = json.loads(plan.to_json())
    data["members"][0]["sign_key"] = "zz"
    (work / "badkey.json").write_text(json.dumps(data))
    renamed = sites[2].to_dict() | {"site": "bravo-again"}
    (work / "bravo-again.json").write_text(json.dumps(renamed))
    approval = json.loads((work / "2.approval").read_text())
    (work / "nothex.approval").write_text(json.dumps(approval | {"signature": "xyz"}))
    (work / "nobody.approval").write_text(json.dumps(approval | {"site": "nobody"}))
    (work / "garbage.txt").write_text("garbage\n")
    (work / "empty.json").write_text("{}")
    (work / "a-folder").mkdir()
    os.mkfifo(work / "a-pipe")  # stands for a device: --out /dev/null must not replace it
    return root


def _snapshot(root: pathlib.Path) -> dict[str, bytes]:
    """Every file of the cluster (combiner bundle, site configs and keys), by path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "logs" not in p.parts
    }


#: name -> (the command line, what its one error line must contain). ``C`` is the
#: combiner's cluster, ``N1`` site 1's config, ``D/`` the operator's desk.
CASES: dict[str, tuple[str, str]] = {
    # ittc site
    "keygen: no config": ("site keygen --config D/nope.toml --name x", "no such file"),
    "keygen: config not TOML": ("site keygen --config D/garbage.txt --name x", "not valid TOML"),
    "keygen: config a folder": ("site keygen --config D/a-folder --name x", "a-folder"),
    "keygen: key exists": ("site keygen N1 --name alpha", "already has a key"),
    "show: no config": ("site show --config D/nope.toml", "no such file"),
    "new: not a ceremony": ("site new --ceremony D/a-folder --index 6 --address h:1", "not a key ceremony"),
    "new: index taken": ("site new --ceremony R --index 2 --address 127.0.0.1:1", "exists"),
    "new: bad address": ("site new --ceremony R --index 6 --address nowhere", "--address"),
    # ittc reshare enroll
    "enroll: no identity": ("reshare enroll C --site 1=D/nope.json", "no such site identity file"),
    "enroll: not JSON": ("reshare enroll C --site 1=D/garbage.txt", "not JSON"),
    "enroll: identity empty": ("reshare enroll C --site 1=D/empty.json", "identity has exactly"),
    "enroll: no such node": ("reshare enroll C --site 9=D/alpha.json", "no nodes [9]"),
    "enroll: bad spec": ("reshare enroll C --site x=D/alpha.json", "INDEX=IDENTITY.json"),
    "enroll: a name twice": ("reshare enroll C --site 1=D/bravo.json", "same site name: bravo"),
    "enroll: a key twice": ("reshare enroll C --site 1=D/bravo-again.json", "same site key"),
    "enroll: no cluster": ("reshare enroll --cluster D/nope --site 1=D/alpha.json", "no such file"),
    # ittc reshare plan
    "plan: k above n": ("reshare plan C --out D/p.json --threshold 6", "k'=6 n'=5"),
    "plan: k of 1": ("reshare plan C --out D/p.json --threshold 1", "--threshold"),
    "plan: drop unknown": ("reshare plan C --out D/p.json --drop 9", "--drop 9"),
    "plan: drop too many": ("reshare plan C --out D/p.json --drop 1 --drop 2 --drop 3 --drop 4", "k'=3 n'=1"),
    "plan: no address": ("reshare plan C --out D/p.json --replace 2=D/bravo.json", "@HOST:PORT"),
    "plan: no port": ("reshare plan C --out D/p.json --replace 2=D/bravo.json@h", "not host:port"),
    "plan: bad port": ("reshare plan C --out D/p.json --replace 2=D/bravo.json@h:99999", "99999"),
    "plan: bad TLS name": ("reshare plan C --out D/p.json --replace '2=D/bravo.json@h:1/no way'", "TLS name 'no way'"),
    "plan: replace no index": ("reshare plan C --out D/p.json --replace 9=D/bravo.json@h:1", "--replace"),
    "plan: replace by a member": ("reshare plan C --out D/p.json --replace 2=D/alpha.json@h:1", "share site names"),
    "plan: add a member again": ("reshare plan C --out D/p.json --add D/alpha.json@h:1", "share site names"),
    "plan: add garbage": ("reshare plan C --out D/p.json --add D/garbage.txt@h:1", "not JSON"),
    "plan: out in no folder": ("reshare plan C --out D/nowhere/p.json", "no such folder"),
    "plan: out a folder": ("reshare plan C --out D/a-folder", "a folder"),
    "plan: out a pipe": ("reshare plan C --out D/a-pipe", "not a regular file"),
    "plan: valid for ever": ("reshare plan C --out D/p.json --valid-for 1e12", "--valid-for"),
    # ittc reshare approve
    "approve: no plan": ("reshare approve --plan D/nope.json N1 --yes", "no such plan file"),
    "approve: plan not JSON": ("reshare approve --plan D/garbage.txt N1 --yes", "garbage.txt"),
    "approve: plan a folder": ("reshare approve --plan D/a-folder N1 --yes", "a folder"),
    "approve: not a plan": ("reshare approve --plan D/alpha.json N1 --yes", "not an ittc reshare plan"),
    "approve: plan with k 9": ("reshare approve --plan D/k9.json N1 --yes", "k'=9"),
    "approve: plan bad key": ("reshare approve --plan D/badkey.json N1 --yes", "site identity"),
    "approve: expired": ("reshare approve --plan D/expired.json N1 --yes", "expired"),
    "approve: no terminal": ("reshare approve --plan D/plan.json N1", "--yes"),
    "approve: no config": ("reshare approve --plan D/plan.json --config D/nope.toml --yes", "no such file"),
    "approve: out a pipe": ("reshare approve --plan D/plan.json N1 --yes --out D/a-pipe", "not a regular file"),
    "approve: out nowhere": ("reshare approve --plan D/plan.json N1 --yes --out D/nowhere/a", "no such folder"),
    # ittc reshare run (the coordinator refuses before it connects)
    "run: two approvals of three": ("reshare run C P --approvals D/1.approval D/2.approval", "2 valid approvals"),
    "run: one approval twice": ("reshare run C P --approvals D/1.approval D/1.approval D/2.approval", "2 valid approvals"),
    "run: approval of another plan": ("reshare run C P --approvals D/1.approval D/2.approval D/other.approval", "charlie: signature does not verify for this plan"),
    "run: approval by no site": ("reshare run C P --approvals D/1.approval D/2.approval D/nobody.approval", "nobody: not a site"),
    "run: no approvals": ("reshare run C P", "0 valid approvals"),
    "run: approval not hex": ("reshare run C P --approvals D/nothex.approval", "nothex.approval"),
    "run: approval not JSON": ("reshare run C P --approvals D/garbage.txt", "not an approval file"),
    "run: approval missing": ("reshare run C P --approvals D/nope", "no such approval file"),
    "run: expired plan": ("reshare run C --plan D/expired.json --approvals D/1.approval D/2.approval D/3-expired.approval", "expired at"),
    "run: plan not JSON": ("reshare run C --plan D/garbage.txt", "garbage.txt"),
    "run: resume what never ran": ("reshare run C P --resume", "nothing to resume"),
    "run: timeout 0": ("reshare run C P --timeout 0", "--timeout"),
    "run: no cluster": ("reshare run --cluster D/nope P", "no such file"),
    # ittc reshare status / refresh
    "status: no cluster": ("reshare status --cluster D/nope --plan D/nope.json", "no such file"),
    "refresh: no cluster": ("reshare refresh --cluster D/nope", "no such file"),
}  # fmt: skip


def _argv(line: str, root: pathlib.Path) -> list[str]:
    words = {
        "C": ["--cluster", str(root / "combiner")],
        "N1": ["--config", str(root / "site-1" / "etc" / "node.toml")],
        "P": ["--plan", str(root.parent / "desk" / "plan.json")],
        "R": [str(root)],
    }
    out: list[str] = []
    for word in shlex.split(line):
        word = word.replace("D/", f"{root.parent / 'desk'}/")
        out += words.get(word, [word])
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(
    desk: pathlib.Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line, expected = CASES[name]
    root, work = desk, desk.parent / "desk"
    argv = _argv(line, root)
    before = _snapshot(root)
    desk_before = sorted(p.name for p in work.iterdir())
    assert cli.main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ittc: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    assert _snapshot(root) == before
    assert sorted(p.name for p in work.iterdir()) == desk_before
    assert stat.S_ISFIFO((work / "a-pipe").lstat().st_mode)
    assert not (CeremonyFolder(root).combiner / "reshare").exists()
