"""Prometheus metrics of one Service, served as `GET /metrics` on both listeners.

Each Service has its own `CollectorRegistry` (never the process-wide default one), so
that several Services in one process (the tests start many) count apart. Request
metrics come from the `RequestRecord` of every answered request (`observe`); runner
starts and crashes from the event bus (`on_event`); queue depth, loaded models and
runner states are read from the runner manager when Prometheus scrapes.

Labels hold only bounded, non-secret values: API and route pattern (never the raw path),
configured model names (never a name a client made up), status codes, key names (never
key values). No prompt text and no file path ever becomes a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import prometheus_client
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.events import Event, RunnerStateChanged
from ..runner.manager import RunnerManager
from ..runner.state import RunnerState
from .observe import OBSERVERS, RequestRecord

# From a warm tiny model's 5 ms answer to a long generation on a CPU (minutes): the
# default buckets (up to 10 s) would put every real generation in +Inf.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                          20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STATES: Final = tuple(state.value for state in RunnerState)
_READY: Final = RunnerState.READY.value
_STARTING: Final = RunnerState.STARTING.value
_FAILED: Final = RunnerState.FAILED.value
PROMPT: Final = "prompt"
GENERATED: Final = "generated"

ManagerSource = Callable[[], RunnerManager | None]


class Metrics:
    """The registry of one Service and the metrics in it."""

    def __init__(self, manager: ManagerSource = lambda: None) -> None:
        # The text format's `*_created` series double every counter and histogram and
        # tell Prometheus nothing it does not know from the counter resets.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        # Registered first: its pass over the runners also creates the start and crash
        # counters of each model at 0, so that the same scrape shows them and rate()
        # sees a model's first start (a series that appears at 1 loses it).
        self.registry.register(_RunnerCollector(manager, self._known_model))
        self.requests = Counter(
            "llamarunner_requests_total", "Requests answered, by API, route, model, status "
            "(499: the client left first).", ("api", "route", "model", "status"),
            registry=self.registry)
        self.duration = Histogram(
            "llamarunner_request_duration_seconds", "Time from request to the end of the "
            "answer (a stream to its last byte).", ("api", "route", "model"),
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_token = Histogram(
            "llamarunner_time_to_first_token_seconds", "Streams: time from request to the "
            "first byte from llama-server (a model load included).", ("model",),
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter(
            "llamarunner_tokens_total", "Tokens as llama-server counted them, by kind "
            "(prompt, generated).", ("model", "kind"), registry=self.registry)
        self.starts = Counter(
            "llamarunner_runner_starts_total", "Starts of a model's runner.", ("model",),
            registry=self.registry)
        self.crashes = Counter(
            "llamarunner_runner_crashes_total", "A ready runner's process exited without "
            "being asked to.", ("model",), registry=self.registry)
        self.failed_starts = Counter(
            "llamarunner_runner_failed_starts_total", "Starts that failed before the "
            "runner was ready.", ("model",), registry=self.registry)
        self.rate_limited = Counter(
            "llamarunner_rate_limited_total", "Requests refused by a rate limit, by key "
            "name (empty: no key).", ("key",), registry=self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        # labels() converts, locks and builds a tuple on every call; observe() runs on
        # every request, so each label set's children are looked up once and kept here.
        # Label values are bounded (routes, configured models, statuses), so are these.
        self._request_children: dict[tuple[str, str, str, int],
                                     tuple[Counter, Histogram]] = {}
        self._model_children: dict[str, tuple[Histogram, Counter, Counter]] = {}
        self._rate_children: dict[str, Counter] = {}
        self._last_state: dict[str, str] = {}
        self._seen_models: set[str] = set()

    # ---- requests ------------------------------------------------------------------

    def observe(self, record: RequestRecord) -> None:
        """Count one answered request (an observer of both listeners)."""
        model = record.model or ""
        key = (record.api, record.route, model, record.status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(record.api, record.route, model, str(record.status)),
                self.duration.labels(record.api, record.route, model))
            self._request_children[key] = children
        count, duration = children
        count.inc()
        duration.observe(record.seconds)
        if not model:
            return
        per_model = self._model_children.get(model)
        if per_model is None:
            per_model = (self.first_token.labels(model), self.tokens.labels(model, PROMPT),
                         self.tokens.labels(model, GENERATED))
            self._model_children[model] = per_model
        first_token, prompt, generated = per_model
        if record.first_byte_seconds is not None:
            first_token.observe(record.first_byte_seconds)
        if record.prompt_tokens:
            prompt.inc(record.prompt_tokens)
        if record.generated_tokens:
            generated.inc(record.generated_tokens)

    def count_rate_limited(self, key_name: str) -> None:
        """Count a request a rate limit refused; `key_name` "" for a client without a key."""
        child = self._rate_children.get(key_name)
        if child is None:
            child = self._rate_children[key_name] = self.rate_limited.labels(key_name)
        child.inc()

    # ---- runners -------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Count starts, failed starts and crashes (an event bus subscriber)."""
        if not isinstance(event, RunnerStateChanged):
            return  # mostly log lines, several per request: leave at once
        previous = self._last_state.get(event.model)
        self._last_state[event.model] = event.state
        if event.state == _STARTING:
            self.starts.labels(event.model).inc()
        elif event.state == _FAILED:
            # Only a READY runner's own exit (ModelRunner._watch_exit) moves it to FAILED;
            # from STARTING it is a load that failed, not a crash.
            if previous == _READY:
                self.crashes.labels(event.model).inc()
            else:
                self.failed_starts.labels(event.model).inc()

    def _known_model(self, name: str) -> None:
        if name not in self._seen_models:
            self._seen_models.add(name)
            self.starts.labels(name)
            self.crashes.labels(name)
            self.failed_starts.labels(name)

    # ---- exposition ----------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in Prometheus' text format."""
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """`GET /metrics`."""
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics(app: web.Application, metrics: Metrics) -> None:
    """Serve `GET /metrics` on `app` and count its requests (after install_observers)."""
    app[OBSERVERS].append(metrics.observe)
    app.router.add_get("/metrics", metrics.handle)


class _RunnerCollector(Collector):
    """Queue depth, loaded models and runner states, read from the manager at scrape time
    (a gauge kept up to date on every change would cost every request something)."""

    def __init__(self, manager: ManagerSource, seen: Callable[[str], None]) -> None:
        self._manager = manager
        self._seen = seen

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        queue, loaded, states = self._families()
        manager = self._manager()
        ready = 0
        if manager is not None:
            queued = manager.queued_by_model()
            for info in manager.snapshot():
                self._seen(info.name)
                queue.add_metric([info.name], queued.pop(info.name, 0))
                ready += info.state == _READY
                for state in _STATES:
                    states.add_metric([info.name, state], 1.0 if info.state == state else 0.0)
            for name, count in queued.items():  # a model removed while requests waited
                queue.add_metric([name], count)
        loaded.add_metric([], ready)
        return queue, loaded, states

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("llamarunner_queue_depth", "Requests waiting for a model "
                              "(its start, a free slot).", labels=["model"]),
            GaugeMetricFamily("llamarunner_models_loaded", "Runners that are ready."),
            GaugeMetricFamily("llamarunner_runner_state", "1 for each runner's current "
                              "state, 0 for the others.", labels=["model", "state"]),
        )
