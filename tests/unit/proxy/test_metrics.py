"""The Prometheus metrics: the request observer, runner events and the scrape-time gauges."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from llamarunner.core.events import RunnerLogLine, RunnerStateChanged
from llamarunner.proxy.metrics import LATENCY_BUCKETS, Metrics
from llamarunner.proxy.observe import RequestRecord
from llamarunner.runner.manager import RunnerInfo


def record(**fields: Any) -> RequestRecord:
    base: dict[str, Any] = {"api": "openai", "route": "/v1/chat/completions",
                            "method": "POST", "started": 0.0, "status": 200,
                            "seconds": 0.25}
    return RequestRecord(**{**base, **fields})


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_request_counts_once_with_its_labels_and_duration() -> None:
    metrics = Metrics()
    metrics.observe(record(model="tiny", seconds=0.3))
    metrics.observe(record(model="tiny", seconds=0.02))
    labels = {"api": "openai", "route": "/v1/chat/completions", "model": "tiny"}
    assert value(metrics, "llamarunner_requests_total", **labels, status="200") == 2
    assert value(metrics, "llamarunner_request_duration_seconds_count", **labels) == 2
    assert value(metrics, "llamarunner_request_duration_seconds_sum", **labels) == 0.32
    assert value(metrics, "llamarunner_request_duration_seconds_bucket", **labels,
                 le="0.025") == 1


def test_statuses_apis_and_routes_are_separate_series() -> None:
    metrics = Metrics()
    metrics.observe(record(model="tiny"))
    metrics.observe(record(model="tiny", status=499))
    metrics.observe(record(api="ollama", route="/api/chat", model="tiny"))
    assert value(metrics, "llamarunner_requests_total", api="openai",
                 route="/v1/chat/completions", model="tiny", status="499") == 1
    assert value(metrics, "llamarunner_requests_total", api="ollama", route="/api/chat",
                 model="tiny", status="200") == 1


def test_a_request_without_a_model_counts_with_an_empty_model_and_no_tokens() -> None:
    metrics = Metrics()
    metrics.observe(record(status=404, first_byte_seconds=0.1, prompt_tokens=3))
    metrics.observe(record(route="unmatched", method="GET", status=404))
    assert value(metrics, "llamarunner_requests_total", api="openai",
                 route="/v1/chat/completions", model="", status="404") == 1
    assert value(metrics, "llamarunner_requests_total", api="openai", route="unmatched",
                 model="", status="404") == 1
    text = metrics.render().decode()
    assert "llamarunner_tokens_total{" not in text
    assert "llamarunner_time_to_first_token_seconds_count{" not in text


def test_tokens_and_time_to_first_token_count_per_model() -> None:
    metrics = Metrics()
    metrics.observe(record(model="tiny", prompt_tokens=12, generated_tokens=5,
                           first_byte_seconds=0.04))
    metrics.observe(record(model="tiny", prompt_tokens=8, generated_tokens=7))
    metrics.observe(record(model="tiny-b", generated_tokens=0))
    assert value(metrics, "llamarunner_tokens_total", model="tiny", kind="prompt") == 20
    assert value(metrics, "llamarunner_tokens_total", model="tiny", kind="generated") == 12
    assert value(metrics, "llamarunner_tokens_total", model="tiny-b", kind="generated") == 0
    assert value(metrics, "llamarunner_time_to_first_token_seconds_count", model="tiny") == 1
    assert value(metrics, "llamarunner_time_to_first_token_seconds_sum", model="tiny") == 0.04
    assert value(metrics, "llamarunner_time_to_first_token_seconds_count", model="tiny-b") == 0


def test_buckets_reach_from_milliseconds_to_ten_minutes() -> None:
    assert LATENCY_BUCKETS[0] == 0.005 and LATENCY_BUCKETS[-1] == 600
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    metrics = Metrics()
    metrics.observe(record(model="tiny", seconds=400.0))
    assert value(metrics, "llamarunner_request_duration_seconds_bucket", api="openai",
                 route="/v1/chat/completions", model="tiny", le="300.0") == 0
    assert value(metrics, "llamarunner_request_duration_seconds_bucket", api="openai",
                 route="/v1/chat/completions", model="tiny", le="600.0") == 1


def test_rate_limited_counts_per_key_name() -> None:
    metrics = Metrics()
    metrics.count_rate_limited("ci")
    metrics.count_rate_limited("ci")
    metrics.count_rate_limited("")
    assert value(metrics, "llamarunner_rate_limited_total", key="ci") == 2
    assert value(metrics, "llamarunner_rate_limited_total", key="") == 1


def changed(model: str, state: str, reason: str | None = None) -> RunnerStateChanged:
    return RunnerStateChanged(model, state, reason)


def test_starts_crashes_and_failed_starts_from_state_changes() -> None:
    metrics = Metrics()
    for event in (changed("tiny", "starting"), changed("tiny", "ready"),
                  RunnerLogLine("tiny", "srv  log line"),
                  changed("tiny", "failed", "exited with code -9"),  # a crash
                  changed("tiny", "starting"),
                  changed("tiny", "failed", "exited while loading"),  # not a crash
                  changed("tiny", "starting"), changed("tiny", "ready"),
                  changed("tiny", "stopping", "idle"), changed("tiny", "stopped")):
        metrics.on_event(event)
    assert value(metrics, "llamarunner_runner_starts_total", model="tiny") == 3
    assert value(metrics, "llamarunner_runner_crashes_total", model="tiny") == 1
    assert value(metrics, "llamarunner_runner_failed_starts_total", model="tiny") == 1


class FakeManager:
    def __init__(self, states: dict[str, str], queued: dict[str, int]) -> None:
        self.states = states
        self.queued = queued

    def snapshot(self) -> list[RunnerInfo]:
        return [RunnerInfo(name=name, state=state, pid=None, port=None, inflight=0,
                           loaded_at=None, expires_at=None, last_error=None,
                           model_path="/models/secret.gguf", args={})
                for name, state in self.states.items()]

    def queued_by_model(self) -> dict[str, int]:
        return dict(self.queued)


def test_runner_gauges_are_read_from_the_manager_at_scrape_time() -> None:
    manager = FakeManager({"tiny": "ready", "tiny-b": "starting", "big": "stopped"},
                          {"tiny-b": 2})
    metrics = Metrics(lambda: manager)  # type: ignore[arg-type, return-value]
    assert value(metrics, "llamarunner_models_loaded") == 1
    assert value(metrics, "llamarunner_queue_depth", model="tiny-b") == 2
    assert value(metrics, "llamarunner_queue_depth", model="tiny") == 0
    assert value(metrics, "llamarunner_runner_state", model="tiny-b", state="starting") == 1
    assert value(metrics, "llamarunner_runner_state", model="tiny-b", state="ready") == 0
    assert {value(metrics, "llamarunner_runner_state", model="big", state=state)
            for state in ("starting", "ready", "stopping", "failed")} == {0}
    manager.states["tiny-b"] = "ready"
    manager.queued.clear()
    assert value(metrics, "llamarunner_models_loaded") == 2
    assert value(metrics, "llamarunner_queue_depth", model="tiny-b") == 0
    assert "secret.gguf" not in metrics.render().decode()


def test_start_and_crash_counters_exist_at_zero_for_every_known_model() -> None:
    # rate() and increase() miss the first start of a series that appears at 1.
    manager = FakeManager({"tiny": "stopped"}, {})
    metrics = Metrics(lambda: manager)  # type: ignore[arg-type, return-value]
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    for name in ("llamarunner_runner_starts", "llamarunner_runner_crashes"):
        samples = [s for s in families[name].samples if s.name.endswith("_total")]
        assert [(s.labels, s.value) for s in samples] == [({"model": "tiny"}, 0.0)]


def test_a_service_not_started_yet_has_no_runners() -> None:
    metrics = Metrics()
    assert value(metrics, "llamarunner_models_loaded") == 0
    assert "llamarunner_queue_depth{" not in metrics.render().decode()


def test_each_metrics_object_has_its_own_registry_and_process_metrics() -> None:
    one, two = Metrics(), Metrics()
    one.observe(record(model="tiny"))
    assert value(two, "llamarunner_requests_total", api="openai",
                 route="/v1/chat/completions", model="tiny", status="200") is None
    names = {f.name for f in text_string_to_metric_families(one.render().decode())}
    assert "python_info" in names
    if sys.platform.startswith("linux"):  # the process collector reads /proc
        assert {"process_resident_memory_bytes", "process_cpu_seconds"} <= names
    assert not any(name.endswith("_created") for name in names)


DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana-dashboard.json"


def test_the_grafana_dashboard_asks_only_for_metrics_the_app_serves() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    manager = FakeManager({"tiny": "ready"}, {})
    metrics = Metrics(lambda: manager)  # type: ignore[arg-type, return-value]
    metrics.observe(record(model="tiny", first_byte_seconds=0.1, prompt_tokens=1,
                           generated_tokens=1))
    metrics.count_rate_limited("ci")
    metrics.on_event(changed("tiny", "starting"))
    served = {sample.name for family in text_string_to_metric_families(
        metrics.render().decode()) for sample in family.samples}
    asked = {name for panel in dashboard["panels"] for target in panel.get("targets", ())
             for name in re.findall(r"\b((?:llamarunner|process)_\w+)", target["expr"])}
    assert asked, "no queries found"
    assert asked <= served, sorted(asked - served)
