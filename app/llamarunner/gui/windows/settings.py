"""The config editor: form tabs and raw JSON over config.json, validated before every write."""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from PySide6.QtCore import QRegularExpression, QSize, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ... import paths
from ...config import (
    Config,
    ConfigError,
    ConfigValidationError,
    Problem,
    format_duration,
    parse_config,
    render_path,
)
from ...config.locate import is_comment_key
from ...config.schema import SecurityConfig
from ...config.store import ConfigConflictError, ConfigNotSavedError, dump_config_text
from ...library.table import human_size
from ...proxy.servers import API_TITLES
from ...runtime.resolver import RuntimeNotFoundError, find_runtime
from ...service import Service
from ..widgets.security_keys import FIELDS as KEY_FIELDS
from ..widgets.security_keys import MODELS as KEY_MODELS
from ..widgets.security_keys import ApiKeysTable, KeyProblems, parse_limit
from ._common import (
    ERROR_COLOR,
    OK_COLOR,
    BridgeLike,
    ErrorLabel,
    FieldErrors,
    ToolWindow,
    monospace_font,
    with_error,
)

log = logging.getLogger(__name__)

PROXY_NAMES: Final = ("ollama", "lmstudio")
SOURCE_TITLES: Final = {"ollama": "Ollama's models", "lmstudio": "LM Studio's models"}
SOURCE_HINTS: Final = {
    "ollama": "Ollama's models folder; empty: $OLLAMA_MODELS, else ~/.ollama/models",
    "lmstudio": "LM Studio's models folder; empty: the one in LM Studio's settings, else "
                "~/.lmstudio/models",
}
_DURATION_HELP: Final = "Seconds (90) or with a unit: 250ms, 90s, 5m, 1h30m."
_DURATION_KEYS: Final = ("default_ttl", "load_timeout", "stop_grace")
SCHEDULER_LABELS: Final = {
    "max_loaded_models": "Models loaded at once:",
    "default_ttl": "Unload idle models after:",
    "max_queue": "Requests that may wait:",
    "load_timeout": "Loading may take up to:",
    "stop_grace": "Stopping may take up to:",
}
(_RT_NAME, _RT_PATH, _RT_BROWSE, _RT_STATUS) = range(4)
# Security fields shown as one value each (the keys table and the lists are apart).
_SECURITY_LIMITS: Final = ("client_requests_per_minute", "client_tokens_per_minute")
_SECURITY_LISTS: Final = ("allowed_hosts", "cors_origins")
_SECURITY_BODY: Final = ("max_body_bytes", "max_audio_bytes", "body_timeout")
_PER_MINUTE_MAX: Final = 2_000_000_000


@dataclass
class ProxyFields:
    """The widgets of one proxy's group box."""

    enabled: QCheckBox
    host: QLineEdit
    port: QSpinBox
    listening: QLabel
    host_error: ErrorLabel
    port_error: ErrorLabel
    error: ErrorLabel


@dataclass
class SourceFields:
    """One other app's model store: listed or not, and where (empty = found by itself)."""

    enabled: QCheckBox
    path: QLineEdit
    error: ErrorLabel


class RuntimeStatus(QLabel):
    """A runtime row's "found / not found" cell; a validation problem replaces it in red
    until the errors are cleared, then the check result comes back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setWordWrap(False)
        self.setContentsMargins(4, 0, 4, 0)
        self._check = ""
        self._found = False

    def set_check(self, text: str, found: bool) -> None:
        self._check, self._found = text, found
        self.clear_error()

    def show_error(self, message: str) -> None:
        self.setText(message)
        self.setToolTip(message)
        self.setStyleSheet(f"color: {ERROR_COLOR};")

    def clear_error(self) -> None:
        self.setText(self._check)
        self.setToolTip(self._check)
        self.setStyleSheet(f"color: {OK_COLOR if self._found else ERROR_COLOR};")

    @property
    def found(self) -> bool:
        return self._found


def runtime_check(spec: str) -> tuple[str, bool]:
    """"found: /usr/bin/llama-server (PATH)" or "not found: <why>", for a runtime path."""
    try:
        found = find_runtime(spec.strip())
    except RuntimeNotFoundError as exc:
        return f"not found: {exc.reason}", False
    how = {"path": "at that path", "PATH": "on PATH", "env": "via $LLAMARUNNER_LLAMA_SERVER",
           "bundled": "bundled with the app", "cache": "cached build"}.get(found.source,
                                                                         found.source)
    version = f", version {found.version}" if found.version else ""
    return f"found {how}{version}: {found.path}", True


def key_note(security: SecurityConfig) -> str:
    """What the Proxies tab says about API keys: whether clients need one, and which."""
    lead = "Local API servers that clients connect to. "
    if not security.requires_key:
        return (lead + "No API key is set, so any program on this computer can use them. "
                "Keep the host 127.0.0.1 unless other machines must reach them: listening "
                "on any other address needs an API key (Security tab).")
    if security.api_key_env and not security.resolved_api_key():
        # proxy.security.refusal: then no listener starts, named keys or not.
        return (lead + f"The main key is to come from ${security.api_key_env}, which is not "
                "set for this app, so they refuse to start until it is or the Security tab "
                "says otherwise.")
    accepted: list[str] = []
    if security.api_key:
        accepted.append("the main key")
    elif security.api_key_env:
        accepted.append(f"the key in ${security.api_key_env}")
    named = len(security.api_keys)
    if named:
        accepted.append(f"{named} named key{'s' if named != 1 else ''}")
    return (lead + f"Every request needs an API key ({' or '.join(accepted)}; see the "
            "Security tab), so they may also listen on addresses other machines can reach. "
            "Health checks stay open.")


def _lines(edit: QPlainTextEdit) -> list[str]:
    """A one-entry-per-line box as a list, blank lines dropped."""
    return [line.strip() for line in edit.toPlainText().splitlines() if line.strip()]


def _security_in_use(values: Mapping[str, Any]) -> bool:
    """Whether the security section the form describes differs from the defaults (what
    decides writing a section the file does not have yet); an invalid one counts, so that
    validation gets to say what is wrong with it.
    """
    try:
        return parse_config({"security": dict(values)}).security != SecurityConfig()
    except ConfigError:
        return True


class SettingsWindow(ToolWindow):
    """Edits config.json through form tabs or as raw JSON; Apply validates, saves atomically
    and applies the result to the running Service (listeners rebound, runners restarted
    only when their settings changed). An invalid config is never written.
    """

    def __init__(self, service: Service, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__("settings", "Settings", QSize(860, 620), parent)
        self._service = service
        self._bridge = bridge
        self._base: dict[str, Any] = {}
        # The config as last loaded into the window: what Apply's change is measured from,
        # so that only the edits made here reach the file, merged into it as it is then.
        self._loaded: dict[str, Any] = {}
        self._filling = False
        self._dirty = False
        self._raw_dirty = False
        self._previous_tab = 0

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_proxies(), "Proxies")
        self.tabs.addTab(self._build_runtimes(), "Runtimes")
        self.tabs.addTab(self._build_scheduler(), "Scheduler")
        self.tabs.addTab(self._build_folders(), "Model folders")
        self.security_tab = self._build_security()
        self.tabs.addTab(self.security_tab, "Security")
        self.raw_tab = self._build_raw()
        self.tabs.addTab(self.raw_tab, "Raw JSON")

        self.general_error = ErrorLabel()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.path_label = QLabel(f"Config file: {service.store.path}")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setStyleSheet("color: palette(placeholder-text);")
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Drop the edits and show the running configuration")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setDefault(True)
        self.apply_button.setToolTip("Check, save and apply now; no restart needed")
        buttons = QHBoxLayout()
        buttons.addWidget(self.status_label, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.apply_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.path_label)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.general_error)
        layout.addLayout(buttons)

        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.apply_button.clicked.connect(self.apply)
        self.revert_button.clicked.connect(self.revert)
        bridge.config_applied.connect(self._on_config_applied)
        bridge.config_rejected.connect(self._on_config_rejected)
        bridge.listener_changed.connect(self._on_listener_changed)

        self.load_config(service.config)

    # ---- building the tabs -----------------------------------------------------------

    def _build_proxies(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        # Says whether clients need a key: filled from the config (see key_note).
        self.proxies_note = QLabel()
        self.proxies_note.setWordWrap(True)
        layout.addWidget(self.proxies_note)
        self.proxy_fields: dict[str, ProxyFields] = {}
        for name in PROXY_NAMES:
            box = QGroupBox(API_TITLES.get(name, name))
            form = QFormLayout(box)
            enabled = QCheckBox("Enabled")
            host = QLineEdit()
            port = QSpinBox()
            port.setRange(0, 65535)
            port.setToolTip("0 lets the system pick a free port")
            listening = QLabel()
            listening.setWordWrap(True)
            fields = ProxyFields(enabled, host, port, listening, ErrorLabel(), ErrorLabel(),
                                 ErrorLabel())
            form.addRow(enabled)
            form.addRow("Host:", with_error(host, fields.host_error))
            form.addRow("Port:", with_error(port, fields.port_error))
            form.addRow("Now:", listening)
            form.addRow(fields.error)
            enabled.toggled.connect(self._mark_dirty)
            host.textEdited.connect(self._mark_dirty)
            port.valueChanged.connect(self._mark_dirty)
            self.proxy_fields[name] = fields
            layout.addWidget(box)
        layout.addStretch(1)
        return page

    def _build_runtimes(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        note = QLabel("llama-server programs models can use: a full path, or a command on "
                      "PATH. Models without a runtime use \"default\".")
        note.setWordWrap(True)
        self.runtimes_table = QTableWidget(0, 4)
        self.runtimes_table.setHorizontalHeaderLabels(["Name", "Path", "", "Check"])
        header = self.runtimes_table.horizontalHeader()
        header.setSectionResizeMode(_RT_NAME, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(_RT_PATH, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(_RT_BROWSE, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(_RT_STATUS, QHeaderView.ResizeMode.Stretch)
        self.runtimes_table.verticalHeader().setVisible(False)
        # One line per runtime: long paths are elided in the middle, the tooltip has all.
        self.runtimes_table.setWordWrap(False)
        self.runtimes_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.runtimes_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.add_runtime_button = QPushButton("Add runtime")
        self.remove_runtime_button = QPushButton("Remove runtime")
        self.runtimes_error = ErrorLabel()
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_runtime_button)
        buttons.addWidget(self.remove_runtime_button)
        buttons.addStretch(1)
        layout.addWidget(note)
        layout.addWidget(self.runtimes_table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.runtimes_error)
        self.runtimes_table.itemChanged.connect(self._on_runtime_item_changed)
        self.add_runtime_button.clicked.connect(self._add_runtime)
        self.remove_runtime_button.clicked.connect(self._remove_runtime)
        return page

    def _build_scheduler(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.max_loaded = QSpinBox()
        self.max_loaded.setRange(1, 64)
        self.max_loaded.setToolTip("Models kept in memory at once; loading one more unloads "
                                   "the least recently used")
        self.max_queue = QSpinBox()
        self.max_queue.setRange(0, 1_000_000)
        self.max_queue.setToolTip("Requests that may wait for a busy model before new ones "
                                  "are refused")
        self.duration_edits: dict[str, QLineEdit] = {}
        self.scheduler_errors: dict[str, ErrorLabel] = {}
        tips = {
            "default_ttl": "How long an idle model stays loaded (-1: until unloaded by hand). ",
            "load_timeout": "How long llama-server may take to become ready. ",
            "stop_grace": "How long a stopping llama-server gets before it is killed. ",
        }
        for key in ("max_loaded_models", "default_ttl", "max_queue", "load_timeout",
                    "stop_grace"):
            error = ErrorLabel()
            self.scheduler_errors[key] = error
            field: QWidget
            if key in _DURATION_KEYS:
                edit = QLineEdit()
                edit.setToolTip(tips[key] + _DURATION_HELP)
                edit.setPlaceholderText(_DURATION_HELP)
                edit.textEdited.connect(self._mark_dirty)
                self.duration_edits[key] = edit
                field = edit
            else:
                field = self.max_loaded if key == "max_loaded_models" else self.max_queue
            field.setToolTip(f"{field.toolTip()}\n(scheduler.{key} in the config file)".strip())
            form.addRow(SCHEDULER_LABELS[key], with_error(field, error))
        self.max_loaded.valueChanged.connect(self._mark_dirty)
        self.max_queue.valueChanged.connect(self._mark_dirty)
        return page

    def _build_folders(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.folders_note = QLabel()
        self.folders_note.setWordWrap(True)
        self.folders_list = QListWidget()
        self.folders_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.add_folder_button = QPushButton("Add folder…")
        self.remove_folder_button = QPushButton("Remove")
        self.folders_error = ErrorLabel()
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_folder_button)
        buttons.addWidget(self.remove_folder_button)
        buttons.addStretch(1)
        layout.addWidget(self.folders_note)
        layout.addWidget(self.folders_list, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.folders_error)
        layout.addWidget(self._build_sources())
        self.add_folder_button.clicked.connect(self._add_folder)
        self.remove_folder_button.clicked.connect(self._remove_folders)
        self.folders_list.itemChanged.connect(self._mark_dirty)
        return page

    def _build_sources(self) -> QGroupBox:
        box = QGroupBox("Models of other apps (read in place, never copied or changed)")
        form = QFormLayout(box)
        self.source_fields: dict[str, SourceFields] = {}
        for name, title in SOURCE_TITLES.items():
            fields = SourceFields(QCheckBox(title), QLineEdit(), ErrorLabel())
            fields.path.setPlaceholderText("found automatically")
            fields.path.setToolTip(SOURCE_HINTS[name])
            form.addRow(fields.enabled, with_error(fields.path, fields.error))
            fields.enabled.toggled.connect(self._mark_dirty)
            fields.path.textEdited.connect(self._mark_dirty)
            self.source_fields[name] = fields
        return box

    def _build_security(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        note = QLabel("With any key set, every request but the health checks needs one "
                      "('Authorization: Bearer <key>' or 'x-api-key: <key>'). Named keys "
                      "can be kept to some models and rates.")
        note.setWordWrap(True)
        layout.addWidget(note)

        keys_box = QGroupBox("Named keys (security.api_keys)")
        keys_layout = QVBoxLayout(keys_box)
        self.keys_table = ApiKeysTable()
        self.keys_error = ErrorLabel()
        self.key_problems = KeyProblems(self.keys_table, self.keys_error)
        self.add_key_button = QPushButton("Add key")
        self.add_key_button.setToolTip("A new row with a generated key; name it, then Apply")
        self.copy_key_button = QPushButton("Copy key")
        self.copy_key_button.setToolTip("Copy the selected row's whole key to the clipboard")
        self.revoke_key_button = QPushButton("Revoke")
        self.revoke_key_button.setToolTip("Remove the selected key; clients using it are "
                                          "refused once applied")
        buttons = QHBoxLayout()
        for button in (self.add_key_button, self.copy_key_button, self.revoke_key_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        keys_layout.addWidget(self.keys_table, 1)
        keys_layout.addLayout(buttons)
        keys_layout.addWidget(self.keys_error)
        layout.addWidget(keys_box, 1)

        self.security_errors = {key: ErrorLabel() for key in (
            "api_key", "api_key_env", *_SECURITY_LIMITS, *_SECURITY_LISTS, *_SECURITY_BODY)}
        lower = QHBoxLayout()
        lower.addWidget(self._build_main_key(), 2)
        lower.addWidget(self._build_origins(), 3)
        layout.addLayout(lower)
        layout.addWidget(self._build_limits())

        self.keys_table.edited.connect(self._mark_dirty)
        self.keys_table.itemSelectionChanged.connect(self._update_key_buttons)
        self.add_key_button.clicked.connect(self._add_key)
        self.copy_key_button.clicked.connect(self._copy_key)
        self.revoke_key_button.clicked.connect(self._revoke_key)
        self._update_key_buttons()
        return page

    def _build_main_key(self) -> QGroupBox:
        box = QGroupBox("Main key (no name, no limits)")
        form = QFormLayout(box)
        errors = self.security_errors
        self.api_key_edit = QLineEdit()
        self.api_key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key_edit.setPlaceholderText("none")
        self.api_key_edit.setToolTip("An unnamed key that may use every model: 16 or more "
                                     "characters (security.api_key)")
        self.show_key_check = QCheckBox("Show")
        self.show_key_check.setToolTip("Show the main key in full")
        key_row = QHBoxLayout()
        key_row.addWidget(self.api_key_edit, 1)
        key_row.addWidget(self.show_key_check)
        form.addRow("Key:", with_error(key_row, errors["api_key"]))
        self.api_key_env_edit = QLineEdit()
        self.api_key_env_edit.setPlaceholderText("e.g. LLAMARUNNER_API_KEY")
        self.api_key_env_edit.setToolTip("Read the main key from this environment variable "
                                         "instead (security.api_key_env)")
        form.addRow("Or from variable:", with_error(self.api_key_env_edit,
                                                     errors["api_key_env"]))
        self.api_key_edit.textEdited.connect(self._mark_dirty)
        self.api_key_env_edit.textEdited.connect(self._mark_dirty)
        self.show_key_check.toggled.connect(self._show_main_key)
        return box

    def _build_limits(self) -> QGroupBox:
        """Per-client rates on the left, request bodies on the right."""
        box = QGroupBox("Limits")
        grid = QGridLayout(box)
        errors = self.security_errors
        self.client_limits: dict[str, QSpinBox] = {}
        for row, (key, label, what) in enumerate((
                ("client_requests_per_minute", "Requests/min per client:", "Requests"),
                ("client_tokens_per_minute", "Tokens/min per client:", "Generated tokens"))):
            spin = QSpinBox()
            spin.setRange(0, _PER_MINUTE_MAX)
            spin.setSpecialValueText("off")
            spin.setGroupSeparatorShown(True)
            spin.setToolTip(f"{what} a minute each client address may have while no key "
                            f"is set; 0: no limit (security.{key})")
            spin.valueChanged.connect(self._mark_dirty)
            self.client_limits[key] = spin
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(with_error(spin, errors[key]), row, 1)
        self.body_edits: dict[str, QLineEdit] = {}
        digits = QRegularExpression("[0-9]*")
        for row, (key, label, tip) in enumerate((
                ("max_body_bytes", "Largest request (bytes):",
                 "Larger request bodies are refused (413)"),
                ("max_audio_bytes", "Largest audio (bytes):",
                 "Larger audio uploads are refused (413)"),
                ("body_timeout", "A body must arrive within:",
                 "A slower request body is refused (408). " + _DURATION_HELP))):
            edit = QLineEdit()
            edit.setToolTip(f"{tip} (security.{key})")
            edit.textEdited.connect(self._mark_dirty)
            self.body_edits[key] = edit
            field: QWidget | QHBoxLayout = edit
            if key != "body_timeout":
                edit.setValidator(QRegularExpressionValidator(digits, edit))
                # The same size in words, so 33554432 reads as what it is.
                size = QLabel()
                size.setStyleSheet("color: palette(placeholder-text);")
                size.setMinimumWidth(size.fontMetrics().horizontalAdvance("000 MB"))
                edit.textChanged.connect(
                    lambda text, size=size: size.setText(
                        human_size(int(text)) if text.strip().isdigit() else ""))
                field = QHBoxLayout()
                field.addWidget(edit, 1)
                field.addWidget(size)
            grid.addWidget(QLabel(label), row, 2)
            grid.addWidget(with_error(field, errors[key]), row, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        grid.setColumnMinimumWidth(2, 12)
        return box

    def _build_origins(self) -> QGroupBox:
        box = QGroupBox("Who may connect (one per line)")
        grid = QGridLayout(box)
        self.list_edits: dict[str, QPlainTextEdit] = {}
        for column, (key, title, hint) in enumerate((
                ("allowed_hosts", "Host names, besides localhost:",
                 "my-pc.local\nllm.home.arpa"),
                ("cors_origins", "Browser origins:",
                 "https://app.example.com\nhttp://*.example.com:*\nchrome-extension://*"))):
            edit = QPlainTextEdit()
            edit.setPlaceholderText(hint)
            edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
            edit.setTabChangesFocus(True)
            edit.setToolTip(
                "Host names clients may use in their URLs (no scheme or port)" if column == 0
                else "Web pages that may call the APIs: scheme://host[:port], * allowed")
            edit.setToolTip(f"{edit.toolTip()} (security.{key})")
            edit.textChanged.connect(self._mark_dirty)
            self.list_edits[key] = edit
            grid.addWidget(QLabel(title), 0, column)
            grid.addWidget(edit, 1, column)
            grid.addWidget(self.security_errors[key], 2, column)
        grid.setRowStretch(1, 1)
        return box

    def _build_raw(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        note = QLabel("The whole config.json. Apply on this tab checks and writes this text; "
                      "the other tabs show it once it is valid.")
        note.setWordWrap(True)
        self.raw_edit = QPlainTextEdit()
        self.raw_edit.setFont(monospace_font())
        self.raw_edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.raw_error = ErrorLabel()
        layout.addWidget(note)
        layout.addWidget(self.raw_edit, 1)
        layout.addWidget(self.raw_error)
        self.raw_edit.textChanged.connect(self._on_raw_edited)
        return page

    # ---- filling the form ------------------------------------------------------------

    def load_config(self, config: Config) -> None:
        """Show `config` in every tab and forget unapplied edits."""
        self._fill(config)
        self._loaded = copy.deepcopy(self._base)
        self._dirty = False
        self._set_raw_text(dump_config_text(self._base))
        self.clear_errors()

    def _fill(self, config: Config) -> None:
        self._filling = True
        try:
            self._base = config.to_dict()
            for name, fields in self.proxy_fields.items():
                proxy = config.proxies[name]
                fields.enabled.setChecked(proxy.enabled)
                fields.host.setText(proxy.host)
                fields.port.setValue(proxy.port)
            self.runtimes_table.setRowCount(0)
            for name, runtime in config.runtimes.items():
                self._append_runtime(name, runtime.path)
            scheduler = config.scheduler
            self.max_loaded.setValue(scheduler.max_loaded_models)
            self.max_queue.setValue(scheduler.max_queue)
            for key, edit in self.duration_edits.items():
                seconds = float(getattr(scheduler, key))
                edit.setText("-1" if math.isinf(seconds) else format_duration(seconds))
            self.folders_list.clear()
            for folder in config.model_dirs:
                self._append_folder(folder)
            for name, source_fields in self.source_fields.items():
                source = config.sources[name]
                source_fields.enabled.setChecked(source.enabled)
                source_fields.path.setText(source.path)
            self.folders_note.setText(
                "Folders searched (with their subfolders) for .gguf models. With no folder "
                f"listed, the app's own folder is used: {paths.models_dir()}")
            self._fill_security(config.security)
        finally:
            self._filling = False
        self._update_listening()

    def _fill_security(self, security: SecurityConfig) -> None:
        self.proxies_note.setText(key_note(security))
        self.keys_table.set_keys(security.api_keys)
        self.api_key_edit.setText(security.api_key)
        self.show_key_check.setChecked(False)
        self.api_key_env_edit.setText(security.api_key_env)
        for key, spin in self.client_limits.items():
            spin.setValue(min(int(getattr(security, key)), _PER_MINUTE_MAX))
        self.body_edits["max_body_bytes"].setText(str(security.max_body_bytes))
        self.body_edits["max_audio_bytes"].setText(str(security.max_audio_bytes))
        self.body_edits["body_timeout"].setText(format_duration(security.body_timeout))
        for key, edit in self.list_edits.items():
            edit.setPlainText("\n".join(getattr(security, key)))
        self._update_key_buttons()

    def _append_runtime(self, name: str, path: str) -> None:
        table = self.runtimes_table
        row = table.rowCount()
        table.insertRow(row)
        status = RuntimeStatus()
        table.setCellWidget(row, _RT_STATUS, status)
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse_runtime(browse))
        table.setCellWidget(row, _RT_BROWSE, browse)
        table.setItem(row, _RT_NAME, QTableWidgetItem(name))
        table.setItem(row, _RT_PATH, QTableWidgetItem(path))
        self._check_runtime_row(row)

    def _append_folder(self, folder: str) -> None:
        item = QListWidgetItem(folder)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.folders_list.addItem(item)

    def _set_raw_text(self, text: str) -> None:
        self._filling = True
        try:
            self.raw_edit.setPlainText(text)
        finally:
            self._filling = False
        self._raw_dirty = False

    # ---- reading the form ------------------------------------------------------------

    def form_data(self) -> dict[str, Any]:
        """The config the form tabs describe: the loaded one with the form's values on top
        (models, sources and comment keys, which the form does not show, are kept).
        """
        data = copy.deepcopy(self._base)
        proxies = data.setdefault("proxies", {})
        for name, fields in self.proxy_fields.items():
            entry = proxies.setdefault(name, {})
            entry["enabled"] = fields.enabled.isChecked()
            entry["host"] = fields.host.text().strip()
            entry["port"] = fields.port.value()
        old_runtimes = data.get("runtimes")
        runtimes: dict[str, Any] = {
            key: value for key, value in (old_runtimes or {}).items() if is_comment_key(key)
        } if isinstance(old_runtimes, Mapping) else {}
        for row in range(self.runtimes_table.rowCount()):
            name = self._cell(row, _RT_NAME).strip()
            path = self._cell(row, _RT_PATH).strip()
            if name or path:
                runtimes[name] = {"path": path}
        data["runtimes"] = runtimes
        scheduler = data.setdefault("scheduler", {})
        scheduler["max_loaded_models"] = self.max_loaded.value()
        scheduler["max_queue"] = self.max_queue.value()
        for key, edit in self.duration_edits.items():
            scheduler[key] = edit.text().strip()
        folders = [self.folders_list.item(i).text().strip()
                   for i in range(self.folders_list.count())]
        data["model_dirs"] = folders
        sources = {name: {"enabled": source.enabled.isChecked(),
                          "path": source.path.text().strip()}
                   for name, source in self.source_fields.items()}
        # Like Config.to_dict: the section is written once it means something, so a file
        # from before sources existed does not grow one it never asked for.
        if "sources" in data or any(not s["enabled"] or s["path"] for s in sources.values()):
            section = data.setdefault("sources", {})
            for name, values in sources.items():
                entry = section.setdefault(name, {})
                if isinstance(entry, dict):
                    entry.update(values)
        old_security = data.get("security")
        security = self._security_data(old_security if isinstance(old_security, Mapping)
                                       else {})
        # Like sources: a file without the section gets one only once it means something.
        if "security" in data or _security_in_use(security):
            section = data.setdefault("security", {})
            if isinstance(section, dict):
                section.update(security)
        return data

    def _security_data(self, old: Mapping[str, Any]) -> dict[str, Any]:
        """The Security tab's values as the `security` section holds them; values that do
        not parse are passed on as typed, for validation to name them.
        """
        values: dict[str, Any] = {
            "api_key": self.api_key_edit.text(),
            "api_key_env": self.api_key_env_edit.text().strip(),
            "allowed_hosts": _lines(self.list_edits["allowed_hosts"]),
            "cors_origins": _lines(self.list_edits["cors_origins"]),
            "max_body_bytes": parse_limit(self.body_edits["max_body_bytes"].text()),
            "max_audio_bytes": parse_limit(self.body_edits["max_audio_bytes"].text()),
            "body_timeout": self.body_edits["body_timeout"].text().strip(),
        }
        # Optional keys follow Config.to_dict: written when set or already in the file.
        keys = self.keys_table.entries()
        if keys or "api_keys" in old:
            values["api_keys"] = keys
        for key, spin in self.client_limits.items():
            if spin.value() or key in old:
                values[key] = spin.value()
        return values

    def _cell(self, row: int, column: int) -> str:
        item = self.runtimes_table.item(row, column)
        return item.text() if item is not None else ""

    # ---- apply / revert --------------------------------------------------------------

    def apply(self) -> None:
        """Validate, write atomically, then apply to the running app. Never writes a config
        that does not validate: problems are shown next to their fields instead.
        """
        self.clear_errors()
        self.status_label.clear()
        file = str(self._service.store.path)
        if self.tabs.currentWidget() is self.raw_tab:
            text = self.raw_edit.toPlainText()
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                self.raw_error.show_error(
                    f"Not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
                    "Nothing was saved.")
                return
        else:
            data = self.form_data()
            text = dump_config_text(data)
        try:
            parse_config(data, text=text, file=file)
            config = self._service.store.save(data, base=self._loaded)
        except ConfigValidationError as exc:
            self.show_problems(exc.problems)
            return
        except ConfigNotSavedError as exc:
            # The file was left as it is; the edits stay here to apply once it is fixed.
            log.warning("settings not saved to %s: %s", file, exc)
            hint = ("Revert shows the file as it is now." if isinstance(exc, ConfigConflictError)
                    else "Your edits are kept here; press Apply again once the file is fixed.")
            self.general_error.show_error(f"{exc}\n{hint}")
            return
        except (ConfigError, OSError) as exc:
            log.error("could not save %s: %s", file, exc)
            self.general_error.show_error(f"Could not save {file}: {exc}")
            return
        log.info("settings saved to %s", file)
        # What is on disk now matches the form: later file changes may refresh it.
        self._dirty = False
        self._raw_dirty = False
        self.status_label.setText("Saved; applying…")
        self._bridge.run(self._apply(config), "apply the settings")

    async def _apply(self, config: Config) -> None:
        errors = await self._service.apply_config(config)
        self.load_config(self._service.config)
        for error in errors:
            fields = self.proxy_fields.get(error.name)
            if fields is not None:
                fields.port_error.show_error(str(error))
            else:
                self.general_error.show_error(str(error))
        self.status_label.setText(
            "Saved, but some listeners could not start (see above)." if errors
            else "Saved and applied.")

    def revert(self) -> None:
        self.load_config(self._service.config)
        self.status_label.setText("Showing the running configuration.")

    def clear_errors(self) -> None:
        self._routes().clear()
        self.raw_error.clear_error()

    def show_problems(self, problems: list[Problem]) -> None:
        """Put each problem next to its field; the raw tab gets the full list with lines."""
        routes = self._routes()
        routes.show(problems, general_prefix="Not saved:")
        if self.tabs.currentWidget() is self.raw_tab:
            self.raw_error.show_error("Not saved:\n" + "\n".join(
                f"line {p.line}: {p}" if p.line is not None else str(p) for p in problems))
            # The raw tab already lists them all; the general label would repeat it.
            self.general_error.clear_error()

    def _routes(self) -> FieldErrors:
        """Where each config key's problems are shown, for the widgets there are now."""
        routes = FieldErrors(self.general_error)
        for name, fields in self.proxy_fields.items():
            routes.register(f"proxies.{name}", fields.error, prefix=True)
            routes.register(f"proxies.{name}.host", fields.host_error)
            routes.register(f"proxies.{name}.port", fields.port_error)
            routes.register(f"proxies.{name}.enabled", fields.error)
        routes.register("runtimes", self.runtimes_error, prefix=True)
        for row in range(self.runtimes_table.rowCount()):
            status = self.runtimes_table.cellWidget(row, _RT_STATUS)
            if isinstance(status, RuntimeStatus):
                routes.register(render_path(("runtimes", self._cell(row, _RT_NAME).strip())),
                                status, prefix=True)
        for key, error in self.scheduler_errors.items():
            routes.register(f"scheduler.{key}", error)
        routes.register("model_dirs", self.folders_error, prefix=True)
        for name, source in self.source_fields.items():
            routes.register(f"sources.{name}", source.error, prefix=True)
        for key, error in self.security_errors.items():
            routes.register(f"security.{key}", error, prefix=key in _SECURITY_LISTS)
        # The keys table gathers its problems under it, each with its key path, and
        # paints the cells they concern.
        problems = self.key_problems
        routes.register("security.api_keys", problems.target("security.api_keys"),
                        prefix=True)
        for row in range(self.keys_table.rowCount()):
            entry = f"security.api_keys[{row}]"
            routes.register(entry, problems.target(entry, row), prefix=True)
            for column, key in enumerate(KEY_FIELDS):
                path = f"{entry}.{key}"
                routes.register(path, problems.target(path, row, column),
                                prefix=column == KEY_MODELS)
        return routes

    # ---- reacting to edits and to the app --------------------------------------------

    def _mark_dirty(self, *_args: object) -> None:
        if not self._filling:
            self._dirty = True

    def _on_raw_edited(self) -> None:
        if not self._filling:
            self._raw_dirty = True
            self._dirty = True

    def _on_tab_changed(self, index: int) -> None:
        previous, self._previous_tab = self._previous_tab, index
        raw_index = self.tabs.indexOf(self.raw_tab)
        if index == raw_index and not self._raw_dirty:
            self._set_raw_text(dump_config_text(self.form_data()))
        elif previous == raw_index and self._raw_dirty and not self._sync_from_raw():
            # The form cannot show a config that does not validate, and two diverging
            # copies would make Apply ambiguous: stay on the raw text until it is fixed.
            QTimer.singleShot(0, lambda: self.tabs.setCurrentWidget(self.raw_tab))

    def _sync_from_raw(self) -> bool:
        """Show the raw text in the form tabs; False (problems shown) when it is invalid."""
        text = self.raw_edit.toPlainText()
        self.clear_errors()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            self.raw_error.show_error(
                f"Not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. Fix it "
                "or press Revert to use the other tabs.")
            return False
        try:
            config = parse_config(data, text=text, file=str(self._service.store.path))
        except ConfigValidationError as exc:
            self.raw_error.show_error("Fix these or press Revert to use the other tabs:\n"
                                      + "\n".join(f"line {p.line}: {p}" if p.line else str(p)
                                                  for p in exc.problems))
            return False
        self._fill(config)
        self._base = copy.deepcopy(data)
        self._raw_dirty = False
        return True

    def _on_config_applied(self, _path: str) -> None:
        if not self._dirty:
            self.load_config(self._service.config)
        else:
            self.status_label.setText("The configuration changed outside this window; "
                                      "Revert shows it (your edits here are not applied).")

    def _on_config_rejected(self, path: str, error: str) -> None:
        self.general_error.show_error(
            f"{path} was edited but has errors, so the app keeps running with the last good "
            f"configuration:\n{error}")

    def _on_listener_changed(self, _name: str, _address: str, _listening: bool,
                             _error: str) -> None:
        self._update_listening()

    def _update_listening(self) -> None:
        listeners = self._service.listeners
        addresses = listeners.addresses()
        for name, fields in self.proxy_fields.items():
            error = listeners.last_errors.get(name)
            if name in addresses:
                text, color = f"listening on {addresses[name]}", OK_COLOR
            elif error:
                text, color = f"not listening: {error}", ERROR_COLOR
            else:
                text, color = "not listening (disabled)", ""
            fields.listening.setText(text)
            fields.listening.setStyleSheet(f"color: {color};" if color else "")

    # ---- runtimes and folders ----------------------------------------------------------

    def _on_runtime_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == _RT_PATH:
            self._check_runtime_row(item.row())
        self._mark_dirty()

    def _check_runtime_row(self, row: int) -> None:
        status = self.runtimes_table.cellWidget(row, _RT_STATUS)
        if isinstance(status, RuntimeStatus):
            status.set_check(*runtime_check(self._cell(row, _RT_PATH)))

    def runtime_status(self, row: int) -> RuntimeStatus | None:
        status = self.runtimes_table.cellWidget(row, _RT_STATUS)
        return status if isinstance(status, RuntimeStatus) else None

    def _browse_runtime(self, button: QPushButton) -> None:
        row = next((r for r in range(self.runtimes_table.rowCount())
                    if self.runtimes_table.cellWidget(r, _RT_BROWSE) is button), -1)
        if row < 0:
            return
        current = self._cell(row, _RT_PATH).strip()
        start = str(Path(current).parent) if "/" in current or "\\" in current \
            else str(Path.home())
        path, _filter = QFileDialog.getOpenFileName(self, "Choose the llama-server program",
                                                    start)
        if path:
            item = self.runtimes_table.item(row, _RT_PATH)
            if item is not None:
                item.setText(path)  # itemChanged runs the check and marks the form edited

    def _add_runtime(self) -> None:
        taken = {self._cell(r, _RT_NAME) for r in range(self.runtimes_table.rowCount())}
        number = 2
        while f"runtime-{number}" in taken:
            number += 1
        self._append_runtime(f"runtime-{number}", "llama-server")
        self._mark_dirty()

    def _remove_runtime(self) -> None:
        rows = sorted({i.row() for i in self.runtimes_table.selectedIndexes()}, reverse=True)
        if not rows and self.runtimes_table.currentRow() >= 0:
            rows = [self.runtimes_table.currentRow()]
        for row in rows:
            self.runtimes_table.removeRow(row)
        if rows:
            self._mark_dirty()

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder", str(Path.home()))
        if folder:
            self._append_folder(folder)
            self._mark_dirty()

    def _remove_folders(self) -> None:
        for item in self.folders_list.selectedItems():
            self.folders_list.takeItem(self.folders_list.row(item))
            self._mark_dirty()

    # ---- security ----------------------------------------------------------------------

    def _show_main_key(self, shown: bool) -> None:
        self.api_key_edit.setEchoMode(QLineEdit.EchoMode.Normal if shown
                                      else QLineEdit.EchoMode.Password)

    def _update_key_buttons(self) -> None:
        selected = self.keys_table.selected_row() >= 0
        self.copy_key_button.setEnabled(selected)
        self.revoke_key_button.setEnabled(selected)

    def _add_key(self) -> None:
        row = self.keys_table.add_generated()
        self.status_label.setText(
            f"Added {self.keys_table.name(row)} with a new key: rename it if you like, "
            "Copy key gives it to whoever will use it, Apply puts it in force.")

    def _copy_key(self) -> None:
        row = self.keys_table.selected_row()
        if row < 0:
            return
        clipboard = QGuiApplication.clipboard()
        clipboard.setText(self.keys_table.key(row))
        self.status_label.setText(f"Copied the key of {self.keys_table.name(row)!r} to the "
                                  "clipboard.")

    def _revoke_key(self) -> None:
        row = self.keys_table.selected_row()
        if row < 0:
            return
        name = self.keys_table.name(row)
        answer = QMessageBox.question(
            self, "Revoke key",
            f"Revoke the key {name!r}? Clients that use it are refused once you press "
            "Apply; this cannot be undone after that.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.keys_table.remove(row)
        self._update_key_buttons()
        self.status_label.setText(f"Revoked {name!r}; Apply puts it in force.")
