"""Fixtures shared by the end-to-end tests of routes served on both listeners."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.both_listeners import both_ports, models
from tests.support.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text model that cannot chat: no template in its file, and a name and architecture
    (llama, not named after a family) that match no family template."""
    return write_tiny_gguf(tmp_path_factory.mktemp("plain") / "plain.gguf", name="plain",
                           chat_template=None)


@pytest.fixture
async def two_api_service(write_config, start_service, llama_server_bin, tiny_model,
                          plain_model):  # type: ignore[no-untyped-def]
    """A started Service with both listeners, serving `tiny` and `plain`."""
    config = write_config(models(tiny_model, plain_model), runtime=llama_server_bin,
                          proxies=both_ports())
    return await start_service(config)
