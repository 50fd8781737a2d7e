"""Linux start at login: a real .desktop file written, parsed and removed under a temp XDG home."""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

import pytest

from llamarunner.integration.autostart import (
    DESKTOP_FILE_NAME,
    Autostart,
    AutostartResult,
    EntryState,
    XdgAutostart,
    autostart_dir,
    desktop_entry_text,
    quote_exec_argument,
    split_exec,
)
from llamarunner.integration.autostart.xdg import escape_string, unescape_string


@pytest.fixture
def xdg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def installed_exe(folder: Path, name: str = "llamarunner") -> Path:
    """A stand-in for the installed app's executable."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def read_desktop_file(path: Path) -> configparser.SectionProxy:
    """Read the file with configparser, as a desktop's key-file reader would."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#",), strict=True)
    # Desktop entry keys are case-sensitive; configparser lowercases them by default.
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    assert parser.sections() == ["Desktop Entry"]
    return parser["Desktop Entry"]


def test_the_folder_follows_xdg_config_home(xdg_home: Path) -> None:
    assert autostart_dir() == xdg_home / "autostart"
    assert XdgAutostart().path == xdg_home / "autostart" / DESKTOP_FILE_NAME


@pytest.mark.parametrize("value", ["", "relative/config"])
def test_unset_or_relative_xdg_config_home_means_dot_config(value: str) -> None:
    # The Base Directory spec: relative paths in these variables are invalid, ignore them.
    home = Path.home()
    assert autostart_dir({"XDG_CONFIG_HOME": value}) == home / ".config" / "autostart"
    assert autostart_dir({}) == home / ".config" / "autostart"


def test_enable_writes_the_entry_status_reads_it_disable_removes_it(
        xdg_home: Path, tmp_path: Path) -> None:
    exe = installed_exe(tmp_path / "opt" / "llamarunner")
    autostart = Autostart(XdgAutostart(), target=exe)
    path = xdg_home / "autostart" / "llamarunner.desktop"
    assert autostart.status().state is EntryState.ABSENT

    outcome = autostart.enable()
    assert outcome.result is AutostartResult.ENABLED, outcome.message
    assert str(path) in outcome.message and str(exe) in outcome.message
    entry = read_desktop_file(path)
    assert dict(entry) == {
        "Type": "Application",
        "Name": "LlamaRunner Pro",
        "Comment": "Local LLMs behind Ollama and OpenAI compatible APIs",
        "Exec": f'"{exe}"',
        "TryExec": str(exe),
        "Icon": "llamarunner",
        "Terminal": "false",
        "StartupNotify": "false",
        "X-GNOME-Autostart-enabled": "true",
    }
    status = autostart.status()
    assert status.state is EntryState.ACTIVE
    assert status.location == str(path) and status.target == str(exe)
    assert status.ours and status.target_exists and autostart.enabled()
    assert not stat.S_IMODE(path.stat().st_mode) & 0o022  # nobody else may change it

    assert autostart.enable().result is AutostartResult.ALREADY_ENABLED
    outcome = autostart.disable()
    assert outcome.result is AutostartResult.DISABLED and str(path) in outcome.message
    assert not path.exists()
    assert autostart.disable().result is AutostartResult.ALREADY_DISABLED
    assert autostart.status().state is EntryState.ABSENT


@pytest.mark.parametrize("folder_name", [
    "LlamaRunner Pro",        # a space: the usual case
    "it's \"quoted\"",        # both quote characters
    "cost $HOME `x` 100%",    # shell expansions and a field-code character
    "back\\slash",            # the four-backslash case of the spec
    "tab\there;and#more",     # a tab, and characters with meaning in key files
    "日本語",                  # non-ASCII (the file is UTF-8)
])
def test_paths_with_reserved_characters_round_trip(xdg_home: Path, tmp_path: Path,
                                                   folder_name: str) -> None:
    exe = installed_exe(tmp_path / folder_name)
    autostart = Autostart(XdgAutostart(), target=exe)
    assert autostart.enable().result is AutostartResult.ENABLED
    status = autostart.status()
    assert status.target == str(exe) and status.active
    raw_exec = read_desktop_file(xdg_home / "autostart" / DESKTOP_FILE_NAME)["Exec"]
    assert split_exec(unescape_string(raw_exec)) == [str(exe)]


def test_exec_quoting_follows_the_desktop_entry_spec() -> None:
    assert quote_exec_argument("/opt/LlamaRunner Pro/llamarunner") == \
        '"/opt/LlamaRunner Pro/llamarunner"'
    assert quote_exec_argument('/a"b`c$d\\e') == '"/a\\"b\\`c\\$d\\\\e"'
    assert quote_exec_argument("/x/100%") == '"/x/100%%"'
    # The spec's own example: a literal backslash in a quoted argument is four in the file.
    text = desktop_entry_text(Path("/a\\b"))
    assert 'Exec="/a\\\\\\\\b"' in text.splitlines()
    assert "TryExec=/a\\\\b" in text.splitlines()


@pytest.mark.parametrize(("command", "argv"), [
    ("/usr/bin/app", ["/usr/bin/app"]),
    ('"/opt/My App/app" --flag', ["/opt/My App/app", "--flag"]),
    ("/usr/bin/app %U", ["/usr/bin/app"]),
    ("'/opt/single quoted/app'", ["/opt/single quoted/app"]),
    ('"/a\\"b"  x', ['/a"b', "x"]),
    ("/with\\ space", ["/with space"]),
    ('"100%%"', ["100%"]),
    ("", []),
])
def test_split_exec_reads_what_others_write(command: str, argv: list[str]) -> None:
    assert split_exec(command) == argv


def test_string_escapes_round_trip() -> None:
    for value in ["plain", "a\\b", "line\nbreak", " leading space", "tab\t"]:
        assert unescape_string(escape_string(value)) == value
    assert escape_string(" x") == "\\sx"


def test_a_stale_entry_is_reported_as_such(xdg_home: Path, tmp_path: Path) -> None:
    exe = installed_exe(tmp_path / "gone")
    autostart = Autostart(XdgAutostart(), target=exe)
    autostart.enable()
    exe.unlink()  # the package was removed, the user's autostart file stays
    status = autostart.status()
    assert status.state is EntryState.STALE and not status.active
    assert str(exe) in status.describe() and "no longer exists" in status.describe()


def test_enable_replaces_a_stale_entry_with_the_installed_app(xdg_home: Path,
                                                             tmp_path: Path) -> None:
    old = installed_exe(tmp_path / "old")
    Autostart(XdgAutostart(), target=old).enable()
    old.unlink()
    new = installed_exe(tmp_path / "new")
    outcome = Autostart(XdgAutostart(), target=new).enable()
    assert outcome.result is AutostartResult.ENABLED
    assert f"replaces an entry that started {old}" in outcome.message
    assert XdgAutostart().read().target == str(new)


@pytest.mark.parametrize("switch", ["X-GNOME-Autostart-enabled=false", "Hidden=true"])
def test_an_entry_switched_off_by_the_desktop_reads_off_and_enable_turns_it_on(
        xdg_home: Path, tmp_path: Path, switch: str) -> None:
    exe = installed_exe(tmp_path / "app")
    autostart = Autostart(XdgAutostart(), target=exe)
    autostart.enable()
    path = XdgAutostart().path
    lines = [line for line in path.read_text().splitlines()
             if not line.startswith("X-GNOME-Autostart-enabled")]
    path.write_text("\n".join([*lines, switch, ""]))
    assert autostart.status().state is EntryState.SWITCHED_OFF
    assert autostart.enable().result is AutostartResult.ENABLED
    assert autostart.status().active


@pytest.mark.parametrize(("text", "problem"), [
    ("not a desktop file at all", "no [Desktop Entry] group"),
    ("[Desktop Entry]\nType=Application\nName=Other App\nExec=/usr/bin/other\n",
     "its Name is 'Other App'"),
    ("[Desktop Entry]\nType=Link\nName=LlamaRunner Pro\nExec=/x\n", "its Type is 'Link'"),
    ("[Desktop Entry]\nType=Application\nName=LlamaRunner Pro\n", "no Exec command"),
    ("[Desktop Entry]\nType=Application\nName=LlamaRunner Pro\nExec=\"/x\n", "never closed"),
])
def test_a_foreign_or_broken_file_is_reported_and_enable_replaces_it(
        xdg_home: Path, tmp_path: Path, text: str, problem: str) -> None:
    path = xdg_home / "autostart" / DESKTOP_FILE_NAME
    path.parent.mkdir(parents=True)
    path.write_text(text)
    autostart = Autostart(XdgAutostart(), target=installed_exe(tmp_path / "app"))
    status = autostart.status()
    assert status.state is EntryState.FOREIGN and problem in status.describe()
    assert autostart.enable().result is AutostartResult.ENABLED
    assert autostart.status().active


def test_a_bare_command_name_is_looked_up_on_path(xdg_home: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    exe = installed_exe(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(exe.parent))
    path = xdg_home / "autostart" / DESKTOP_FILE_NAME
    path.parent.mkdir(parents=True)
    path.write_text("[Desktop Entry]\nType=Application\nName=LlamaRunner Pro\n"
                    "Exec=llamarunner\n")
    assert XdgAutostart().read().target == str(exe)


def test_a_folder_that_cannot_be_made_fails_with_the_place_and_what_to_do(
        xdg_home: Path, tmp_path: Path) -> None:
    xdg_home.mkdir()
    (xdg_home / "autostart").write_text("a file where the folder should be")
    outcome = Autostart(XdgAutostart(), target=installed_exe(tmp_path / "app")).enable()
    assert outcome.result is AutostartResult.FAILED
    assert str(xdg_home / "autostart") in outcome.message and "may write" in outcome.message
