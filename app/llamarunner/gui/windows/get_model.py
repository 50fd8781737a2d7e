"""The "Get model" dialog: an Ollama name or a Hugging Face repository, its quant, Download."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import LlamaRunnerError
from ...library.discovery import gguf_stem, is_gguf_name, quant_token
from ...library.table import human_size
from ...service import Service
from ...store.huggingface import list_gguf_files
from ...store.names import HF_HOSTS
from ._common import BridgeLike, ErrorLabel

log = logging.getLogger(__name__)

# Typing pauses this long before the repository's files are looked up.
LOOKUP_DELAY_MS: Final = 400
_PART: Final = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_SHORT_REPO: Final = re.compile(rf"({_PART})/({_PART}?gguf)(?::({_PART}))?", re.IGNORECASE)
_PLACEHOLDER: Final = ("llama3.2:3b, host/namespace/model:tag, hf.co/owner/repo or a "
                       "huggingface.co link")


@dataclass(frozen=True)
class GetRequest:
    """What the text field asks for: an Ollama name as typed, or a Hugging Face repository
    (`repo` is "owner/repo") with the tag typed after it, if any."""

    text: str
    repo: str | None = None
    tag: str | None = None

    def pull_name(self, tag: str | None = None) -> str:
        """The name to pull; for a repository `tag` (the picker's) wins over the typed one."""
        if self.repo is None:
            return self.text
        chosen = tag or self.tag
        return f"hf.co/{self.repo}" + (f":{chosen}" if chosen else "")


def read_request(text: str) -> GetRequest:
    """Read the field: `hf.co/o/r[:tag]`, a huggingface.co link (a link to one .gguf file
    gives its quant as the tag) and a bare `owner/repo` whose name ends in "gguf" (the
    hub's naming for GGUF repositories) are Hugging Face; anything else is an Ollama name,
    left for the store to check."""
    text = text.strip()
    link = text if "://" in text else f"https://{text}"
    try:
        parts = urlsplit(link)
        host = (parts.hostname or "").lower().removeprefix("www.")
    except ValueError:  # "[x": not a link at all; the store says what is wrong with it
        return GetRequest(text)
    if host in HF_HOSTS:
        pieces = [p for p in parts.path.split("/") if p]
        if len(pieces) >= 2:
            repo_part, _, tag = pieces[1].partition(":")
            if not tag and is_gguf_name(pieces[-1]) and len(pieces) > 2:
                # .../resolve/main/model-Q4_K_M.gguf: that file's quant.
                stem = gguf_stem(pieces[-1])
                token = quant_token(stem)
                tag = stem[-len(token):] if token else ""
            return GetRequest(text, f"{pieces[0]}/{repo_part}", tag or None)
        return GetRequest(text)
    short = _SHORT_REPO.fullmatch(text)
    if short is not None:
        return GetRequest(text, f"{short.group(1)}/{short.group(2)}", short.group(3))
    return GetRequest(text)


class GetModelDialog(QDialog):
    """Non-modal (a nested exec() loop would stall the APIs): Download starts the pull in
    the Service's store and closes; the downloads panel shows its progress."""

    download_started = Signal(str)  # the job's id

    def __init__(self, service: Service, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get a model")
        self.setMinimumWidth(560)
        self._service = service
        self._bridge = bridge
        self._request = GetRequest("")
        self._listed_repo: str | None = None
        self._lookup = 0  # which lookup is current; older answers are dropped

        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText(_PLACEHOLDER)
        self.name_edit.setClearButtonEnabled(True)
        self.kind_label = QLabel()
        self.kind_label.setWordWrap(True)
        self.name_error = ErrorLabel()
        self.quant_combo = QComboBox()
        self.quant_combo.setEnabled(False)
        self.quant_combo.setToolTip("Which GGUF file of the repository to download; the "
                                    "first is the one picked when you choose none")
        self.quant_status = QLabel()
        self.quant_error = ErrorLabel()
        self.insecure_check = QCheckBox("Insecure (HTTP)")
        self.insecure_check.setToolTip("For a registry of your own that serves plain HTTP "
                                       "or has no valid certificate")
        self.download_button = QPushButton("Download")
        self.download_button.setDefault(True)
        self.download_button.setEnabled(False)
        self.close_button = QPushButton("Close")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model:", self.name_edit)
        form.addRow("", self.kind_label)
        form.addRow("", self.name_error)
        form.addRow("Quantization:", self.quant_combo)
        form.addRow("", self.quant_status)
        form.addRow("", self.quant_error)
        form.addRow("", self.insecure_check)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addStretch(1)
        layout.addLayout(buttons)

        self._lookup_timer = QTimer(self)
        self._lookup_timer.setSingleShot(True)
        self._lookup_timer.setInterval(LOOKUP_DELAY_MS)
        self._lookup_timer.timeout.connect(self.look_up)
        self.name_edit.textChanged.connect(self._on_text)
        self.name_edit.returnPressed.connect(self.download)
        self.download_button.clicked.connect(self.download)
        self.close_button.clicked.connect(self.reject)
        self._on_text("")

    # ---- the name --------------------------------------------------------------------

    def _on_text(self, text: str) -> None:
        self._request = request = read_request(text)
        self.name_error.clear_error()
        self.download_button.setEnabled(bool(request.text))
        self.insecure_check.setEnabled(request.repo is None)
        if not request.text:
            self.kind_label.setText("From Ollama's registry (or another registry), or from a "
                                    "Hugging Face repository of GGUF files.")
        elif request.repo is not None:
            self.kind_label.setText(f"Hugging Face repository {request.repo}")
        else:
            self.kind_label.setText("From an Ollama registry (ollama.com unless the name "
                                    "starts with a host)")
        if request.repo is None:
            self._lookup += 1
            self._listed_repo = None
            self._lookup_timer.stop()
            self._set_choices([])
            self.quant_status.setText("Only for Hugging Face repositories; an Ollama name "
                                      "picks its quantization with its tag.")
            self.quant_error.clear_error()
        elif request.repo != self._listed_repo:
            self._set_choices([])
            self.quant_status.setText("Looking up the repository's files…")
            self.quant_error.clear_error()
            self._lookup_timer.start()
        else:
            self._select_tag(request.tag)

    def look_up(self) -> None:
        """List the repository's GGUF files into the picker (also after the typing pause)."""
        self._lookup_timer.stop()
        repo = self._request.repo
        if repo is None:
            return
        self._lookup += 1
        self._bridge.run(self._list(repo, self._lookup), f"list the files of {repo}")

    async def _list(self, repo: str, lookup: int) -> None:
        try:
            choices = await list_gguf_files(repo)
        except LlamaRunnerError as exc:
            if lookup == self._lookup:
                self.quant_status.clear()
                self.quant_error.show_error(exc.message)
            return
        if lookup != self._lookup:
            return  # the text changed meanwhile
        self._listed_repo = repo
        self._set_choices(choices)
        if choices:
            self.quant_status.setText(f"{len(choices)} GGUF files in {repo}")
            self._select_tag(self._request.tag)
        else:
            self.quant_status.clear()
            self.quant_error.show_error(f"{repo} has no GGUF model file that can be "
                                        "downloaded as one file")

    def _set_choices(self, choices: list[tuple[str, int, str]]) -> None:
        self.quant_combo.clear()
        for index, (path, size, quant) in enumerate(choices):
            label = f"{quant} — {human_size(size)}" + (" (default)" if index == 0 else "")
            self.quant_combo.addItem(label, quant)
            self.quant_combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        self.quant_combo.setEnabled(bool(choices))

    def _select_tag(self, tag: str | None) -> None:
        if tag is None:
            return
        for index in range(self.quant_combo.count()):
            if str(self.quant_combo.itemData(index)).casefold() == tag.casefold():
                self.quant_combo.setCurrentIndex(index)
                return

    def choices(self) -> list[str]:
        """The picker's tags, in order (the default first)."""
        return [str(self.quant_combo.itemData(i)) for i in range(self.quant_combo.count())]

    # ---- download --------------------------------------------------------------------

    def pull_name(self) -> str:
        """The name Download pulls: for a repository, with the picker's tag, except for the
        default when no tag was typed (the store picks the same file; the name stays short)."""
        request = self._request
        if request.repo is None:
            return request.text
        index = self.quant_combo.currentIndex()
        if index < 0 or not self.quant_combo.isEnabled():
            return request.pull_name()  # no listing (yet): as typed
        tag = str(self.quant_combo.itemData(index))
        if index == 0 and (request.tag or "").casefold() != tag.casefold():
            return dataclasses.replace(request, tag=None).pull_name()
        return request.pull_name(tag)

    def download(self) -> None:
        """Start the pull; a bad name is shown under the field and nothing starts."""
        name = self.pull_name()
        if not name:
            return
        insecure = self.insecure_check.isChecked() and self._request.repo is None
        try:
            job = self._service.model_store.pull(name, insecure=insecure,
                                                 cancel_when_unwatched=False)
        except LlamaRunnerError as exc:
            self.name_error.show_error(exc.message)
            return
        log.info("downloading %s", job.display)
        self.download_started.emit(job.id)
        self.name_edit.clear()
        self.accept()
