"""The README cannot drift from the code: every ``NUDGE_*`` name it mentions is read by
something, and every ``nudge ...`` command it shows exists with the options it shows.

An operator copies these lines into a shell; a renamed setting or command would otherwise
fail only on their server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

import cli
import settings
from tests.test_compose import setting_env_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

NOT_SETTINGS = {"NUDGE_TEST_POSTGRES_URL": "tests/conftest.py: the PostgreSQL the tests use"}
"""NUDGE_ names that are not settings.py's and not a command's option, with who reads them."""
DEPLOYING_TOPICS = (
    ".env",
    "NUDGE_SECRET_KEY",
    "nudge token create --role admin",
    "NUDGE_PUBLIC_URL",
    "TLS",
    "8233",
    "pg_dump",
    "temporal_visibility",
    "--scale worker=",
    "nudge db upgrade",
)
ENV_NAME = re.compile(r"\bNUDGE_[A-Z0-9_]*[A-Z0-9]")
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)
COMMAND = re.compile(r"(?<![\w./:@$-])(?<!-U )(?<!\bin )nudge((?:[ \t]+[^\s&|;>#`\\]+)*)")
"""``nudge`` and its words, but not the database role (``-U nudge``) or a loop's list of
databases (``for db in nudge temporal ...``)."""


def section(title: str) -> str:
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL
    )
    assert match, f"the README has no '## {title}' section"
    return match.group(1)


def cli_env_names(command: Any) -> set[str]:
    """Environment variables the command line reads for its options (``NUDGE_TOKEN``)."""
    names = {
        name
        for param in command.params
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
    }
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            names |= cli_env_names(sub)
    return names


def shown_commands() -> list[str]:
    """Each ``nudge ...`` in the README's code, as written (``nudge`` and what follows it)."""
    found: list[str] = []
    for match in CODE.finditer(README):
        code = match.group(1) or match.group(2)
        for line in code.splitlines():
            line = re.sub(r"<[^<>]*>", "X", line.replace(r"\|", "/"))  # <id or name>, a|b in tables
            found += [f"nudge{words}" for words in COMMAND.findall(line) if words.strip()]
    return found


def resolve(words: list[str]) -> tuple[list[str], Any]:
    """The subcommand path the words name and the command at its end (Typer's own Click)."""
    command: Any = typer.main.get_command(cli.app)
    path: list[str] = []
    for word in words:
        if not isinstance(command, TyperGroup) or word not in command.commands:
            break
        command = command.commands[word]
        path.append(word)
    return path, command


COMMANDS = shown_commands()


def test_the_readme_has_a_deploying_section_covering_what_an_operator_needs() -> None:
    deploying = section("Deploying")
    missing = [topic for topic in DEPLOYING_TOPICS if topic not in deploying]
    assert not missing, f"the Deploying section does not mention {missing}"


def test_every_nudge_name_in_the_readme_is_read_by_something() -> None:
    known = setting_env_names(settings.Settings)
    known |= cli_env_names(typer.main.get_command(cli.app)) | set(NOT_SETTINGS)
    unknown = sorted(set(ENV_NAME.findall(README)) - known)
    assert not unknown, f"the README names {unknown}, which no setting or command reads"


def test_the_readme_shows_commands() -> None:
    assert "nudge token create --role admin --name ops" in COMMANDS
    assert "nudge db upgrade" in COMMANDS


@pytest.mark.parametrize("shown", sorted(set(COMMANDS)))
def test_every_command_the_readme_shows_exists_with_its_options(shown: str) -> None:
    words = shown.split()[1:]
    path, command = resolve(words)
    assert not isinstance(command, TyperGroup), (
        f"`{shown}` names no command of `nudge` (after {' '.join(['nudge', *path])!r})"
    )
    result = CliRunner().invoke(cli.app, [*path, "--help"])
    assert result.exit_code == 0, f"`nudge {' '.join(path)} --help` failed:\n{result.output}"
    options = {opt for param in command.params for opt in param.opts if opt.startswith("-")}
    shown_options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", shown))
    unknown = sorted(shown_options - options - {"--help"})
    assert not unknown, f"`{shown}`: `nudge {' '.join(path)}` has no option {unknown}"
