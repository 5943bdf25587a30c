"""The reshare benchmark runs and writes a complete report (small keys, few rounds).

Only the report's shape and its size facts are checked; speed is measured by
``python -m benchmarks.reshare`` and never asserted in tests.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import reshare
from tests.cluster import make_cluster


@pytest.mark.network
def test_reshare_benchmark_writes_a_complete_report(tmp_path, capsys):
    cluster = make_cluster(tmp_path / "small", bits=512)
    argv = [
        "--network",
        "1",
        "--test-cluster",
        str(cluster),
        "--bits",
        "1024",
        "--epochs",
        "2",
        "--repeat",
        "3",
        "--sample-ms",
        "0.5",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert reshare.main(argv) == 0
    [path] = tmp_path.glob("reshare-*.json")
    report = json.loads(path.read_text())
    assert report["schema"] == reshare.SCHEMA and report["bits"] == 1024
    assert [r["kind"] for r in report["kinds"]] == ["generated", "split"]
    for r in report["kinds"]:
        assert [h["epoch"] for h in r["history"]] == [0, 1, 2]
        assert all(h["largest_share_bits"] <= h["share_bits"] for h in r["history"])
        assert r["history"][-1]["sharing"] == "integer"
        assert set(r["share_s"]) == {"epoch0", "epoch1", "last"}
        assert all(s["median"] > 0 and s["n"] == 3 for s in r["share_s"].values())
        assert r["share_ratio_last_over_epoch0"]["median"] > 0
        assert r["share_ratio_of_fastest"] > 0 and r["share_exponent_ratio"] > 0
        assert r["refresh_s"]["all_parties_s"]["median"] > 0
        assert set(r["targets"]) == {"share_ratio", "refresh_all_parties_s"}
    network = report["network"]
    assert network["runs"] == 1 and network["wall_s"]["median"] > 0
    assert set(network["target"]) == {"limit", "value", "pass"}
    markdown = capsys.readouterr().out
    assert "Share cost by epoch" in markdown and "last / epoch 0" in markdown
    assert "over loopback" in markdown
    assert path.with_suffix(".md").read_text() + "\n" == markdown
