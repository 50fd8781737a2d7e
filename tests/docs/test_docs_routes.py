"""docs/API_REFERENCE.md names every route both listeners serve, and only those."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from tests.docs.markdown_docs import API_REFERENCE, code_blocks, endpoint_sections

from llamarunner.config import Config, ConfigStore
from llamarunner.service import Service

Route = tuple[int, str, str]  # port, method, canonical path


def _served_routes(tmp_path: Path) -> tuple[set[Route], set[Route]]:
    """(routes, HEAD routes) of the applications the Service's listeners serve."""
    service = Service(ConfigStore(tmp_path / "config.json"),
                      metadata_cache_file=tmp_path / "gguf-metadata.json")
    ports = {name: proxy.port for name, proxy in Config.default().proxies.items()}
    routes: set[Route] = set()
    heads: set[Route] = set()
    assert set(service.listeners.apis) == set(ports), "a listener without a default port"
    for api in service.listeners.apis:
        app: web.Application = service.listeners.build_app(api)
        for route in app.router.routes():
            canonical = route.resource.canonical if route.resource is not None else ""
            entry = (ports[api], route.method, canonical)
            # add_get also registers HEAD for the same path; those count only if documented.
            (heads if route.method == "HEAD" else routes).add(entry)
    return routes, heads


def _documented() -> dict[Route, str]:
    found: dict[Route, str] = {}
    for section in endpoint_sections(API_REFERENCE.read_text()):
        for endpoint in section.endpoints:
            assert endpoint.ports, (
                f"API_REFERENCE.md:{endpoint.line}: {endpoint.heading!r} is not under a "
                "'## ... (port N)' or '(ports N and M)' section")
            for port in endpoint.ports:
                key = (port, endpoint.method, endpoint.path)
                assert key not in found, f"API_REFERENCE.md:{endpoint.line}: {key} twice"
                found[key] = f"API_REFERENCE.md:{endpoint.line}"
    return found


def test_every_served_route_is_documented_and_every_documented_one_is_served(
        tmp_path: Path) -> None:
    routes, heads = _served_routes(tmp_path)
    documented = _documented()
    undocumented = sorted(routes - set(documented))
    assert not undocumented, (
        "routes served but missing from docs/API_REFERENCE.md (add a "
        "'### `METHOD /path`' heading under the section of their port): "
        f"{undocumented}")
    not_served = sorted(f"{where}: {key}" for key, where in documented.items()
                        if key not in routes | heads)
    assert not not_served, f"documented but not served: {not_served}"


def test_the_reference_lists_both_ports() -> None:
    ports = {port for section in endpoint_sections(API_REFERENCE.read_text())
             for endpoint in section.endpoints for port in endpoint.ports}
    assert ports == {proxy.port for proxy in Config.default().proxies.values()}


def test_json_samples_in_the_reference_parse() -> None:
    for block in code_blocks(API_REFERENCE.read_text()):
        if block.language == "json":
            try:
                json.loads(block.text)
            except ValueError as exc:
                raise AssertionError(f"API_REFERENCE.md:{block.line}: {exc}") from exc
