"""The doctor's findings and how they are shown: text lines, JSON, an exit status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

# Exit statuses of `llamarunner doctor` (2, an unusable config, is the CLI's as elsewhere).
EXIT_OK: Final = 0
EXIT_CLIENT_FAILS: Final = 1
EXIT_NOT_RUNNING: Final = 3


@dataclass(frozen=True)
class ClientResult:
    """How one client fares: works, or the step that fails, its HTTP status, what and the fix."""

    client: str
    ok: bool
    step: str = ""
    status: int | None = None
    problem: str = ""
    fix: str = ""
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """The line without the client's name: "works" or "fails at ...; fix: ..."."""
        if self.ok:
            return "works" + (f" (note: {'; '.join(self.notes)})" if self.notes else "")
        status = f" (HTTP {self.status})" if self.status is not None else ""
        text = f"fails at {self.step}{status}: {self.problem}"
        return text + (f"; fix: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client, "works": self.ok, "step": self.step or None,
                "status": self.status, "problem": self.problem or None,
                "fix": self.fix or None, "notes": list(self.notes)}


@dataclass(frozen=True)
class Report:
    """Everything one doctor run found."""

    results: tuple[ClientResult, ...] = ()
    model: str | None = None
    # "Ollama API: http://127.0.0.1:11434" or "Ollama API: off (...)", one per API.
    apis: tuple[str, ...] = ()
    # Set when no client could be tried at all (not running, no model, key refused...).
    problem: str = ""
    fix: str = ""
    running: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.running and not self.problem and all(r.ok for r in self.results)

    def exit_code(self) -> int:
        if not self.running:
            return EXIT_NOT_RUNNING
        return EXIT_OK if self.ok else EXIT_CLIENT_FAILS

    def to_dict(self) -> dict[str, Any]:
        return {"works": self.ok, "running": self.running, "model": self.model,
                "apis": list(self.apis), "problem": self.problem or None,
                "fix": self.fix or None, "notes": list(self.notes),
                "clients": [r.to_dict() for r in self.results]}


def client_lines(results: tuple[ClientResult, ...]) -> list[str]:
    """One line per client, names padded so the verdicts line up."""
    width = max((len(r.client) for r in results), default=0)
    return [f"{r.client + ':':<{width + 1}} {r.summary()}" for r in results]


def format_report(report: Report) -> str:
    """The text `llamarunner doctor` prints (the desktop window shows the same lines)."""
    if not report.running:
        return report.problem
    lines = [f"Checking {', '.join(report.apis)}" if report.apis else "Checking LlamaRunner Pro"]
    if report.model:
        lines.append(f"Model: {report.model}")
    lines += [f"Note: {note}" for note in report.notes]
    if report.problem:
        lines.append(f"Cannot check any client: {report.problem}"
                     + (f"; fix: {report.fix}" if report.fix else ""))
        return "\n".join(lines)
    lines.append("")
    lines += client_lines(report.results)
    failing = sum(not r.ok for r in report.results)
    lines.append("")
    if failing:
        lines.append(f"{failing} of {len(report.results)} clients would fail.")
    else:
        lines.append(f"All {len(report.results)} clients work.")
    return "\n".join(lines)
