"""The "Check clients" window: the doctor's replays against this app, one line per client."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...config.defaults import PROXY_NAMES
from ...doctor import Report, diagnose, format_report, target_from_config
from ...service import Service
from ._common import ERROR_COLOR, OK_COLOR, BridgeLike, ToolWindow

CHECKING_TEXT = "Checking each client against this app…"


class DoctorWindow(ToolWindow):
    """Runs the same checks as `llamarunner doctor`, over real HTTP to this app's listeners.

    The checks run on the app's own event loop (the bridge's `run`): the requests go out
    through the listeners like any client's, so what this window says is what a client
    would meet. The ports are the ones the listeners really bound.
    """

    finished = Signal()  # a run ended and its report is shown

    def __init__(self, service: Service, bridge: BridgeLike,
                 parent: QWidget | None = None) -> None:
        super().__init__("doctor", "Check clients", QSize(900, 420), parent)
        self._service = service
        self._bridge = bridge
        self._running = False
        self._report: Report | None = None

        self.header_label = QLabel("Not checked yet.")
        self.header_label.setWordWrap(True)
        self.header_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.results_list = QListWidget()
        self.results_list.setWordWrap(True)
        self.results_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.check_button = QPushButton("Check again")
        self.check_button.clicked.connect(self.run_checks)
        self.copy_button = QPushButton("Copy report")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_report)

        buttons = QHBoxLayout()
        buttons.addWidget(self.summary_label, 1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.check_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header_label)
        layout.addWidget(self.results_list, 1)
        layout.addLayout(buttons)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def report(self) -> Report | None:
        return self._report

    def lines(self) -> list[str]:
        """The result lines as shown, one per client."""
        return [self.results_list.item(i).text() for i in range(self.results_list.count())]

    def run_checks(self) -> None:
        """Start a run unless one is going; the window fills in when it ends."""
        if self._running:
            return
        self._running = True
        self.check_button.setEnabled(False)
        self.copy_button.setEnabled(False)
        self.results_list.clear()
        self.header_label.setText(CHECKING_TEXT)
        self.summary_label.setText("")
        if self._bridge.run(self._check(), "check the clients") is None:
            self._done()  # no event loop: the bridge has said why

    async def _check(self) -> None:
        service = self._service
        try:
            bound = {api: service.listeners.bound_port(api) for api in PROXY_NAMES}
            target = target_from_config(service.config, str(service.store.path),
                                        bound_ports=bound)
            self.show_report(await diagnose(target))
        finally:
            self._done()

    def _done(self) -> None:
        self._running = False
        self.check_button.setEnabled(True)
        if self.header_label.text() == CHECKING_TEXT:
            self.header_label.setText("The check did not finish.")

    def show_report(self, report: Report) -> None:
        """Show a report: what was checked, then one line per client."""
        self._report = report
        self.results_list.clear()
        header = [f"Checking {', '.join(report.apis)}" if report.apis else ""]
        if report.model:
            header.append(f"Model: {report.model}")
        header += [f"Note: {note}" for note in report.notes]
        if not report.running or report.problem:
            fix = f"\nFix: {report.fix}" if report.fix else ""
            header.append(f"{report.problem}{fix}")
        self.header_label.setText("\n".join(line for line in header if line))
        for result in report.results:
            item = QListWidgetItem(f"{result.client}: {result.summary()}")
            item.setForeground(QBrush(QColor(OK_COLOR if result.ok else ERROR_COLOR)))
            item.setToolTip(result.fix or "")
            self.results_list.addItem(item)
        failing = sum(not r.ok for r in report.results)
        if report.ok:
            self.summary_label.setText(f"All {len(report.results)} clients work.")
        elif report.results:
            self.summary_label.setText(f"{failing} of {len(report.results)} clients would fail.")
        else:
            self.summary_label.setText("No client could be checked.")
        self.copy_button.setEnabled(True)
        self.finished.emit()

    def copy_report(self) -> None:
        """The report as `llamarunner doctor` prints it, on the clipboard (for bug reports)."""
        if self._report is not None:
            QGuiApplication.clipboard().setText(format_report(self._report))
