"""Getting models from the desktop app: the "Get model" dialog, the downloads panel, the
tray's downloads and Delete, against a real Service and the loopback hub stand-in."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QMessageBox, QWidget
from pytestqt.qtbot import QtBot
from tests.support.registry_standin import StandIn
from tests.support.tiny_gguf import write_tiny_gguf

from llamarunner.config import ConfigStore
from llamarunner.gui.bridge import ServiceBridge
from llamarunner.gui.models.library_model import COL_NAME, COL_SOURCE, NAME_ROLE
from llamarunner.gui.tray import TrayIcon
from llamarunner.gui.widgets.downloads import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    DownloadRow,
    RateMeter,
    eta_text,
    progress_text,
)
from llamarunner.gui.windows.get_model import GetModelDialog, GetRequest, read_request
from llamarunner.gui.windows.library import LibraryWindow
from llamarunner.service import Service
from llamarunner.store.download import PullJob
from llamarunner.store.huggingface import HubFile, quant_choices
from llamarunner.store.names import parse_name

NO_SOURCES = {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}}
REPO = "someone/Tiny-GGUF"
Q4, Q8 = "tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"


# ---- pure parts ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("llama3.2:3b", GetRequest("llama3.2:3b")),
    ("  library/llama3  ", GetRequest("library/llama3")),
    ("registry.example:5000/team/model:tag", GetRequest("registry.example:5000/team/model:tag")),
    ("http://127.0.0.1:5000/team/model", GetRequest("http://127.0.0.1:5000/team/model")),
    ("hf.co/a/b", GetRequest("hf.co/a/b", "a/b")),
    ("huggingface.co/a/b:Q8_0", GetRequest("huggingface.co/a/b:Q8_0", "a/b", "Q8_0")),
    ("https://huggingface.co/bartowski/X-GGUF", GetRequest(
        "https://huggingface.co/bartowski/X-GGUF", "bartowski/X-GGUF")),
    ("https://www.huggingface.co/o/r/tree/main", GetRequest(
        "https://www.huggingface.co/o/r/tree/main", "o/r")),
    ("https://huggingface.co/o/R-GGUF/resolve/main/r-IQ4_XS.gguf?download=true", GetRequest(
        "https://huggingface.co/o/R-GGUF/resolve/main/r-IQ4_XS.gguf?download=true",
        "o/R-GGUF", "IQ4_XS")),
    ("bartowski/Llama-3.2-3B-Instruct-GGUF:q4_k_m", GetRequest(
        "bartowski/Llama-3.2-3B-Instruct-GGUF:q4_k_m", "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "q4_k_m")),
    ("https://huggingface.co/only-owner", GetRequest("https://huggingface.co/only-owner")),
    ("[bad", GetRequest("[bad")),
    ("", GetRequest("")),
])
def test_the_field_reads_ollama_names_and_hugging_face_repositories(
        text: str, expected: GetRequest) -> None:
    assert read_request(text) == expected


@pytest.mark.parametrize(("request_", "tag", "name"), [
    (GetRequest("llama3.2:3b"), "Q8_0", "llama3.2:3b"),
    (GetRequest("hf.co/a/b", "a/b"), None, "hf.co/a/b"),
    (GetRequest("hf.co/a/b:Q8_0", "a/b", "Q8_0"), None, "hf.co/a/b:Q8_0"),
    (GetRequest("a/b-gguf", "a/b-gguf"), "Q4_0", "hf.co/a/b-gguf:Q4_0"),
])
def test_the_pulled_name(request_: GetRequest, tag: str | None, name: str) -> None:
    assert request_.pull_name(tag) == name


def test_quant_choices_put_the_default_first_and_leave_out_what_cannot_be_pulled() -> None:
    files = [HubFile("m-Q8_0.gguf", 800, None), HubFile("m-Q4_K_M.gguf", 400, None),
             HubFile("mmproj-m-f16.gguf", 90, None), HubFile("README.md", 1, None),
             HubFile("big/m-F16-00001-of-00002.gguf", 5000, None),
             HubFile("sub/m-IQ2_XXS.gguf", 200, None)]
    assert quant_choices(files, "o/m") == [
        ("m-Q4_K_M.gguf", 400, "Q4_K_M"), ("m-Q8_0.gguf", 800, "Q8_0"),
        ("sub/m-IQ2_XXS.gguf", 200, "IQ2_XXS")]
    assert quant_choices([HubFile("README.md", 1, None)], "o/m") == []


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "0 s left"), (12, "12 s left"), (59.4, "59 s left"), (95, "2 min left"),
    (3599, "1 h left"), (3000, "50 min left"), (3900, "1 h 5 min left"),
])
def test_eta_text(seconds: float, text: str) -> None:
    assert eta_text(seconds) == text


@pytest.mark.parametrize(("completed", "total", "rate", "text"), [
    (0, 0, None, "looking up the files…"),
    (120_000_000, 1_200_000_000, None, "120 MB of 1.2 GB"),
    (120_000_000, 1_200_000_000, 4_000_000.0, "120 MB of 1.2 GB · 4.0 MB/s · 4 min left"),
    (5, 10, 0.0, "5 B of 10 B · stalled"),
    (10, 10, 3.0, "10 B of 10 B"),
])
def test_progress_text(completed: int, total: int, rate: float | None, text: str) -> None:
    assert progress_text(completed, total, rate) == text


def test_the_rate_is_measured_over_a_window_and_restarts_with_the_layer() -> None:
    meter = RateMeter(window=5)
    assert meter.rate() is None
    meter.add(0.0, 0)
    meter.add(0.1, 100)
    assert meter.rate() is None  # too short a span to say
    for second in range(1, 11):
        meter.add(float(second), second * 1000)
    assert meter.rate() == pytest.approx(1000)
    meter.add(11.0, 50)  # a retry started over
    meter.add(12.0, 2050)
    assert meter.rate() == pytest.approx(2000)


# ---- against a real Service and the stand-in hub --------------------------------------

class App:
    """A started Service, the real bridge and a shown library window, on the qasync loop."""

    def __init__(self, driver: Any, service: Service, bridge: ServiceBridge,
                 window: LibraryWindow) -> None:
        self.driver = driver
        self.service = service
        self.bridge = bridge
        self.window = window

    def call(self, action: Callable[[], object]) -> None:
        """Inside the running loop, as a click in the app is."""

        async def inside() -> None:
            action()

        self.driver.run(inside())

    def click(self, widget: QWidget) -> None:
        self.call(lambda: QtBot.mouseClick(widget, Qt.MouseButton.LeftButton))

    def until(self, predicate: Callable[[], bool], message: str, timeout: float = 30) -> None:
        self.driver.until(predicate, timeout=timeout, message=message)

    def names(self) -> list[str]:
        proxy = self.window.proxy
        return [proxy.index(row, COL_NAME).data(NAME_ROLE) for row in range(proxy.rowCount())]

    def open_dialog(self, text: str) -> GetModelDialog:
        self.click(self.window.get_model_button)
        dialog = self.window.get_model_dialog
        assert dialog is not None and dialog.isVisible()
        dialog.name_edit.setText(text)
        return dialog

    def list_quants(self, dialog: GetModelDialog) -> list[str]:
        """Wait for the picker to be filled after the typing pause."""
        self.until(lambda: dialog.quant_combo.count() > 0 or dialog.quant_error.isVisible(),
                   "the repository's files")
        return dialog.choices()

    def row(self, name: str) -> DownloadRow:
        found = self.window.downloads.row(name)
        assert found is not None, f"no download row for {name}"
        return found


@pytest.fixture
def hub(driver: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StandIn]:
    """The stand-in hub with a repository of two quants and a README; HF_ENDPOINT set."""
    stand_in = driver.run(StandIn().start())
    folder = tmp_path / "hub-files"
    folder.mkdir()
    stand_in.add_hub_repo(REPO, {
        Q4: write_tiny_gguf(folder / Q4, name="tiny-q4").read_bytes(),
        Q8: write_tiny_gguf(folder / Q8, name="tiny-q8", seed=1).read_bytes(),
        "README.md": b"# Tiny\n",
    })
    monkeypatch.setenv("HF_ENDPOINT", stand_in.base_url)
    yield stand_in
    driver.run(stand_in.close())


@pytest.fixture
def open_app(driver: Any, tiny_config: Callable[..., Path], tmp_path: Path
             ) -> Iterator[Callable[[], App]]:
    """Start (or, called again, restart) the Service on one config, with a library window."""
    opened: list[App] = []
    config = tiny_config(sources=NO_SOURCES)

    def start() -> App:
        for app in list(opened):
            close(app)
        service = Service(ConfigStore(config), runner_log_dir=tmp_path / "runners")
        assert not driver.run(service.start())
        bridge = ServiceBridge(service, capture_logs=False)
        window = LibraryWindow(service, bridge)
        window.resize(QSize(1100, 760))
        window.show()
        app = App(driver, service, bridge, window)
        opened.append(app)
        return app

    def close(app: App) -> None:
        app.window.hide()
        driver.run(app.service.stop())
        app.bridge.close()
        opened.remove(app)

    yield start
    for app in list(opened):
        close(app)


def test_get_a_hugging_face_model_watch_it_download_then_delete_it(
        open_app: Callable[[], App], hub: StandIn, screenshot: Any) -> None:
    app = open_app()
    dialog = app.open_dialog(f"hf.co/{REPO}")
    assert dialog.kind_label.text() == f"Hugging Face repository {REPO}"
    assert app.list_quants(dialog) == ["Q4_K_M", "Q8_0"]  # the engine's default first
    labels = [dialog.quant_combo.itemText(i) for i in range(dialog.quant_combo.count())]
    size = len(hub.hub[REPO][Q4])
    assert labels[0] == f"Q4_K_M — {size // 1000} KB (default)"
    assert not dialog.insecure_check.isEnabled()  # the hub is always HTTPS
    assert dialog.pull_name() == f"hf.co/{REPO}"

    hub.faults.delay = 0.2  # slow enough to watch the bar move
    app.click(dialog.download_button)
    assert not dialog.isVisible()
    assert app.window.tabs.currentWidget() is app.window.downloads
    row = app.row(f"hf.co/{REPO}")
    app.until(lambda: row.state == RUNNING and 0 < row.bar.value() < 100, "progress")
    assert " of " in row.detail_label.text() and row.cancel_button.isVisible()
    assert app.window.tabs.tabText(app.window.tabs.indexOf(app.window.downloads)) \
        == "Downloads (1)"
    screenshot(app.window, "get-model-progress")
    hub.faults.delay = 0
    app.until(lambda: row.state == DONE, "the download to finish")
    assert row.bar.value() == 100 and row.status_label.text() == "done"
    assert not (row.cancel_button.isVisible() or row.retry_button.isVisible()
                or row.resume_button.isVisible())
    name = f"hf.co/{REPO}:latest"
    app.until(lambda: name in app.names(), "the model in the table")
    assert "Downloaded" in app.window.status_label.text()
    assert app.window.tabs.tabText(app.window.tabs.indexOf(app.window.downloads)) \
        == "Downloads"

    # Delete: only downloaded models, through the Service's (the API's) delete.
    app.window.select("tiny")
    assert not app.window.delete_button.isEnabled()
    assert "config file" in app.window.delete_button.toolTip()
    app.window.select(name)
    proxy = app.window.proxy
    source = next(proxy.index(r, COL_SOURCE).data() for r in range(proxy.rowCount())
                  if proxy.index(r, COL_NAME).data(NAME_ROLE) == name)
    assert source == "downloaded"
    assert app.window.delete_button.isEnabled()
    app.click(app.window.delete_button)
    box = app.window.confirm_box
    assert box is not None and box.isVisible() and name in box.text()
    yes = box.button(QMessageBox.StandardButton.Yes)
    assert yes is not None
    app.click(yes)
    app.until(lambda: name not in app.names(), "the model to go")
    assert f"Deleted {name}" in app.window.status_label.text()
    layout = app.service.model_store.layout
    assert not layout.blobs_dir.exists() or not any(layout.blobs_dir.iterdir())


def test_cancel_leaves_a_resumable_download_that_resumes_after_a_restart(
        open_app: Callable[[], App], hub: StandIn) -> None:
    app = open_app()
    dialog = app.open_dialog(f"https://huggingface.co/{REPO}")
    app.list_quants(dialog)
    dialog.quant_combo.setCurrentIndex(1)
    assert dialog.pull_name() == f"hf.co/{REPO}:Q8_0"
    dialog.name_edit.setText(f"hf.co/{REPO}:Q8_0")  # the same repository: no new lookup
    assert dialog.quant_combo.currentIndex() == 1
    dialog.quant_combo.setCurrentIndex(0)
    assert dialog.pull_name() == f"hf.co/{REPO}"  # the default, whatever was typed
    dialog.quant_combo.setCurrentIndex(1)
    hub.faults.delay = 0.2
    app.click(dialog.download_button)
    row = app.row(f"hf.co/{REPO}:Q8_0")
    app.until(lambda: row.job is not None and row.job.completed > 0, "some bytes")
    app.click(row.cancel_button)
    app.until(lambda: row.state == CANCELLED, "the cancel")
    assert row.resume_button.isVisible() and not row.cancel_button.isVisible()
    assert "kept for Resume" in row.detail_label.text()
    stored = parse_name(f"hf.co/{REPO}:Q8_0").full
    assert [r.name for r in app.driver.run(app.service.model_store.interrupted())] == [stored]

    # The app restarts: the unfinished pull is listed with Resume.
    app = open_app()
    app.until(lambda: app.window.downloads.row(f"hf.co/{REPO}:Q8_0") is not None,
              "the interrupted download")
    app.call(app.window.show_downloads)
    row = app.row(f"hf.co/{REPO}:Q8_0")
    assert row.state == INTERRUPTED and row.job is None
    assert "the part downloaded so far is kept" in row.detail_label.text()
    assert row.resume_button.isVisible()
    partials = [p for p in app.service.model_store.layout.blobs_dir.iterdir()
                if p.name.endswith("-partial")]
    assert len(partials) == 1
    kept = partials[0].stat().st_size
    assert kept > 0
    hub.faults.delay = 0
    app.click(row.resume_button)
    app.until(lambda: row.state == DONE, "the resumed download")
    assert hub.ranges(Q8)[-1] == f"bytes={kept}-"  # it went on from the partial file
    assert hub.sent[Q8] == len(hub.hub[REPO][Q8])  # and fetched no byte twice
    app.until(lambda: f"hf.co/{REPO}:Q8_0" in app.names(), "the model in the table")


def test_a_corrupt_download_shows_the_digest_error_and_retry_fetches_it_again(
        open_app: Callable[[], App], hub: StandIn) -> None:
    app = open_app()
    hub.faults.corrupt.add(Q4)
    dialog = app.open_dialog(f"{REPO}:Q4_K_M")  # a bare owner/repo ending in GGUF
    assert app.list_quants(dialog)[dialog.quant_combo.currentIndex()] == "Q4_K_M"
    assert dialog.pull_name() == f"hf.co/{REPO}:Q4_K_M"  # the typed tag stays
    app.click(dialog.download_button)
    row = app.row(f"hf.co/{REPO}:Q4_K_M")
    app.until(lambda: row.state == FAILED, "the failure")
    assert "digest mismatch" in row.error.text() and row.error.isVisible()
    assert row.retry_button.isVisible()
    hub.faults.corrupt.clear()
    app.click(row.retry_button)
    app.until(lambda: row.state == DONE, "the retried download")
    assert not row.error.isVisible()


def test_a_bad_name_is_refused_inline_and_starts_nothing(
        open_app: Callable[[], App], hub: StandIn) -> None:
    app = open_app()
    dialog = app.open_dialog("library/../etc/passwd")
    assert dialog.insecure_check.isEnabled() and not dialog.quant_combo.isEnabled()
    app.click(dialog.download_button)
    assert dialog.isVisible()
    assert dialog.name_error.isVisible()
    assert "invalid model name" in dialog.name_error.text()
    assert app.service.model_store.jobs() == []
    assert hub.requests == []
    dialog.name_edit.setText("hf.co/nobody/Missing-GGUF")
    app.list_quants(dialog)
    assert "was not found" in dialog.quant_error.text()
    assert not dialog.name_error.isVisible()  # the old message went with the old name


def test_the_tray_menu_shows_active_downloads(
        open_app: Callable[[], App], hub: StandIn, recording_windows: Any) -> None:
    app = open_app()
    bridge = ServiceBridge(app.service, loop=app.driver.loop, capture_logs=False)
    tray = TrayIcon(app.service, bridge, recording_windows)
    try:
        tray.menu.aboutToShow.emit()
        assert not [a for a in tray.menu.actions() if a.text().startswith("Download")]
        hub.faults.delay = 0.2
        jobs: list[PullJob] = []
        # As the API or the CLI would: the tray lists every pull of the store.
        app.call(lambda: jobs.append(app.service.model_store.pull(
            f"hf.co/{REPO}", cancel_when_unwatched=False)))
        job = jobs[0]
        app.until(lambda: job.completed > 0, "some bytes")
        tray.menu.aboutToShow.emit()
        texts = [a.text() for a in tray.menu.actions()]
        line = next(t for t in texts if t.startswith(f"Downloading hf.co/{REPO}:latest: "))
        assert line.endswith("%")
        assert not next(a for a in tray.menu.actions() if a.text() == line).isEnabled()
        opener = next(a for a in tray.menu.actions() if a.text() == "Downloads (1)…")
        opener.trigger()
        assert recording_windows.shown == ["library"]
        job.cancel()
        app.until(lambda: job.done, "the cancel")
    finally:
        bridge.close()  # first: no signal may reach the tray once it is gone
        tray.hide()
        tray.deleteLater()
