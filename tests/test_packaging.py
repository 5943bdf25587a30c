"""The wheel installs and runs without the source tree: the README's install path."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def docker_context(into: pathlib.Path) -> pathlib.Path:
    """A copy of what ``.dockerignore`` lets through to the container build (it is written
    as an allowlist: ``*``, then ``!path`` for each path let through, then paths inside
    those to leave out again)."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the .dockerignore is an allowlist"
    allowed = [line[1:] for line in lines[1:] if line.startswith("!")]
    left_out = [line for line in lines[1:] if not line.startswith("!")]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in allowed:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=ignore)
        else:
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    for name in left_out:
        if not name.startswith("**"):
            shutil.rmtree(into / name, ignore_errors=True)
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Built as the container image builds it: from what .dockerignore sends the builder
    (so the image's build has everything it needs), not from the source tree itself."""
    out = tmp_path_factory.mktemp("dist")
    context = docker_context(tmp_path_factory.mktemp("context"))
    assert not (context / "benchmarks" / "results").exists()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(context),
        ],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("ittc-*.whl")
    return built


def test_the_wheel_holds_the_library_the_node_and_the_license(wheel: pathlib.Path):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "ittc/__init__.py",
        "ittc/py.typed",
        "ittc/wire/v1/signer_pb2.py",
        "ittc/scheme/ct.py",
        "ittc_node/daemon.py",
        # ittc node --print-systemd-unit / --print-example-config read these.
        "ittc_node/files/ittc-node@.service",
        "ittc_node/files/node.toml",
        # ittc bench micro|cluster|... runs these.
        "benchmarks/__init__.py",
        "benchmarks/micro.py",
        "benchmarks/cluster/cli.py",
    ):
        assert needed in names, needed
    # Three import names and nothing else at the top level (no tests, no results).
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ittc", "ittc_node", "benchmarks"}, top
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert not any(n.startswith(("tests/", "benchmarks/results/")) for n in names)


def test_the_installed_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    """Installed in a fresh virtualenv and run from a folder where the source tree is not
    importable. Its dependencies (grpcio, cryptography...) come from this environment's
    site-packages through PYTHONPATH, which does not run this environment's editable-install
    hook: ittc itself can only come from the wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    deps = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": deps}
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--force-reinstall",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    where = subprocess.run(
        [str(python), "-c", "import ittc, ittc_node; print(ittc.__file__, ittc_node.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    assert str(venv) in where and str(ROOT) not in where, where
    for argv in (
        ["--version"],
        ["keygen", "--help"],
        ["completion", "bash"],
        ["node", "--print-systemd-unit"],
    ):
        out = subprocess.run(
            [str(venv / "bin" / "ittc"), *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            env=env,
        )
        assert out.returncode == 0, (argv, out.stderr)
    bench_help = subprocess.run(
        [str(venv / "bin" / "ittc"), "bench", "micro", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env=env,
    )
    assert bench_help.returncode == 0 and "--keygen-runs" in bench_help.stdout, bench_help
    # A tiny run (one round, one 1024-bit key): its report lands under the current folder.
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [
            str(venv / "bin" / "ittc"),
            "bench",
            "micro",
            "--bits",
            "1024",
            "--insecure-allow-small-modulus-for-tests",
            "--repeat",
            "1",
            "--keygen-runs",
            "0",
            "--split-runs",
            "0",
            "--sample-ms",
            "0.2",
            "--no-plot",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    (report,) = (work / "benchmarks" / "results").glob("micro-*.json")
    facts = json.loads(report.read_text())["machine"]
    assert facts["ittc_commit"] is None and facts["ittc_version"], facts
    (markdown,) = (work / "benchmarks" / "results").glob("micro-*.md")
    assert f"ittc {facts['ittc_version']} (installed, no git checkout)" in markdown.read_text()
    assert "## Median cost per operation" in run.stdout, run.stdout
    node = subprocess.run(
        [str(python), "-m", "ittc_node", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env=env,
    )
    assert node.returncode == 0 and "ittc-node" in node.stdout, node.stderr
