"""The Settings window's Security tab on a live Service: named keys, the main key, hosts,
origins and limits, validated like the file and saved through the same merge.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLineEdit,
    QMessageBox,
    QTableWidgetItem,
    QWidget,
)
from pytestqt.qtbot import QtBot

from llamarunner.config import ConfigStore, parse_config
from llamarunner.config.schema import ApiKeyConfig, SecurityConfig
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.widgets.security_keys import (
    KEY,
    MODELS,
    NAME,
    REQUESTS,
    TOKENS,
    generate_key,
    mask_key,
    parse_limit,
    split_models,
)
from llamarunner.gui.windows.settings import SettingsWindow, key_note
from llamarunner.service import Service

ALICE = "alice-0123456789abcdef"
CI = "ci-key-fedcba9876543210"
MAIN = "main-key-0123456789abcd"
SCREENSHOT = Path("/tmp/settings_security.png")


class Editor:
    """A started Service, the real bridge and the settings window on its Security tab."""

    def __init__(self, driver: Any, service: Service, window: SettingsWindow) -> None:
        self.driver = driver
        self.service = service
        self.window = window
        self.table = window.keys_table

    def click(self, widget: QWidget) -> None:
        async def press() -> None:  # inside the loop, as in the app
            QtBot.mouseClick(widget, Qt.MouseButton.LeftButton)

        self.driver.run(press())

    def open_tab(self, title: str) -> None:
        tabs = self.window.tabs
        index = next(i for i in range(tabs.count()) if tabs.tabText(i) == title)
        bar = tabs.tabBar()
        QtBot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
        assert tabs.currentIndex() == index

    def apply(self) -> None:
        """Apply and wait until the running app has the result."""
        self.click(self.window.apply_button)
        self.driver.until(lambda: self.window.status_label.text() == "Saved and applied.",
                          timeout=15, message="the apply")

    @property
    def file_bytes(self) -> bytes:
        return self.service.store.path.read_bytes()

    def on_disk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.service.store.path.read_text())
        return data

    def disk_keys(self) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = self.on_disk()["security"]["api_keys"]
        return keys

    def item(self, row: int, column: int) -> QTableWidgetItem:
        item = self.table.item(row, column)
        assert item is not None
        return item

    def cell(self, row: int, column: int) -> str:
        return self.item(row, column).text()

    def type_key(self, row: int, text: str) -> None:
        """Type a key into a row's key cell, as a user does (double-click, type, Enter)."""
        item = self.table.item(row, KEY)
        assert item is not None
        self.table.setCurrentItem(item)
        self.table.editItem(item)
        editor = self.table.findChild(QLineEdit)
        assert isinstance(editor, QLineEdit)
        assert editor.text() == ""  # the key is never put in the editor
        assert editor.echoMode() == QLineEdit.EchoMode.Password
        QtBot.keyClicks(editor, text)
        QtBot.keyClick(editor, Qt.Key.Key_Return)
        # The delegate commits on Enter through a queued call.
        self.driver.until(lambda: self.table.state() == QAbstractItemView.State.NoState,
                          timeout=5, message="the key cell's editor to close")


OpenEditor = Callable[..., Editor]


@pytest.fixture
def open_editor(driver: Any, tiny_config: Callable[..., Path], tmp_path: Path
                ) -> Iterator[OpenEditor]:
    opened: list[tuple[Service, ServiceBridge, SettingsWindow]] = []

    def start(**extra: Any) -> Editor:
        config = tiny_config(sources={"ollama": {"enabled": False},
                                      "lmstudio": {"enabled": False}}, **extra)
        service = Service(ConfigStore(config), runner_log_dir=tmp_path / "runners")
        assert not driver.run(service.start())
        bridge = ServiceBridge(service, capture_logs=False)
        window = SettingsWindow(service, bridge)
        window.resize(QSize(860, 620))
        window.show()
        opened.append((service, bridge, window))
        editor = Editor(driver, service, window)
        editor.open_tab("Security")
        return editor

    yield start
    for service, bridge, window in opened:
        window.hide()
        driver.run(service.stop())
        bridge.close()


TEAM: dict[str, Any] = {
    "_note": "one key per person",
    "api_keys": [
        {"name": "alice", "key": ALICE, "models": ["tiny"], "requests_per_minute": 60},
        {"name": "ci", "key": CI},
    ],
}


@pytest.fixture
def team(open_editor: OpenEditor) -> Editor:
    """The window over a config with two named keys (and a comment in the section)."""
    return open_editor(security=TEAM)


def test_keys_are_shown_masked_with_their_scopes_and_limits(
        team: Editor, qtbot: QtBot) -> None:
    table = team.table
    assert table.rowCount() == 2
    assert [team.cell(0, c) for c in (NAME, KEY, MODELS, REQUESTS, TOKENS)] == \
        ["alice", "alic…cdef", "tiny", "60", ""]
    assert [team.cell(1, c) for c in (NAME, KEY, MODELS, REQUESTS, TOKENS)] == \
        ["ci", "ci-k…3210", "", "", ""]
    # The full keys are in the table's data, never in its text or tooltips.
    assert [table.key(row) for row in range(2)] == [ALICE, CI]
    shown = [(team.cell(r, c), team.item(r, c).toolTip())
             for r in range(2) for c in range(table.columnCount())]
    assert not any(secret in text for secret in (ALICE, CI) for pair in shown for text in pair)
    # Nothing selected yet: nothing to copy or revoke.
    assert not team.window.copy_key_button.isEnabled()
    assert not team.window.revoke_key_button.isEnabled()
    table.selectRow(1)
    assert team.window.copy_key_button.isEnabled()
    assert team.window.revoke_key_button.isEnabled()


def test_add_key_writes_a_generated_named_key(team: Editor) -> None:
    before = team.on_disk()
    team.click(team.window.add_key_button)
    table = team.table
    assert table.rowCount() == 3 and team.cell(2, NAME) == "key-3"
    assert table.selected_row() == 2
    new_key = table.key(2)
    assert len(new_key) >= 16 and team.cell(2, KEY) == mask_key(new_key)

    team.apply()
    keys = team.disk_keys()
    assert keys[:2] == before["security"]["api_keys"]
    assert keys[2] == {"name": "key-3", "key": new_key}
    # The rest of the section, its comment included, is as it was.
    assert team.on_disk()["security"]["_note"] == "one key per person"
    assert team.service.config.security.api_keys[2] == ApiKeyConfig("key-3", new_key)
    # Still the same rows after the reload that follows an apply.
    assert [table.name(row) for row in range(table.rowCount())] == ["alice", "ci", "key-3"]


def test_the_first_key_turns_the_proxies_note_from_open_to_protected(
        open_editor: OpenEditor) -> None:
    editor = open_editor()
    note = editor.window.proxies_note
    assert note.text().startswith("Local API servers")
    assert "No API key is set" in note.text()
    before = editor.on_disk()
    assert "security" not in before

    editor.click(editor.window.add_key_button)
    assert editor.cell(0, NAME) == "key-1"
    editor.apply()
    saved = editor.on_disk()
    assert saved["security"]["api_keys"] == [{"name": "key-1", "key": editor.table.key(0)}]
    assert editor.service.config.security.requires_key
    assert "No API key" not in note.text() and "no password" not in note.text().lower()
    assert "Every request needs an API key (1 named key;" in note.text()


def test_copy_key_puts_the_whole_key_on_the_clipboard(team: Editor) -> None:
    clipboard = QGuiApplication.clipboard()
    clipboard.setText("something else")
    team.table.selectRow(1)
    team.click(team.window.copy_key_button)
    assert clipboard.text() == CI
    assert team.window.status_label.text() == "Copied the key of 'ci' to the clipboard."
    assert CI not in team.window.status_label.text()


def test_revoke_asks_first_then_removes_the_key(team: Editor,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    answer = QMessageBox.StandardButton.Cancel

    def question(_parent: QWidget, _title: str, text: str,
                 *_args: Any) -> QMessageBox.StandardButton:
        asked.append(text)
        return answer

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    before = team.file_bytes
    team.table.selectRow(0)
    team.click(team.window.revoke_key_button)
    assert len(asked) == 1 and "'alice'" in asked[0]
    assert team.table.rowCount() == 2  # cancelled: nothing happened

    answer = QMessageBox.StandardButton.Yes
    team.click(team.window.revoke_key_button)
    assert [team.table.name(r) for r in range(team.table.rowCount())] == ["ci"]
    assert team.file_bytes == before  # not before Apply
    team.apply()
    assert team.disk_keys() == [{"name": "ci", "key": CI}]
    assert [k.name for k in team.service.config.security.api_keys] == ["ci"]


def test_a_duplicate_name_or_short_key_is_shown_and_nothing_is_written(
        team: Editor) -> None:
    window, table = team.window, team.table
    before = team.file_bytes
    team.item(1, NAME).setText("alice")
    team.click(window.apply_button)
    assert window.keys_error.isVisible()
    assert window.keys_error.text() == \
        "security.api_keys[1].name: another key is already named 'alice'"
    assert "already named" in team.item(1, NAME).toolTip()
    assert team.file_bytes == before
    assert window.status_label.text() == ""

    team.item(1, NAME).setText("ci")
    team.type_key(1, "0123456789")
    assert table.key(1) == "0123456789" and team.cell(1, KEY) == "••••••••••"
    team.click(window.apply_button)
    assert window.keys_error.text().startswith(
        "security.api_keys[1].key: use at least 16 characters")
    assert "already named" not in window.keys_error.text()
    assert not window.general_error.isVisible()
    assert team.file_bytes == before  # byte for byte

    # The same key as another one is refused too.
    team.type_key(1, ALICE)
    team.click(window.apply_button)
    assert window.keys_error.text() == ("security.api_keys[1].key: this key is already in "
                                        "use; give every key its own value")
    assert team.file_bytes == before

    window.revert_button.click()
    assert not window.keys_error.isVisible()
    assert table.key(1) == CI
    assert "already" not in team.item(1, KEY).toolTip()


def test_models_and_limits_round_trip(team: Editor) -> None:
    team.item(1, MODELS).setText("tiny,  other-model ,")
    team.item(1, REQUESTS).setText("30")
    team.item(1, TOKENS).setText("20000")
    team.item(0, MODELS).setText("")
    team.item(0, REQUESTS).setText("")
    team.apply()
    assert team.disk_keys() == [
        {"name": "alice", "key": ALICE},
        {"name": "ci", "key": CI, "models": ["tiny", "other-model"],
         "requests_per_minute": 30, "tokens_per_minute": 20000},
    ]
    assert team.service.config.security.api_keys[1] == ApiKeyConfig(
        "ci", CI, ("tiny", "other-model"), 30, 20000)
    # Shown back as saved.
    assert [team.cell(1, c) for c in (MODELS, REQUESTS, TOKENS)] == \
        ["tiny, other-model", "30", "20000"]
    assert [team.cell(0, c) for c in (MODELS, REQUESTS, TOKENS)] == ["", "", ""]

    before = team.file_bytes
    team.item(1, TOKENS).setText("0")
    team.click(team.window.apply_button)
    assert team.window.keys_error.text() == \
        "security.api_keys[1].tokens_per_minute: must be 1 or more, not 0"
    assert team.file_bytes == before


def test_main_key_is_masked_and_validated(team: Editor) -> None:
    window = team.window
    edit = window.api_key_edit
    assert edit.text() == "" and edit.echoMode() == QLineEdit.EchoMode.Password
    QtBot.keyClicks(edit, "short")
    window.show_key_check.setChecked(True)
    assert edit.echoMode() == QLineEdit.EchoMode.Normal
    window.show_key_check.setChecked(False)
    assert edit.echoMode() == QLineEdit.EchoMode.Password
    before = team.file_bytes
    team.click(window.apply_button)
    assert window.security_errors["api_key"].text().startswith("use at least 16 characters")
    assert team.file_bytes == before

    edit.setText(MAIN)
    QtBot.keyClicks(window.api_key_env_edit, "MY_KEY")
    team.click(window.apply_button)
    assert window.security_errors["api_key_env"].text() == \
        "set either api_key or api_key_env, not both"
    assert team.file_bytes == before

    window.api_key_env_edit.clear()
    team.apply()
    assert team.on_disk()["security"]["api_key"] == MAIN
    assert team.service.config.security.resolved_api_key() == MAIN
    assert "(the main key or 2 named keys;" in window.proxies_note.text()


def test_hosts_origins_and_client_limits_are_saved_and_validated(
        open_editor: OpenEditor) -> None:
    editor = open_editor()
    window = editor.window
    before = editor.file_bytes
    hosts, origins = window.list_edits["allowed_hosts"], window.list_edits["cors_origins"]
    hosts.setPlainText("my-pc.local\n\n  llm.home.arpa  \n")
    origins.setPlainText("https://app.example.com\nnot an origin\n")
    editor.click(window.apply_button)
    assert window.security_errors["cors_origins"].text().startswith(
        "entry 2: must look like")
    assert "'not an origin'" in window.security_errors["cors_origins"].text()
    assert not window.security_errors["allowed_hosts"].isVisible()
    assert editor.file_bytes == before

    origins.setPlainText("https://app.example.com\nchrome-extension://*")
    window.client_limits["client_requests_per_minute"].setValue(120)
    window.body_edits["body_timeout"].setText("90s")
    editor.apply()
    security = editor.on_disk()["security"]
    assert security["allowed_hosts"] == ["my-pc.local", "llm.home.arpa"]
    assert security["cors_origins"] == ["https://app.example.com", "chrome-extension://*"]
    assert security["client_requests_per_minute"] == 120
    assert "client_tokens_per_minute" not in security  # 0 (off) is not written
    assert security["body_timeout"] == "90s"
    running = editor.service.config.security
    assert running.allowed_hosts == ("my-pc.local", "llm.home.arpa")
    assert running.client_requests_per_minute == 120 and running.body_timeout == 90
    assert hosts.toPlainText() == "my-pc.local\nllm.home.arpa"

    window.body_edits["max_body_bytes"].setText("12")
    window.body_edits["body_timeout"].setText("later")
    before = editor.file_bytes
    editor.click(window.apply_button)
    assert window.security_errors["max_body_bytes"].text() == "must be 1024 or more, not 12"
    assert "'later' is not a duration" in window.security_errors["body_timeout"].text()
    assert editor.file_bytes == before


def test_other_tabs_do_not_add_a_security_section(open_editor: OpenEditor) -> None:
    editor = open_editor()
    assert "security" not in editor.on_disk()
    editor.open_tab("Scheduler")
    editor.window.max_queue.setValue(7)
    editor.apply()
    saved = editor.on_disk()
    assert saved["scheduler"]["max_queue"] == 7
    assert "security" not in saved


def test_a_key_added_in_the_raw_tab_shows_in_the_table(team: Editor) -> None:
    window = team.window
    team.open_tab("Raw JSON")
    data = json.loads(window.raw_edit.toPlainText())
    data["security"]["api_keys"].append({"name": "bob", "key": "bob-" + "x" * 20,
                                         "tokens_per_minute": 500})
    window.raw_edit.setPlainText(json.dumps(data, indent=2))
    team.open_tab("Security")
    assert team.table.rowCount() == 3
    assert [team.cell(2, c) for c in (NAME, KEY, TOKENS)] == ["bob", "bob-…xxxx", "500"]


def test_screenshot_of_the_security_tab(team: Editor, qtbot: QtBot) -> None:
    window = team.window
    window.api_key_edit.setText(MAIN)
    window.list_edits["allowed_hosts"].setPlainText("my-pc.local")
    window.list_edits["cors_origins"].setPlainText("https://app.example.com")
    team.click(window.add_key_button)
    team.item(2, NAME).setText("bob")
    team.item(1, NAME).setText("alice")
    team.click(window.apply_button)  # a duplicate name: shows how problems look
    assert window.keys_error.isVisible()
    qtbot.wait(50)
    assert window.grab().save(str(SCREENSHOT))


def test_small_parts() -> None:
    assert mask_key("alice-0123456789abcdef") == "alic…cdef"
    assert mask_key("short") == "•••••"
    assert len(generate_key()) == 32 and " " not in generate_key()
    assert generate_key() != generate_key()
    assert split_models(" a, b ,,c ") == ["a", "b", "c"]
    assert (parse_limit(""), parse_limit(" 60 "), parse_limit("6x")) == (None, 60, "6x")
    assert "No API key is set" in key_note(SecurityConfig())
    two = (ApiKeyConfig("a", "a" * 16), ApiKeyConfig("b", "b" * 16))
    assert "(2 named keys;" in key_note(SecurityConfig(api_keys=two))
    assert "(the main key or 2 named keys;" in key_note(
        SecurityConfig(api_key=MAIN, api_keys=two))
    env = key_note(SecurityConfig(api_key_env="LLAMARUNNER_TEST_UNSET_VARIABLE"))
    assert "$LLAMARUNNER_TEST_UNSET_VARIABLE, which is not set for this app, so they " \
        "refuse to start" in env
    assert "(the key in $PATH or 2 named keys;" in key_note(
        SecurityConfig(api_key_env="PATH", api_keys=two))
    # The section as the file has it parses to what the table would show.
    assert parse_config({"security": TEAM}).security.api_keys[0].requests_per_minute == 60
