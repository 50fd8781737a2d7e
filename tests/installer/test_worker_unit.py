"""The RPC worker's systemd unit: its command parses with the real CLI, systemd accepts it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from llamarunner.cli import build_parser
from llamarunner.rpc.worker import DEFAULT_HOST, EXIT_LISTEN, EXIT_USAGE

UNIT = Path(__file__).resolve().parents[2] / "installer" / "linux" / "llamarunner-worker.service"


def settings(section: str) -> list[tuple[str, str]]:
    """(key, value) lines of one section, in order (systemd allows repeated keys)."""
    found: list[tuple[str, str]] = []
    current = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            found.append((key, value))
    return found


def environment(overrides: dict[str, str] | None = None) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in settings("Service"):
        if key == "Environment":
            name, _, text = value.partition("=")
            env[name] = text
    env.update(overrides or {})
    return env


def exec_start(env: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it: ${VAR} is one word, $VAR splits on white space."""
    (command,) = [value for key, value in settings("Service") if key == "ExecStart"]
    argv: list[str] = []
    for word in command.split():
        braced = re.fullmatch(r"\$\{(\w+)\}", word)
        bare = re.fullmatch(r"\$(\w+)", word)
        if braced:
            argv.append(env[braced.group(1)])
        elif bare:
            argv += shlex.split(env[bare.group(1)])
        else:
            argv.append(word)
    return argv


def test_it_runs_the_worker_command_on_loopback_by_default() -> None:
    argv = exec_start(environment())
    assert argv[0] == "/usr/bin/llamarunner"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.host, args.port, args.threads, args.cache) == (
        "worker", DEFAULT_HOST, 50052, None, False)


def test_the_environment_file_sets_address_and_flags() -> None:
    assert ("EnvironmentFile", "-/etc/llamarunner/worker.env") in settings("Service")
    argv = exec_start(environment({"LLAMARUNNER_WORKER_HOST": "192.168.1.20",
                                   "LLAMARUNNER_WORKER_PORT": "6000",
                                   "LLAMARUNNER_WORKER_ARGS": "--threads 8 --cache"}))
    args = build_parser().parse_args(argv[1:])
    assert (args.host, args.port, args.threads, args.cache) == ("192.168.1.20", 6000, 8, True)


def test_stop_and_restart_match_the_command_s_exit_statuses() -> None:
    service = dict(settings("Service"))
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == [str(EXIT_USAGE), str(EXIT_LISTEN)]
    assert "no authentication" in UNIT.read_text().lower()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_it(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist; every other line is checked as written.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/bin/llamarunner", "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
