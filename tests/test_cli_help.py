"""Every command and every flag says what it does, and the shell completion knows them."""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys

import pytest

from ittc.cli import COMMANDS, build_parser


def _walk(parser: argparse.ArgumentParser, path: str = "ittc"):
    """(command path, action) for every argument of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", ("subcommand", name, helps.get(name))
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, ("argument", "/".join(action.option_strings) or action.dest, action.help)


def test_every_command_and_flag_has_help():
    missing = [
        f"{path}: {kind} {name}"
        for path, (kind, name, text) in _walk(build_parser())
        if not text or not text.strip()
    ]
    assert not missing, "no help text:\n" + "\n".join(missing)


def test_help_of_every_command_runs():
    for command in COMMANDS:
        out = subprocess.run(
            [sys.executable, "-m", "ittc", command.name, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (command.name, out.stderr)
        assert command.help.split()[0] in out.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_script_loads_and_knows_every_command(tmp_path: pathlib.Path):
    out = subprocess.run(
        [sys.executable, "-m", "ittc", "completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    script = tmp_path / "ittc.bash"
    script.write_text(out.stdout)
    for command in COMMANDS:
        assert command.name in out.stdout
    loaded = subprocess.run(
        ["bash", "-c", f"source {script} && complete -p ittc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0 and "ittc" in loaded.stdout, loaded.stderr
