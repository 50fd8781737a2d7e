"""The model library window: every model with its facts and live state, load/unload, settings."""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast

from PySide6.QtCore import QItemSelection, QSize, Qt, QTimer
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ... import paths
from ...config import (
    ArgValue,
    ConfigError,
    ConfigValidationError,
    Problem,
    format_duration,
    parse_config,
    render_path,
)
from ...core.errors import LlamaRunnerError
from ...library.metadata import parameter_size_label
from ...library.whisper import AUDIO_KIND
from ...runner.results import LoadResult, UnloadResult
from ...service import Service
from ..models.library_model import (
    COL_KIND,
    COL_NAME,
    COL_STATE,
    COL_WORKERS,
    KIND_TEXT,
    NAME_ROLE,
    PEER_AVAILABLE,
    PEER_SOURCE_PREFIX,
    PEER_UNAVAILABLE,
    WORKER_FAILING,
    LibraryFilterModel,
    LibraryModel,
    LibraryRow,
    WorkerCell,
)
from ..widgets.chat_panel import ChatPanel
from ..widgets.downloads import DownloadsPanel
from ._common import ERROR_COLOR, OK_COLOR, BridgeLike, ErrorLabel, FieldErrors, ToolWindow
from .get_model import GetModelDialog
from .transcribe import TranscribeDialog

log = logging.getLogger(__name__)

LIBRARY_POLL_MS: Final = 3000
_LOADABLE: Final = frozenset({"stopped", "failed"})
_UNLOADABLE: Final = frozenset({"starting", "ready"})
Mutation = Callable[[dict[str, Any]], None]
# Every speech-to-text model the library finds is a CTranslate2 Whisper folder.
WHISPER_ARCHITECTURE: Final = "whisper"
# The args table's caption and hint, by model kind: the flags go to different programs.
_ARGS_CAPTION: Final = {"llm": "llama-server arguments", AUDIO_KIND: "Speech worker arguments"}
_ARGS_TIP: Final = {
    "llm": "llama-server flags without dashes: ctx-size = 8192, flash-attn = on, "
           "jinja = true (a bare flag). Values are JSON when they parse as JSON.",
    AUDIO_KIND: "Speech worker flags without dashes: threads = 4, device = cpu, "
             "compute-type = int8. Values are JSON when they parse as JSON.",
}
_NO_CHAT_TIP: Final = ("A speech-to-text model cannot chat: use Transcribe file… to turn "
                       "a recording into text")
_SOURCE_TEXT: Final = {
    "config": "the config file",
    "folder": "a model folder (Save adds it to the config file, the file stays where it is)",
    "ollama": "Ollama's model store (Save keeps settings for it in the config file)",
    "lmstudio": "LM Studio's models folder (Save keeps settings for it in the config file)",
    "pulled": "downloaded into the app's store (Get model…); Delete removes it",
}
# Why Delete is off for a model: only downloaded models belong to the app's store.
_NO_DELETE: Final = {
    "config": "it is a file named in the config file: remove its entry there, then delete "
              "the file yourself",
    "folder": "it is a file in a model folder: delete the file yourself",
    "ollama": "it is in Ollama's model store, which LlamaRunner only reads; remove it with "
              "`ollama rm`",
    "lmstudio": "it is in LM Studio's models folder, which LlamaRunner only reads; remove it "
                "in LM Studio",
}


def model_source(service: Service, name: str) -> str:
    """Where a model comes from: config, folder, ollama or lmstudio.

    The library's own answer when it has one; otherwise "config" for an entry with its
    own path and "folder" for anything found on disk.
    """
    entry = service.library_entries().get(name)
    if entry is not None:
        return str(entry.source)
    model = service.models().get(name)
    if model is not None and model.is_peer:
        return f"{PEER_SOURCE_PREFIX}{model.peer}"
    configured = service.config.models.get(name)
    return "config" if configured is not None and not configured.settings_only else "folder"


def worker_cells(service: Service) -> dict[str, WorkerCell]:
    """What the Service knows of each RPC worker a model names, by host:port."""
    return {status.address: WorkerCell(status.address, status.state.value,
                                       status.reason or "", status.checked_at)
            for status in service.rpc_workers()}


def _peer_state(service: Service, name: str) -> tuple[str, str]:
    """(state, reason) of a peer's model: whether its peer answered last time."""
    status = service.peer_status(name)
    if status is not None and status.available is False:
        return PEER_UNAVAILABLE, status.reason or ""
    return PEER_AVAILABLE, ""


def build_rows(service: Service) -> list[LibraryRow]:
    """One row per model the Service knows, with header facts and the runner's state."""
    runners = {info.name: info for info in service.manager.snapshot()}
    entries = service.library_entries()
    workers = worker_cells(service)
    rows = []
    for name, model in service.models().items():
        meta = service.metadata_for(name)
        facts = service.model_file(name)
        info = runners.get(name)
        entry = entries.get(name)
        state, reason = ((info.state, info.last_error or "") if info
                         else ("stopped", ""))
        if model.is_peer:
            state, reason = _peer_state(service, name)
        architecture: str | None
        if model.is_audio:
            # A Whisper folder has no GGUF header and no chat template to describe.
            architecture, template, problem = WHISPER_ARCHITECTURE, "", ""
        else:
            chat_template = service.chat_template_for(name)
            architecture = meta.architecture if meta else None
            template, problem = chat_template.describe(), chat_template.problem or ""
        rows.append(
            LibraryRow(
                name=name,
                source=model_source(service, name),
                path=model.path,
                architecture=architecture,
                parameters=parameter_size_label(meta) if meta else None,
                parameter_count=meta.parameter_count if meta else None,
                quantization=meta.quantization if meta else None,
                context_length=meta.context_length if meta else None,
                size=facts.size if facts else None,
                capabilities=tuple(service.capabilities_for(name)),
                template=template,
                template_problem=problem,
                state=state,
                reason=reason,
                kind=model.kind,
                multilingual=entry.multilingual if entry is not None else False,
                workers=tuple(workers.get(address, WorkerCell(address))
                              for address in model.rpc),
            )
        )
    return rows


def format_arg_value(value: ArgValue) -> str:
    """How an argument's value is shown for editing; parse_arg_value reads it back equal."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
        # "8" or "true" as text would read back as a number or a flag: keep the quotes.
        return json.dumps(value)
    return json.dumps(value)


def parse_arg_value(text: str) -> ArgValue:
    """A typed value from the table: JSON literals (4096, 0.7, true, ["a","b"]) or plain text.

    Raises ValueError for an empty cell: a flag without a value is written `true`.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("give a value (true for a flag that takes none)")
    try:
        value = json.loads(stripped)
    except ValueError:
        return stripped
    if value is None or isinstance(value, bool | int | float | str | list):
        return cast(ArgValue, value)  # list items are checked by parse_config
    return stripped


class LibraryWindow(ToolWindow):
    """Sortable, filterable table of models; Load/Unload; per-model settings below it."""

    def __init__(self, service: Service, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__("library", "Model library", QSize(1120, 720), parent)
        self._service = service
        self._bridge = bridge
        self._detail_name: str | None = None
        self._detail_dirty = False
        self._loading_detail = False

        self.model = LibraryModel(self)
        self.proxy = LibraryFilterModel(self)
        self.proxy.setSourceModel(self.model)

        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter models (name, architecture, quantization…)")
        self.filter_edit.setClearButtonEnabled(True)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setToolTip("Also list the .gguf models found in a folder")
        self.get_model_button = QPushButton("Get model…")
        self.get_model_button.setToolTip("Download a model from an Ollama registry or "
                                         "Hugging Face")
        self.refresh_button = QPushButton("Refresh")
        self.count_label = QLabel()

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_NAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        header.setHighlightSections(False)

        self.load_button = QPushButton("Load")
        self.unload_button = QPushButton("Unload")
        self.delete_button = QPushButton("Delete")
        self.transcribe_button = QPushButton("Transcribe file…")
        self.transcribe_button.setToolTip("Turn a recording into text with the selected "
                                          "speech-to-text model")
        self.confirm_box: QMessageBox | None = None
        self.get_model_dialog: GetModelDialog | None = None
        self.transcribe_dialog: TranscribeDialog | None = None
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate: llama-server reports no load progress
        self.busy_bar.setMaximumWidth(120)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setVisible(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.count_label)
        top.addWidget(self.get_model_button)
        top.addWidget(self.add_folder_button)
        top.addWidget(self.refresh_button)
        actions = QHBoxLayout()
        actions.addWidget(self.load_button)
        actions.addWidget(self.unload_button)
        actions.addWidget(self.delete_button)
        actions.addWidget(self.transcribe_button)
        actions.addWidget(self.busy_bar)
        actions.addWidget(self.status_label, 1)
        upper = QWidget()
        upper_layout = QVBoxLayout(upper)
        upper_layout.setContentsMargins(0, 0, 0, 0)
        upper_layout.addLayout(top)
        upper_layout.addWidget(self.table, 1)
        upper_layout.addLayout(actions)

        self.detail = self._build_detail()
        # "Try it": chat with the selected model through the same Service as the APIs.
        self.chat = ChatPanel(service, bridge)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.detail, "Settings")
        self.chat_tab = self.tabs.addTab(self.chat, "Try it")
        self.downloads = DownloadsPanel(service, bridge)
        self.tabs.addTab(self.downloads, "Downloads")
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)

        self.filter_edit.textChanged.connect(self._on_filter)
        self.add_folder_button.clicked.connect(self.add_folder)
        self.get_model_button.clicked.connect(self.open_get_model)
        self.delete_button.clicked.connect(self.delete_selected)
        self.transcribe_button.clicked.connect(self.open_transcribe)
        self.downloads.finished.connect(self._on_download_finished)
        self.downloads.active_changed.connect(self._on_downloads_active)
        self.refresh_button.clicked.connect(self._refresh_clicked)
        self.load_button.clicked.connect(self.load_selected)
        self.unload_button.clicked.connect(self.unload_selected)
        self.table.doubleClicked.connect(lambda _index: self.load_selected())
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.rowsRemoved.connect(self._update_count)
        bridge.runner_state_changed.connect(self._on_runner_state)
        bridge.config_applied.connect(self._on_config_applied)
        bridge.rpc_worker_changed.connect(self._on_rpc_worker)
        bridge.peer_changed.connect(self._on_peer_changed)
        # The Service rescans model folders and stores in the background but announces no
        # event for it: while the window is shown, look now and then whether its list of
        # models changed (a cheap comparison of names, no disk access).
        self._watch_timer = QTimer(self)
        self._watch_timer.setInterval(LIBRARY_POLL_MS)
        self._watch_timer.timeout.connect(self._refresh_if_library_changed)

        self.refresh()

    # ---- detail panel ----------------------------------------------------------------

    def _build_detail(self) -> QGroupBox:
        box = QGroupBox("Model settings")
        self.args_table = QTableWidget(0, 2)
        self.args_table.setHorizontalHeaderLabels(["Argument", "Value"])
        self.args_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.ResizeToContents)
        self.args_table.horizontalHeader().setStretchLastSection(True)
        self.args_table.verticalHeader().setVisible(False)
        self.args_table.setToolTip(_ARGS_TIP["llm"])
        self.add_arg_button = QPushButton("Add argument")
        self.remove_arg_button = QPushButton("Remove argument")
        self.args_error = ErrorLabel()
        args_buttons = QHBoxLayout()
        args_buttons.addWidget(self.add_arg_button)
        args_buttons.addWidget(self.remove_arg_button)
        args_buttons.addStretch(1)
        args_column = QVBoxLayout()
        self.args_caption = QLabel(_ARGS_CAPTION["llm"])
        args_column.addWidget(self.args_caption)
        args_column.addWidget(self.args_table, 1)
        args_column.addLayout(args_buttons)
        args_column.addWidget(self.args_error)

        self.path_label = QLabel()
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.source_label = QLabel()
        self.kind_label = QLabel()
        self.workers_label = QLabel()
        self.workers_label.setTextFormat(Qt.TextFormat.RichText)
        self.workers_label.setWordWrap(True)
        self.workers_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.workers_label.setToolTip(
            "llama.cpp RPC workers (the model's rpc list in the config) that hold part of the "
            "model; each runs `llamarunner worker`. They are checked every few seconds and "
            "before the model starts.")
        self.template_label = QLabel()
        self.template_label.setWordWrap(True)
        self.template_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ttl_edit = QLineEdit()
        self.ttl_edit.setToolTip(
            "How long the model stays loaded when idle: 90s, 5m, 1h30m; 0 unloads after each "
            "request; -1 keeps it loaded; empty uses the scheduler's default_ttl.")
        self.ttl_error = ErrorLabel()
        self.save_button = QPushButton("Save")
        self.revert_button = QPushButton("Revert")
        self.detail_error = ErrorLabel()
        self.detail_status = QLabel()
        self.detail_status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.revert_button)
        buttons.addStretch(1)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("File:", self.path_label)
        form.addRow("Type:", self.kind_label)
        form.addRow("Source:", self.source_label)
        form.addRow("Chat template:", self.template_label)
        form.addRow("RPC workers:", self.workers_label)
        form.addRow("Keep loaded (TTL):", self.ttl_edit)
        form.addRow("", self.ttl_error)
        form.addRow(buttons)
        form.addRow(self.detail_error)
        form.addRow(self.detail_status)

        self.detail_form = form

        layout = QHBoxLayout(box)
        layout.addLayout(args_column, 3)
        layout.addLayout(form, 2)

        self.detail_errors = FieldErrors(self.detail_error)
        self.add_arg_button.clicked.connect(self._add_arg_row)
        self.remove_arg_button.clicked.connect(self._remove_arg_row)
        self.save_button.clicked.connect(self.save_settings)
        self.revert_button.clicked.connect(self._revert_detail)
        self.args_table.itemChanged.connect(self._mark_detail_dirty)
        self.ttl_edit.textEdited.connect(self._mark_detail_dirty)
        return box

    def _show_detail(self, name: str | None) -> None:
        """Fill the settings panel from the Service's view of `name` (edits are dropped)."""
        self._loading_detail = True
        try:
            self._detail_name = name
            self._detail_dirty = False
            self.detail_errors.clear()
            self.args_error.clear_error()
            self.ttl_error.clear_error()
            self.detail_status.clear()
            model = self._service.models().get(name) if name else None
            # A peer's model runs with the peer's settings: nothing to edit here.
            self.detail.setEnabled(model is not None and not model.is_peer)
            self.args_table.setRowCount(0)
            self._show_workers(model.name if model is not None else None)
            if model is None:
                self.detail.setTitle("Model settings (select a model)")
                self.path_label.clear()
                self.kind_label.clear()
                self.source_label.clear()
                self.template_label.clear()
                self.ttl_edit.clear()
                return
            self.detail.setTitle(f"Settings of {model.name}")
            self.path_label.setText(model.path)
            row = self.model.row_for(model.name)
            self.kind_label.setText(row.display(COL_KIND) if row is not None
                                    else KIND_TEXT.get(model.kind, model.kind))
            source = model_source(self._service, model.name)
            self.source_label.setText(_SOURCE_TEXT.get(source, source))
            # A speech model has no chat template, and its args go to the speech worker.
            self.detail_form.setRowVisible(self.template_label, not model.is_audio)
            self.args_caption.setText(_ARGS_CAPTION.get(model.kind, _ARGS_CAPTION["llm"]))
            self.args_table.setToolTip(_ARGS_TIP.get(model.kind, _ARGS_TIP["llm"]))
            template = self._service.chat_template_for(model.name)
            self.template_label.setText(
                "" if model.is_audio else template.describe() if template.can_chat
                else f"none: it cannot chat ({template.problem or 'no chat template'})")
            for key, value in model.args.items():
                self._append_arg(key, format_arg_value(value))
            self.ttl_edit.setText("" if model.ttl is None else format_duration(model.ttl))
            default = self._service.config.scheduler.default_ttl
            self.ttl_edit.setPlaceholderText(
                f"default ({'never' if math.isinf(default) else format_duration(default)})")
        finally:
            self._loading_detail = False

    def _show_workers(self, name: str | None) -> None:
        """The selected model's RPC workers, one per line; hidden for other models."""
        row = self.model.row_for(name) if name is not None else None
        workers = row.workers if row is not None else ()
        self.detail_form.setRowVisible(self.workers_label, bool(workers))
        lines = []
        for cell in workers:
            color = (ERROR_COLOR if cell.state in WORKER_FAILING
                     else OK_COLOR if cell.state == "up" else None)
            text = html.escape(cell.describe())
            lines.append(f'<span style="color: {color};">{text}</span>' if color else text)
        self.workers_label.setText("<br>".join(lines))

    def _append_arg(self, key: str, value: str) -> None:
        row = self.args_table.rowCount()
        self.args_table.insertRow(row)
        self.args_table.setItem(row, 0, QTableWidgetItem(key))
        self.args_table.setItem(row, 1, QTableWidgetItem(value))

    def _add_arg_row(self) -> None:
        self._append_arg("", "")
        row = self.args_table.rowCount() - 1
        self.args_table.setCurrentCell(row, 0)
        item = self.args_table.item(row, 0)
        if item is not None:
            self.args_table.editItem(item)
        self._mark_detail_dirty()

    def _remove_arg_row(self) -> None:
        rows = sorted({index.row() for index in self.args_table.selectedIndexes()},
                      reverse=True)
        if not rows and self.args_table.currentRow() >= 0:
            rows = [self.args_table.currentRow()]
        for row in rows:
            self.args_table.removeRow(row)
        if rows:
            self._mark_detail_dirty()

    def _mark_detail_dirty(self, *_args: object) -> None:
        if not self._loading_detail:
            self._detail_dirty = True
            self.detail_status.clear()

    def _revert_detail(self) -> None:
        self._show_detail(self._detail_name)

    def collect_args(self) -> dict[str, ArgValue]:
        """The args table as a mapping; raises ValueError naming the row that is wrong."""
        args: dict[str, ArgValue] = {}
        for row in range(self.args_table.rowCount()):
            key_item, value_item = self.args_table.item(row, 0), self.args_table.item(row, 1)
            key = key_item.text().strip() if key_item else ""
            text = value_item.text() if value_item else ""
            if not key and not text.strip():
                continue  # a row added and left blank
            if not key:
                raise ValueError(f"row {row + 1}: give the argument's name (like ctx-size)")
            if key.lstrip("-") in {k.lstrip("-") for k in args}:
                raise ValueError(f"row {row + 1}: {key} is already set above, keep only one")
            try:
                args[key] = parse_arg_value(text)
            except ValueError as exc:
                raise ValueError(f"row {row + 1} ({key}): {exc}") from None
        return args

    def save_settings(self) -> None:
        """Validate the panel and write `models.<name>` through Service.update_config."""
        name = self._detail_name
        model = self._service.models().get(name) if name else None
        if name is None or model is None:
            return
        self.detail_errors.clear()
        self.detail_status.clear()
        try:
            args = self.collect_args()
        except ValueError as exc:
            self.args_error.show_error(str(exc))
            return
        ttl = self.ttl_edit.text().strip()
        configured = self._service.config.models.get(name)
        source = model_source(self._service, name)
        # A model found in a folder gets an entry with its own path, so the file stays
        # where it is and the entry keeps working if the folder leaves model_dirs. Models in
        # Ollama's or LM Studio's store belong to that app (the file is a blob that may be
        # replaced by a pull) and names like "namespace/model:tag" cannot own a path entry:
        # those get a settings-only entry, which the library applies to the model it finds.
        if configured is not None:
            with_path = not configured.settings_only
        else:
            with_path = source == "folder" and "/" not in name
        if not with_path:
            # Settings for a discovered model add to the defaults it gets (jinja, ctx-size,
            # its projector...): a row the user deleted is kept off with `false`.
            args.update({key: False for key in model.args if key not in args})

        def mutate(data: dict[str, Any]) -> None:
            models = data.setdefault("models", {})
            old = models.get(name)
            entry: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
            if with_path:
                entry.setdefault("path", model.path)
            entry.setdefault("runtime", model.runtime)
            entry["args"] = args
            if ttl:
                entry["ttl"] = ttl
            else:
                entry.pop("ttl", None)
            models[name] = entry

        # Check first, so that mistakes show next to their fields before anything is written.
        data = self._service.config.to_dict()
        mutate(data)
        try:
            parse_config(data, file=str(self._service.store.path))
        except ConfigValidationError as exc:
            self._show_detail_problems(name, exc.problems)
            return
        self._bridge.run(self._write_config(mutate, f"Saved the settings of {name}.", name),
                         f"save the settings of {name}")

    def _show_detail_problems(self, name: str, problems: list[Problem]) -> None:
        self.detail_errors = FieldErrors(self.detail_error)
        self.detail_errors.register(render_path(("models", name, "ttl")), self.ttl_error)
        self.detail_errors.register(render_path(("models", name, "args")), self.args_error,
                                    prefix=True)
        self.detail_errors.show(problems)

    async def _write_config(self, mutate: Mutation, done: str, name: str | None) -> None:
        try:
            await self._service.update_config(mutate)
        except ConfigValidationError as exc:
            # The config changed between the check and the write (an edit on disk).
            if name is not None:
                self._show_detail_problems(name, exc.problems)
            else:
                self._set_status(str(exc), error=True)
            return
        except (ConfigError, OSError) as exc:
            log.error("could not write the config file: %s", exc)
            self._set_status(f"Could not write the config file: {exc}", error=True)
            return
        log.info("%s", done)
        if name is not None and name == self._detail_name:
            self._detail_dirty = False
        self.refresh()  # shows what is now in force (the panel too: it is not dirty now)
        if name is not None and name == self._detail_name:
            self.detail_status.setText(done)
        self._set_status(done)

    # ---- actions -------------------------------------------------------------------

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        name = rows[0].data(NAME_ROLE)
        return name if isinstance(name, str) else None

    def select(self, name: str) -> bool:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, COL_NAME)
            if index.data(NAME_ROLE) == name:
                self.table.selectRow(row)
                self.table.scrollTo(index)
                return True
        return False

    def load_selected(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        self._set_status(f"Loading {name}…")
        self._bridge.run(self._load(name), f"load {name}")

    def unload_selected(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        self._set_status(f"Unloading {name}…")
        self._bridge.run(self._unload(name), f"unload {name}")

    async def _load(self, name: str) -> None:
        try:
            result = await self._service.manager.load(name)
        except LlamaRunnerError as exc:
            self._set_status(f"Cannot load {name}: {exc}", error=True)
            return
        if result is LoadResult.FAILED:
            info = next((i for i in self._service.manager.snapshot() if i.name == name), None)
            why = info.last_error if info and info.last_error else "see its log"
            self._set_status(f"{name} failed to load: {why}", error=True)
        else:
            self._set_status(f"{name} is loaded.")

    async def _unload(self, name: str) -> None:
        result = await self._service.manager.unload(name)
        self._set_status(f"{name} was not loaded." if result is UnloadResult.NOT_LOADED
                         else f"{name} is unloaded.")

    def open_get_model(self) -> GetModelDialog:
        """Show the "Get model" dialog (one, reused); its downloads show in the Downloads tab."""
        dialog = self.get_model_dialog
        if dialog is None:
            dialog = self.get_model_dialog = GetModelDialog(self._service, self._bridge, self)
            dialog.download_started.connect(lambda _job_id: self.show_downloads())
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        dialog.name_edit.setFocus()
        return dialog

    def open_transcribe(self) -> TranscribeDialog | None:
        """Show the "Transcribe file" dialog (one, reused) for the selected speech model."""
        name = self.selected_name()
        row = self.model.row_for(name) if name is not None else None
        if name is None or row is None or not row.is_audio:
            return None
        dialog = self.transcribe_dialog
        if dialog is None:
            # Parented to the window, which keeps it (and its running task) alive.
            dialog = self.transcribe_dialog = TranscribeDialog(self._service, self._bridge,
                                                               self)
        dialog.set_model(name, multilingual=row.multilingual)
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        return dialog

    def show_downloads(self) -> None:
        """Bring the Downloads tab to the front (the tray's "Downloads…" opens it)."""
        self.tabs.setCurrentWidget(self.downloads)
        self.downloads.sync()

    def _on_download_finished(self, name: str) -> None:
        # The store rescanned before the pull reported success: the model is there now.
        self.refresh()
        self._set_status(f"Downloaded {name}.")

    def _on_downloads_active(self, count: int) -> None:
        index = self.tabs.indexOf(self.downloads)
        self.tabs.setTabText(index, f"Downloads ({count})" if count else "Downloads")

    def delete_reason(self, name: str) -> str | None:
        """Why `name` cannot be deleted here, or None for a downloaded model."""
        source = model_source(self._service, name)
        if source == "pulled":
            return None
        if source.startswith(PEER_SOURCE_PREFIX):
            return (f"it runs on {source}: delete it there, or remove the peer from "
                    "peers in the config")
        return _NO_DELETE.get(source, "only downloaded models can be deleted here")

    def delete_selected(self) -> None:
        """Ask, then delete the selected downloaded model (as the APIs' delete does)."""
        name = self.selected_name()
        if name is None:
            return
        reason = self.delete_reason(name)
        if reason is not None:
            self._set_status(f"{name} cannot be deleted here: {reason}", error=True)
            return
        if self.confirm_box is not None:
            self.confirm_box.close()
        # open(), not exec(): a nested modal loop would stall the APIs while it is up.
        box = QMessageBox(QMessageBox.Icon.Question, "Delete model",
                          f"Delete {name}? Its files are removed from the app's store "
                          "(files another model shares stay).",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                          self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.accepted.connect(lambda: self._confirmed_delete(name))
        self.confirm_box = box
        box.open()

    def _confirmed_delete(self, name: str) -> None:
        self.confirm_box = None
        self._set_status(f"Deleting {name}…")
        self._bridge.run(self._delete(name), f"delete {name}")

    async def _delete(self, name: str) -> None:
        try:
            await self._service.delete_model(name)
        except PermissionError as exc:
            self._set_status(f"{name} was not deleted: {exc}", error=True)
            return
        except LlamaRunnerError as exc:
            self._set_status(f"Cannot delete {name}: {exc.message}", error=True)
            return
        except OSError as exc:
            self._set_status(f"Cannot delete {name}: {exc}", error=True)
            return
        self.refresh()
        self._set_status(f"Deleted {name}.")

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder", str(Path.home()))
        if not folder:
            return

        def mutate(data: dict[str, Any]) -> None:
            folders = [str(f) for f in data.get("model_dirs") or []]
            if not folders:
                # An empty list means "the app's own folder": keep listing it.
                folders = [str(paths.models_dir())]
            if folder not in folders:
                folders.append(folder)
            data["model_dirs"] = folders

        self._bridge.run(self._write_config(mutate, f"Added the folder {folder}.", None),
                         "add a model folder")

    # ---- refresh -------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild the table from the Service, keeping the selection and unsaved edits."""
        selected = self.selected_name()
        try:
            rows = build_rows(self._service)
        except AssertionError:
            rows = []  # the Service is not started (yet): nothing to list
        self.model.set_rows(rows)
        # Only models split over RPC workers fill it; without any, the column is noise.
        self.table.setColumnHidden(COL_WORKERS, not any(row.workers for row in rows))
        if selected is not None:
            self.select(selected)
        elif self.proxy.rowCount():
            self.table.selectRow(0)
        current = self.selected_name()
        if current != self._detail_name or not self._detail_dirty:
            self._show_detail(current)
        self._sync_chat(current, force=True)  # its template may have changed with the config
        self._update_actions()

    def _on_config_applied(self, _path: str) -> None:
        self.refresh()

    def _refresh_clicked(self) -> None:
        self.refresh()
        if self._service.peers():
            # The peers' lists read now; what changes comes back as events.
            self._bridge.run(self._service.refresh_peers(), "ask the peers for their models")
        if self._service.rpc_workers():
            # Probed now rather than at the next periodic check; changes come as events.
            self._bridge.run(self._service.refresh_rpc_workers(), "check the RPC workers")

    def _on_peer_changed(self, _name: str, _available: bool, _reason: str) -> None:
        self.refresh()  # its models may have come, gone or changed state

    def _on_rpc_worker(self, _address: str, _state: str, _reason: str) -> None:
        self.model.set_workers(worker_cells(self._service))
        self._show_workers(self._detail_name)

    def workers_text(self, name: str) -> str:
        """What the Workers cell shows for `name` (for tests and accessibility)."""
        row = self.model.row_for(name)
        return row.display(COL_WORKERS) if row is not None else ""

    def _refresh_if_library_changed(self) -> None:
        if set(self._service.library_entries()) != set(self.model.names()):
            self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._refresh_if_library_changed()
        self._watch_timer.start()
        self.downloads.set_polling(True)

    def hideEvent(self, event: QHideEvent) -> None:
        self._watch_timer.stop()
        self.downloads.set_polling(False)
        super().hideEvent(event)

    def _on_runner_state(self, name: str, state: str, reason: str) -> None:
        if not self.model.set_state(name, state, reason or ""):
            self.refresh()  # a model the table has not seen yet
            return
        self._update_actions()

    def _on_filter(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        if self.selected_name() is None and self.proxy.rowCount():
            self.table.selectRow(0)

    def _on_selection(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        name = self.selected_name()
        if name != self._detail_name:
            self._show_detail(name)
        self._sync_chat(name)
        self._update_actions()

    def _sync_chat(self, name: str | None, *, force: bool = False) -> None:
        """Point the "Try it" tab at `name`; a speech model cannot chat, so it gets none."""
        row = self.model.row_for(name) if name is not None else None
        audio = row is not None and row.is_audio
        if audio and self.tabs.currentIndex() == self.chat_tab:
            self.tabs.setCurrentWidget(self.detail)  # not the next tab Qt would pick
        self.tabs.setTabEnabled(self.chat_tab, not audio)
        self.tabs.setTabToolTip(self.chat_tab, _NO_CHAT_TIP if audio else "")
        chat_model = None if audio else name
        if force or chat_model != self.chat.model:
            self.chat.set_model(chat_model)

    def _update_count(self, *_args: object) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count_label.setText(f"{total} models" if shown == total
                                 else f"{shown} of {total} models")

    def _update_actions(self) -> None:
        name = self.selected_name()
        row = self.model.row_for(name) if name else None
        self.load_button.setEnabled(row is not None and row.state in _LOADABLE)
        self.unload_button.setEnabled(row is not None and row.state in _UNLOADABLE)
        reason = self.delete_reason(name) if name is not None and row is not None else ""
        self.delete_button.setEnabled(row is not None and reason is None)
        self.delete_button.setToolTip(
            f"Cannot delete {name}: {reason}" if reason else
            "Delete this downloaded model and its files")
        audio = row is not None and row.is_audio
        self.transcribe_button.setEnabled(audio)
        self.transcribe_button.setToolTip(
            f"Turn a recording into text with {name}" if audio else
            "Select a speech-to-text model to transcribe a recording with it")
        self.busy_bar.setVisible(self.model.busy())

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status_label.setStyleSheet(f"color: {ERROR_COLOR};" if error else "")
        self.status_label.setText(text)

    def state_text(self, name: str) -> str:
        """What the State cell shows for `name` (for tests and accessibility)."""
        for row in range(self.proxy.rowCount()):
            if self.proxy.index(row, COL_NAME).data(NAME_ROLE) == name:
                return str(self.proxy.index(row, COL_STATE).data())
        return ""


