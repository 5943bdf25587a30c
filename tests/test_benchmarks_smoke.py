"""The micro-benchmark runs and writes a complete report (a small key, three rounds).

Only the shape of the output is checked here: every field present, every time positive.
Speed is measured by ``python -m benchmarks.micro`` and never asserted in tests.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import micro
from ittc.scheme import ct

MACHINE_FIELDS = {
    "date",
    "cpu_model",
    "cpu_count",
    "cpus_usable",
    "machine",
    "platform",
    "python",
    "python_implementation",
    "gmpy2",
    "gmp",
    "cryptography",
    "openssl",
    "libcrypto",
    "ct_backend",
    "ittc_version",
    "ittc_commit",
    "ittc_scheme_modified",
    "loadavg_start",
    "loadavg_end",
}
SUMMARY_FIELDS = {"median", "p25", "p75", "min", "max", "n"}
#: Differences of two timings: noise can make them negative; only finiteness is checked.
SIGNED = {"final_check_s"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    plot = importlib.util.find_spec("matplotlib") is not None
    argv = [
        "--bits",
        "1024",
        "--repeat",
        "3",
        "--keygen-runs",
        "1",
        "--split-runs",
        "1",
        "--sample-ms",
        "0.5",
        "--out",
        str(out),
        "--no-progress",
        "--insecure-allow-small-modulus-for-tests",
    ]
    assert micro.main(argv if plot else [*argv, "--no-plot"]) == 0
    written = sorted(out.iterdir())
    jsons = [p for p in written if p.suffix == ".json"]
    assert len(jsons) == 1 and jsons[0].name.startswith("micro-")
    doc = json.loads(jsons[0].read_text())
    return doc, out, jsons[0], plot


def _positive(value):
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_machine_facts_and_config(report):
    doc, *_ = report
    assert doc["schema"] == micro.SCHEMA
    assert doc["command"].startswith("python -m benchmarks.micro --bits 1024")
    assert MACHINE_FIELDS <= set(doc["machine"])
    for name in ("cpu_model", "python", "gmpy2", "gmp", "cryptography", "openssl", "date"):
        assert isinstance(doc["machine"][name], str) and doc["machine"][name]
    assert doc["machine"]["cpu_count"] >= 1
    assert doc["config"]["repeat"] == 3 and doc["config"]["bits"] == [1024]
    assert doc["config"]["backend"] == "auto"
    assert doc["machine"]["ct_backend"] == ct.backend_description()
    # The machines this suite runs on have libcrypto: both backends are measured.
    assert doc["machine"]["libcrypto"] and ct.backend() == "openssl"


def test_every_operation_timed(report):
    doc, *_ = report
    size = doc["sizes"]["1024"]
    assert size["bits"] == 1024 and size["n"] == 5 and size["k"] == 3
    assert size["backend"] == "openssl"
    assert set(size["operations"]) == {name for name, _ in micro.OPERATIONS}
    for name, op in size["operations"].items():
        assert SUMMARY_FIELDS | {"label", "inner"} <= set(op), name
        assert op["n"] == 3 and op["inner"] >= 1, name
        for field in ("median", "p25", "p75", "min", "max"):
            assert _positive(op[field]), (name, field)
        assert op["min"] <= op["median"] <= op["max"], name
    # 2·Δ·s_i with 2Δ = 240 and s_i < p'q' < 2^1022: at most 1030 bits, and below 1025
    # bits about once in 60 keys (s_i < 2^1016), so the lower bound is far below that.
    assert 1024 - 32 < size["share_exponent_bits"] <= 1030
    assert size["split_share_exponent_bits"] > size["share_exponent_bits"]


def test_ratios_rates_keygen_split(report):
    doc, *_ = report
    size = doc["sizes"]["1024"]
    expected = {
        "share_gmpy2_over_powmod_sec",
        "share_python_only_over_share",
        "combine_check_over_share",
        "combine_nocheck_over_share",
        "final_check_s",
        "combine_robust_over_combine_check",
        "share_proof_over_share",
        "share_proof_precomputed_over_share",
        "verify_share_over_share",
        "split_share_over_share",
        "split_share_over_its_powmod_sec",
        "share_over_openssl_sign",
        "share_openssl_over_openssl_ct",
        "share_openssl_over_powmod_sec",
        "share_openssl_over_share_gmpy2",
        "openssl_ct_over_powmod_sec",
    }
    assert set(size["ratios"]) == expected
    for name, ratio in size["ratios"].items():
        assert SUMMARY_FIELDS <= set(ratio), name
        check = (lambda v: math.isfinite(v)) if name in SIGNED else _positive
        assert all(check(ratio[f]) for f in ("median", "p25", "p75")), name
    for name, value in size["derived"].items():
        assert _positive(value), name
    for part in ("keygen", "split"):
        assert size[part]["runs"] == 1 and len(size[part]["runs_s"]) == 1, part
        for field in ("median_s", "min_s", "max_s", "p25_s", "p75_s"):
            assert _positive(size[part][field]), (part, field)
    assert size["split"]["function"] == "dealer.deal_integer"  # split() refuses 1024 bits
    assert _positive(size["openssl_generate_private_key_s"])


def test_targets_and_markdown(report):
    doc, out, json_path, plot = report
    targets = {(t["id"], t["bits"]): t for t in doc["targets"]}
    assert set(targets) == {
        ("share_openssl_over_openssl_ct", 1024),
        ("share_openssl_over_powmod_sec", 1024),
        ("share_gmpy2_over_powmod_sec", 1024),
        ("combine_check_over_share", 1024),
    }
    for t in targets.values():
        assert isinstance(t["pass"], bool) and _positive(t["value"]) and _positive(t["limit"])
    md = json_path.with_suffix(".md").read_text()
    assert "## Targets" in md and ("PASS" in md or "MISS" in md)
    for _, label in micro.OPERATIONS:
        assert label in md
    assert json_path.with_suffix(".png").exists() == plot


def test_target_verdicts_follow_the_limits():
    def size(share_ratio, combine_ratio, keygen, openssl=None):
        ratios = {
            "share_gmpy2_over_powmod_sec": {"median": share_ratio},
            "combine_check_over_share": {"median": combine_ratio},
        }
        if openssl is not None:  # absent where libcrypto is missing
            ratios["share_openssl_over_openssl_ct"] = {"median": openssl[0]}
            ratios["share_openssl_over_powmod_sec"] = {"median": openssl[1]}
        return {"rounds": 5, "keygen": {"median_s": keygen, "runs": 1}, "ratios": ratios}

    verdicts = {
        (t["id"], t["bits"]): t["pass"]
        for t in micro.evaluate_targets(
            {
                "2048": size(1.01, 0.06, 4.0, (1.02, 0.56)),
                "3072": size(1.2, 0.01, 99.0),
                "4096": size(1.05, 0.05, 60.0, (1.06, 0.55)),
            }
        )
    }
    assert verdicts == {
        ("share_gmpy2_over_powmod_sec", 2048): True,
        ("combine_check_over_share", 2048): False,
        ("share_openssl_over_openssl_ct", 2048): True,
        ("share_openssl_over_powmod_sec", 2048): False,
        ("keygen_median_s", 2048): True,
        ("share_gmpy2_over_powmod_sec", 3072): False,
        ("combine_check_over_share", 3072): True,
        ("share_gmpy2_over_powmod_sec", 4096): True,
        ("combine_check_over_share", 4096): True,
        ("share_openssl_over_openssl_ct", 4096): False,
        ("share_openssl_over_powmod_sec", 4096): True,
        ("keygen_median_s", 4096): False,  # the limit is strict: < 60 s
    }


def test_small_moduli_need_the_test_flag():
    with pytest.raises(SystemExit):
        micro.main(["--bits", "1024", "--no-progress"])


def test_the_cpu_clock_leaves_out_waiting():
    """``--clock cpu`` times this thread's CPU only: a sleep costs (almost) none of it."""
    import time

    op = micro.Op("sleep", lambda: time.sleep(0.02))
    wall = micro.measure_interleaved([op], 2, clock=micro.CLOCKS["wall"])["sleep"]
    cpu = micro.measure_interleaved([op], 2, clock=micro.CLOCKS["cpu"])["sleep"]
    assert min(wall) >= 0.02 and max(cpu) < 0.01
