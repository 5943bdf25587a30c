"""``ittc completion bash|zsh|tcsh``: a shell completion script for every command and flag.

Generated from the same parser the command line uses (with shtab), so it never falls
behind. Install it, for bash: ``ittc completion bash > ~/.local/share/bash-completion/
completions/ittc``; for zsh: ``ittc completion zsh > "${fpath[1]}/_ittc"``.
"""

from __future__ import annotations

import argparse

import shtab

from ittc.cli.command import EXIT_OK, Command

__all__ = ["COMPLETION"]


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell to complete for")


def _run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args._parser
    print(shtab.complete(parser, shell=args.shell))
    return EXIT_OK


COMPLETION = Command(
    "completion", "print a shell completion script (bash, zsh, tcsh)", _setup, _run
)
