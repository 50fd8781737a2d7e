"""Run the Service without any GUI until SIGINT/SIGTERM, then stop every runner and exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from .config import ConfigError, ConfigStore
from .paths import runner_log_dir
from .service import Service, run_until_stopped

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_LISTEN = 3


async def run_headless(store: ConfigStore) -> int:
    service = Service(store, runner_log_dir=runner_log_dir())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no add_signal_handler; Ctrl+C there arrives as KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, AttributeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        errors = await service.start()
    except ConfigError as exc:
        print(f"llamarunner: cannot start, the configuration is not usable:\n{exc}",
              file=sys.stderr)
        await service.stop()
        return EXIT_CONFIG
    if errors:
        for error in errors:
            print(f"llamarunner: {error}", file=sys.stderr)
        await service.stop()
        return EXIT_LISTEN
    models = ", ".join(sorted(service.models())) or "none yet"
    log.info("ready; models: %s; config: %s", models, store.path)
    await run_until_stopped(service, stop)
    log.info("stopped cleanly")
    return EXIT_OK


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (POSIX), else asyncio's own (None).

    Every proxied request is a handful of socket reads and writes plus the callbacks
    around them; uvloop runs that loop in C, which takes 5-15 % off the app's CPU per
    request. The desktop app keeps qasync's loop: Qt must own that one.
    """
    if sys.platform == "win32":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main_headless(store: ConfigStore) -> int:
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(run_headless(store))
    except KeyboardInterrupt:
        return EXIT_OK
