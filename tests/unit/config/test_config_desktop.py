"""The `desktop` config section: default, validation with key paths, round trip, diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamarunner.config import (
    Config,
    ConfigStore,
    ConfigValidationError,
    DesktopConfig,
    defaults,
    diff_configs,
    parse_config,
)


def problems(data: dict[str, object]) -> list[tuple[str, str, int | None]]:
    text = json.dumps(data, indent=2)
    with pytest.raises(ConfigValidationError) as info:
        parse_config(data, text=text)
    return [(p.path, p.message, p.line) for p in info.value.problems]


def test_default_is_off() -> None:
    assert defaults.DEFAULT_START_AT_LOGIN is False
    assert parse_config({}).desktop == DesktopConfig(start_at_login=False)
    assert parse_config({"desktop": {}}).desktop == DesktopConfig()


def test_on() -> None:
    assert parse_config({"desktop": {"start_at_login": True}}).desktop.start_at_login


@pytest.mark.parametrize(("data", "expected"), [
    ({"desktop": {"start_at_login": "yes"}},
     [("desktop.start_at_login", "must be true or false, not the string 'yes'", 3)]),
    ({"desktop": {"start_at_login": 1}},
     [("desktop.start_at_login", "must be true or false, not the number 1", 3)]),
    ({"desktop": {"start_at_logon": True}},
     [("desktop.start_at_logon", "unknown key (did you mean 'start_at_login'?)", 3)]),
    ({"desktop": True}, [("desktop", "must be an object {...}, not true", 2)]),
])
def test_problems_name_the_key_and_line(data: dict[str, object],
                                        expected: list[tuple[str, str, int]]) -> None:
    assert problems(data) == expected


def test_every_problem_is_reported_with_the_others() -> None:
    found = problems({"desktop": {"start_at_login": "on"}, "scheduler": {"max_queue": -1}})
    assert [path for path, _, _ in found] == ["desktop.start_at_login", "scheduler.max_queue"]


def test_comment_keys_are_allowed() -> None:
    config = parse_config({"desktop": {"_note": "mine", "start_at_login": True}})
    assert config.desktop.start_at_login
    assert config.to_dict()["desktop"] == {"_note": "mine", "start_at_login": True}


def test_written_only_when_set_or_already_there() -> None:
    assert "desktop" not in Config.default().to_dict()
    assert parse_config({"desktop": {"start_at_login": True}}).to_dict()["desktop"] == \
        {"start_at_login": True}
    # Turned off again, the section stays: the user has seen it in the file.
    assert parse_config({"desktop": {"start_at_login": False}}).to_dict()["desktop"] == \
        {"start_at_login": False}


def test_round_trip_through_the_store(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    data = store.load().to_dict()
    data["desktop"] = {"start_at_login": True}
    saved = store.save(data)
    assert saved.desktop.start_at_login
    assert ConfigStore(store.path).load() == saved


def test_diff_reports_a_desktop_change_and_nothing_else() -> None:
    off = parse_config({})
    on = parse_config({"desktop": {"start_at_login": True}})
    changes = diff_configs(off, on)
    assert changes.desktop_changed and not changes.library_changed
    assert not changes.listeners_changed and not changes.models_restart
    assert diff_configs(on, on).empty
