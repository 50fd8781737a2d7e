"""The reference's table of status codes: each row is produced by some test of the suite.

A row with a `code` needs a test file that asserts that code and that status; a row
without one (a plain 404, 405...) needs a test asserting the status itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.markdown_docs import API_REFERENCE

TESTS = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\| (?P<status>\d{3}) \| (?P<code>`[a-z_]+`|—) \|")


def _rows() -> list[tuple[int, str | None]]:
    text = API_REFERENCE.read_text()
    section = text[text.index("### Status codes"):text.index("## Security")]
    rows = []
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            code = match.group("code")
            rows.append((int(match.group("status")), None if code == "—" else code.strip("`")))
    return rows


def _test_sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in TESTS.rglob("test_*.py")
            if "docs" not in path.relative_to(TESTS).parts}


def test_the_table_lists_the_codes() -> None:
    rows = _rows()
    assert len(rows) >= 25
    assert (429, "rate_limit_exceeded") in rows and (401, "invalid_api_key") in rows


def test_every_status_and_code_in_the_table_is_produced_by_a_test() -> None:
    sources = _test_sources()
    missing = []
    for status, code in _rows():
        asserted = re.compile(rf"(==|\(|\[|,)\s*{status}\b")
        if code is None:
            found = any(asserted.search(text) for text in sources.values())
        else:
            found = any(f'"{code}"' in text and asserted.search(text)
                        for text in sources.values())
        if not found:
            missing.append(f"{status} {code or ''}".strip())
    assert not missing, f"no test produces these documented answers: {missing}"
