"""Reads the parts of the Markdown docs that tests check: code blocks, headings, tables, commands.

The conventions parsed here are stated in the docs themselves:

* API_REFERENCE.md: an endpoint is a `###` heading holding one or more `` `METHOD /path` ``
  items; the `##` section above it names its port(s) as "(port 1234)" or
  "(ports 1234 and 11434)". Examples are ```bash blocks of curl commands; a comment line
  `# expect: 404` before a command says that status is the expected answer.
* CONFIGURATION.md: under "## Keys", every key is a table row whose first cell is its
  dotted path in backticks, `<name>` standing for a name the user chooses.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
API_REFERENCE = DOCS / "API_REFERENCE.md"
CONFIGURATION = DOCS / "CONFIGURATION.md"

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A fence may be indented (inside a list item); its block's lines lose that indentation.
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_ENDPOINT = re.compile(rf"`((?:{'|'.join(HTTP_METHODS)})) (/[^`\s]*)`")
_PORTS = re.compile(r"\(ports? ([\d ,and]+)\)")
_EXPECT = re.compile(r"#\s*expect:\s*(\d{3})\s*$")


def markdown_files() -> list[Path]:
    """The documentation set: the top-level README and every Markdown file under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


@dataclass(frozen=True)
class CodeBlock:
    language: str
    text: str
    line: int  # 1-based line of the opening fence


def code_blocks(text: str) -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, language = opening.groups()
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            line = lines[index]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            index += 1
        blocks.append(CodeBlock(language.lower(), "\n".join(body), start))
        index += 1
    return blocks


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    kept: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(2)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            kept.append(line)
    return "\n".join(kept)


def inline_code(text: str) -> list[str]:
    """Every `inline code` span outside fenced blocks."""
    return re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose(text))


# ---------------------------------------------------------------------------------------------
# Shell commands


@dataclass(frozen=True)
class ShellCommand:
    argv: tuple[str, ...]
    source: str  # the command as written, continuation lines joined
    line: int  # 1-based line in the document
    expect: int | None = None  # status from a preceding `# expect: NNN` comment


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(re.sub(r"\\\n", " ", text), comments=True)
    except ValueError:  # "No closing quotation": the command goes on on the next line
        return False
    return True


def shell_commands(block: CodeBlock) -> list[ShellCommand]:
    """The commands of a shell block, split like a shell would (quotes may span lines)."""
    commands: list[ShellCommand] = []
    pending: list[str] = []
    start = 0
    expect: int | None = None
    for offset, line in enumerate(block.text.splitlines()):
        if not pending:
            stripped = line.strip()
            marker = _EXPECT.match(stripped)
            if marker:
                expect = int(marker.group(1))
                continue
            if not stripped or stripped.startswith("#"):
                continue
            start = block.line + 1 + offset
            if stripped.startswith("$ "):
                line = stripped[2:]
        pending.append(line)
        joined = "\n".join(pending)
        if _complete(joined):
            # A backslash-newline is a line continuation, as in a shell.
            source = re.sub(r"\\\n\s*", " ", joined)
            argv = tuple(shlex.split(source, comments=True))
            if argv:
                commands.append(ShellCommand(argv, source, start, expect))
            pending = []
            expect = None
    assert not pending, f"unfinished command at line {start}: {pending}"
    return commands


SHELL_LANGUAGES = ("bash", "sh", "shell", "console")


def shell_blocks(text: str) -> Iterator[CodeBlock]:
    return (block for block in code_blocks(text) if block.language in SHELL_LANGUAGES)


# ---------------------------------------------------------------------------------------------
# API_REFERENCE.md


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    ports: tuple[int, ...]
    heading: str
    line: int


@dataclass
class EndpointSection:
    """A `###` endpoint heading and the text up to the next heading."""

    endpoints: list[Endpoint]
    body: list[str] = field(default_factory=list)


def endpoint_sections(text: str) -> list[EndpointSection]:
    sections: list[EndpointSection] = []
    ports: tuple[int, ...] = ()
    current: EndpointSection | None = None
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(2)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None and line.startswith("## "):
            found = _PORTS.search(line)
            ports = tuple(int(p) for p in re.findall(r"\d+", found.group(1))) if found else ()
            current = None
            continue
        elif fence is None and line.startswith("### "):
            endpoints = [
                Endpoint(method, path, ports, line[4:].strip(), number)
                for method, path in _ENDPOINT.findall(line)
            ]
            current = EndpointSection(endpoints) if endpoints else None
            if current is not None:
                sections.append(current)
            continue
        if current is not None:
            current.body.append(line)
    return sections


# ---------------------------------------------------------------------------------------------
# CONFIGURATION.md


@dataclass(frozen=True)
class KeyRow:
    path: str
    type: str
    default: str
    effect: str
    line: int


def _cells(row: str) -> list[str]:
    # Split on pipes that are not inside backticks (a default may be written `a|b`).
    cells, current, in_code = [], "", False
    for char in row.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def section(text: str, heading: str) -> tuple[int, list[str]]:
    """The lines of a `## heading` section (without the heading) and its first line number."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start + 1, lines[start:end]


def documented_keys(text: str) -> list[KeyRow]:
    """The key rows of the "## Keys" section, in document order."""
    first, lines = section(text, "## Keys")
    rows: list[KeyRow] = []
    for offset, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        key = re.fullmatch(r"`([a-z_<>.]+)`", cells[0])
        if key is None:
            continue
        assert len(cells) == 4, f"line {first + offset}: a key row has 4 cells: {line}"
        rows.append(KeyRow(key.group(1), *cells[1:], line=first + offset))
    return rows
