"""The flood benchmark runs against real nodes and reports both phases.

A second of each phase with one small flooder: only the shape and sanity of the output
are checked (every refusal is accounted for in the audit log's growth). Speed is
measured by ``python -m benchmarks.flood`` and never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.network
def test_flood_benchmark_runs_and_reports_both_phases() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.flood",
            "--flooders",
            "1",
            "--payload-kib",
            "64",
            "--seconds",
            "1",
            "--rate",
            "10",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for phase in ("quiet", "flood"):
        figures = result[phase]
        assert figures["requests"] == 10
        assert 0 < figures["p50_ms"] <= figures["p90_ms"] <= figures["max_ms"]
    assert result["refused_requests_sent"] > 0
    assert 0 < result["audit_lines_for_refusals"] <= result["refused_requests_sent"]
