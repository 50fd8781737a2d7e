"""docs/CONFIGURATION.md documents every config key the schema knows, truthfully, and no other."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from tests.docs.markdown_docs import CONFIGURATION, code_blocks, documented_keys, section

from llamarunner.config import ConfigError, parse_config
from llamarunner.config.migration import is_legacy, migrate_legacy
from llamarunner.config.schema import known_key_paths
from llamarunner.config.store import parse_config_bytes

TEXT = CONFIGURATION.read_text()
ROWS = documented_keys(TEXT)


def test_every_schema_key_is_documented_and_every_documented_key_exists() -> None:
    schema = set(known_key_paths())
    documented = [row.path for row in ROWS]
    duplicates = sorted({path for path in documented if documented.count(path) > 1})
    assert not duplicates, f"documented twice in CONFIGURATION.md: {duplicates}"
    missing = [path for path in known_key_paths() if path not in documented]
    assert not missing, (
        f"config keys missing from docs/CONFIGURATION.md (add a table row under '## Keys' "
        f"with the dotted path in backticks): {missing}")
    unknown = sorted(f"line {row.line}: {row.path}" for row in ROWS if row.path not in schema)
    assert not unknown, (
        "CONFIGURATION.md documents keys the schema does not have (a new section's keys "
        f"also go into known_key_paths() in config/schema.py): {unknown}")


def test_every_key_row_has_a_type_a_default_and_an_effect() -> None:
    for row in ROWS:
        assert row.type and row.default and row.effect, f"line {row.line}: {row.path}"


# Where a `<name>` segment points when a documented default is tried out: "default" is the
# runtime that always exists, and a model entry needs a path to be a model of its own.
_NAMES = {"runtimes": "default", "models": "example"}
_MODEL_BASE = {"path": "/models/example.gguf"}


def _config_with(path: str, value: Any | None) -> dict[str, Any]:
    """A config holding only `path` (with `<name>` filled in) set to `value`, or not at all."""
    parts = [_NAMES.get(path.split(".")[0], "x") if part == "<name>" else part
             for part in path.split(".")]
    data: dict[str, Any] = {}
    if parts[0] == "models":
        data = {"models": {parts[1]: copy.deepcopy(_MODEL_BASE)}}
    if parts[0] == "peers":  # a peer needs its URL to be a peer
        data = {"peers": {parts[1]: {"url": "http://gpu-box:1234/v1"}}}
    if value is None:
        return data
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def _literal(cell: str) -> tuple[bool, Any]:
    """The JSON value a Default cell starts with (`"5m"`, `11434`), if it is one."""
    if not cell.startswith("`"):
        return False, None
    text = cell[1:cell.index("`", 1)]
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None  # a reference such as `scheduler.default_ttl`


def test_documented_defaults_are_the_real_defaults() -> None:
    checked = 0
    for row in ROWS:
        ok, value = _literal(row.default)
        if not ok:
            continue
        with_default = parse_config(_config_with(row.path, value))
        assert with_default == parse_config(_config_with(row.path, None)), (
            f"CONFIGURATION.md line {row.line}: {row.path} defaults to something other "
            f"than {row.default}")
        checked += 1
    # Only keys without a default (a model's path, a peer's url) or with a computed one
    # are skipped.
    assert checked >= len(ROWS) - 4, f"only {checked} of {len(ROWS)} defaults were checked"


@pytest.mark.parametrize("block", [b for b in code_blocks(TEXT) if b.language == "json"],
                         ids=lambda b: f"line{b.line}")
def test_every_json_example_is_a_valid_config(block: Any) -> None:
    try:
        parse_config_bytes(block.text.encode(), f"CONFIGURATION.md:{block.line}")
    except ConfigError as exc:
        raise AssertionError(f"CONFIGURATION.md line {block.line}:\n{exc}") from exc


def test_the_migration_example_converts_as_shown() -> None:
    _, lines = section(TEXT, "## Migrating from llama-runner")
    blocks = [block for block in code_blocks("\n".join(lines)) if block.language == "json"]
    assert len(blocks) == 2, "the migration example is an old file and what it becomes"
    old, new = (json.loads(block.text) for block in blocks)
    assert is_legacy(old)
    assert migrate_legacy(old) == new
    parse_config(new)
