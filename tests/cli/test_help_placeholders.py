"""Every command's --help names what an option takes in plain words (--budget SECONDS, --only
NAME[,NAME...], --threads N, --json PATH) where typer would write its types (`<float range>`,
`<list[str]>`); an argument's row is its name alone."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from accel.cli import app
from accel.cli.common import plain_placeholder

TYPER_TYPE = re.compile(r"<(str|int|float|path|bool|list\[[a-z]+\])( range)?>")


def _command_paths(command, prefix=()):
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [prefix]
    return [path for name, sub in subcommands.items() for path in _command_paths(sub, (*prefix, name))]


COMMANDS = _command_paths(typer.main.get_command(app))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_no_type_placeholders(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert not TYPER_TYPE.search(result.output), result.output


def test_the_plain_words():
    def help_of(*command: str) -> str:
        return " ".join(CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100"}).output.split())

    optimize = help_of("optimize")
    assert "--budget SECONDS" in optimize and "--only NAME[,NAME...]" in optimize and "--threads N" in optimize
    assert "--json PATH" in optimize and "-r, --recipe NAME|PATH" in optimize
    assert "args... Arguments for a script" in optimize
    profile = help_of("profile")
    assert "--dynamic-dim NAME=VALUE" in profile and "--budget SECONDS" in profile
    assert "[calibrate] FILE Pipeline file" in help_of("gate")


def test_a_type_with_no_word_of_its_own_reads_in_capitals():
    assert plain_placeholder(["--tag"], "list[str]") == "TEXT..."
    assert plain_placeholder(["--ratio"], "float range") == "NUMBER"
    assert plain_placeholder(["--when"], "datetime") == "DATETIME"
