"""Every `llamarunner ...` command in the docs parses with the real CLI, and the docs show
every command and flag the CLI has; the scripts the README names exist."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.docs.markdown_docs import README, ROOT, code_blocks, inline_code, markdown_files

from llamarunner.cli import build_parser

# A command position (line start, after a prompt, sudo, exec, env assignments or a
# systemd ExecStart=) followed by the program: `llamarunner`, a path ending in it, or
# `python -m llamarunner`.
_COMMAND = re.compile(
    r"^\s*(?:\$\s+|>\s+|PS>\s*)?(?:(?:sudo|exec|nohup)\s+|ExecStart=|[A-Z_][A-Z0-9_]*=\S*\s+)*"
    r"(?:(?:\S*[/\\])?python(?:3(?:\.\d+)?)?(?:\.exe)?\s+-m\s+llamarunner"
    r"|(?:\S*[/\\])?llamarunner(?:\.exe)?)(?=\s|$)(?P<rest>.*)$"
)
# Shell syntax that ends the command's own arguments.
_SHELL_END = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1", "<"}
# Words that stand for a value the reader fills in.
_PLACEHOLDER = re.compile(r"^(<.*>|\.\.\.|…|[A-Z][A-Z_]*|\$\S*|\"?\$@\"?)$")


@dataclass(frozen=True)
class Usage:
    where: str
    text: str
    tokens: tuple[str, ...]


def _usages() -> list[Usage]:
    found: list[Usage] = []
    for path in markdown_files():
        text = path.read_text()
        name = path.relative_to(ROOT).as_posix()
        for block in code_blocks(text):
            for offset, line in enumerate(block.text.splitlines()):
                match = _COMMAND.match(line)
                if match:
                    found.append(_usage(f"{name}:{block.line + 1 + offset}", line,
                                        match.group("rest")))
        for span in inline_code(text):
            match = _COMMAND.match(span)
            if match:
                found.append(_usage(name, span, match.group("rest")))
    return found


def _usage(where: str, text: str, rest: str) -> Usage:
    try:
        tokens = shlex.split(rest, comments=True)
    except ValueError:
        tokens = rest.split()
    kept: list[str] = []
    for token in tokens:
        if token in _SHELL_END or token.startswith(("2>", ">")):
            break
        if token == "\\":
            continue
        kept.append(token)
    return Usage(where, text.strip(), tuple(kept))


@dataclass
class Coverage:
    """What the docs use: command paths, and the options used at each path."""

    paths: set[tuple[str, ...]] = field(default_factory=lambda: {()})
    options: set[tuple[tuple[str, ...], str]] = field(default_factory=set)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return parser._option_string_actions.get(flag)


def _name(path: tuple[str, ...]) -> str:
    return " ".join(("llamarunner", *path))


def _bad_value(action: argparse.Action, value: str) -> str | None:
    """Why `value` cannot follow this option, or None when it can (or is a placeholder)."""
    if not value or value.startswith("-"):
        return "the option needs a value"
    if action.choices is not None:
        # For a closed list only the option's own metavar (or <...>) stands for a value:
        # an unknown upper-case word is more likely a wrong choice than a placeholder.
        named = {action.metavar, action.dest.upper(), action.dest.split("_")[-1].upper(), "..."}
        if value in action.choices or value in named or value.startswith("<"):
            return None
        return f"not one of {list(action.choices)}"
    if _PLACEHOLDER.match(value):
        return None
    if action.type is int:
        try:
            int(value)
        except ValueError:
            return "not a whole number"
    return None


def _check(usage: Usage, root: argparse.ArgumentParser, coverage: Coverage) -> list[str]:
    """Walk one command through the parser tree; the problems found, if any."""
    problems: list[str] = []
    parsers: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = [((), root)]
    tokens = [t.strip("[]") for t in usage.tokens if t.strip("[]")]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.startswith("-"):
            flag, has_value, _ = token.partition("=")
            takes_value = False
            for path, parser in parsers:
                action = _option(parser, flag)
                if action is None:
                    problems.append(f"{usage.where}: `{usage.text}`: "
                                    f"{_name(path)} has no option {flag}")
                    continue
                coverage.options.add((path, action.option_strings[-1]))
                if action.nargs == 0 or has_value:
                    continue
                takes_value = True
                value = tokens[index] if index < len(tokens) else ""
                problem = _bad_value(action, value)
                if problem:
                    problems.append(f"{usage.where}: `{usage.text}`: {flag} {value!r}: "
                                    f"{problem}")
            if takes_value:
                index += 1
            continue
        if _PLACEHOLDER.match(token):
            continue
        next_parsers = []
        for path, parser in parsers:
            children = _subcommands(parser)
            if not children:
                problems.append(f"{usage.where}: `{usage.text}`: unexpected {token!r} after "
                                f"{_name(path)}")
                continue
            # `enable|disable|status` names several commands at once.
            for choice in token.split("|"):
                if choice in children:
                    next_parsers.append(((*path, choice), children[choice]))
                    coverage.paths.add((*path, choice))
                else:
                    problems.append(f"{usage.where}: `{usage.text}`: {_name(path)} has no "
                                    f"command {choice!r} (it has {', '.join(children)})")
        if not next_parsers:
            break
        parsers = next_parsers
    return problems


USAGES = _usages()


def test_the_docs_show_llamarunner_commands() -> None:
    assert any(u.where.startswith("README.md") for u in USAGES)
    assert len(USAGES) >= 10


def test_every_documented_command_and_flag_exists() -> None:
    root = build_parser()
    problems = [problem for usage in USAGES for problem in _check(usage, root, Coverage())]
    assert not problems, "\n".join(problems)


def _all_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for name, child in _subcommands(parser).items():
        found += _all_parsers(child, (*path, name))
    return found


def test_every_command_and_flag_of_the_cli_is_documented() -> None:
    root = build_parser()
    coverage = Coverage()
    for usage in USAGES:
        _check(usage, root, coverage)
    missing = []
    # The global options every command repeats are documented once, before any command.
    global_options = {(a.option_strings[-1], a.dest) for a in root._actions if a.option_strings}
    for path, parser in _all_parsers(root):
        if path not in coverage.paths:
            missing.append(_name(path))
            continue
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            if path and (action.option_strings[-1], action.dest) in global_options:
                continue
            if (path, action.option_strings[-1]) not in coverage.options:
                missing.append(f"{_name(path)} {action.option_strings[-1]}")
    assert not missing, (
        "not shown in README.md or docs/*.md as a `llamarunner ...` command: " + ", ".join(missing))


@pytest.mark.parametrize("script", sorted(set(re.findall(r"\./(scripts/[\w.-]+)",
                                                         README.read_text()))))
def test_scripts_named_in_the_readme_exist_and_are_executable(script: str) -> None:
    path = ROOT / script
    assert path.is_file(), f"README.md names ./{script}, which does not exist"
    assert os.access(path, os.X_OK), f"./{script} is not executable (chmod +x)"


def test_the_readme_names_the_start_and_test_scripts() -> None:
    text = README.read_text()
    assert "./scripts/start" in text and "./scripts/test" in text
    assert all(Path(ROOT / "scripts" / name).is_file() for name in ("start", "test"))
