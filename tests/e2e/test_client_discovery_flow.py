"""Replays an editor's Ollama discovery flow and checks the fields such clients read."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

FLOW = Path(__file__).parents[1] / "data" / "clients" / "copilot_discovery.json"


def fill(body: object, model: str) -> object:
    return json.loads(json.dumps(body).replace("{model}", model))


async def test_discovery_then_streamed_chat(
    write_config, start_service, llama_server_bin, tiny_model
) -> None:
    config = write_config(
        {"tiny": {"path": str(tiny_model), "args": {"ctx-size": 1024, "jinja": True}}},
        runtime=llama_server_bin,
        proxies={"ollama": {"enabled": True, "port": 0},
                 "lmstudio": {"enabled": False, "port": 0}},
    )
    running = await start_service(config, api="ollama")
    steps = json.loads(FLOW.read_text())["steps"]
    models: list[str] = []
    async with aiohttp.ClientSession() as http:
        for step in steps:
            targets = models if step.get("each_model") else [models[0] if models else ""]
            for model in targets:
                body = fill(step.get("body"), model) if "body" in step else None
                async with http.request(step["method"], running.base_url + step["path"],
                                        json=body) as resp:
                    assert resp.status == 200, (step["path"], await resp.text())
                    raw = await resp.read()
                if step["path"] == "/api/version":
                    version = json.loads(raw)["version"]
                    assert tuple(map(int, version.split("."))) >= (0, 6, 4)
                elif step["path"] == "/api/tags":
                    models = [m["model"] for m in json.loads(raw)["models"]]
                    assert models == ["tiny:latest"]
                elif step["path"] == "/api/show":
                    shown = json.loads(raw)
                    arch = shown["model_info"]["general.architecture"]
                    assert shown["model_info"][f"{arch}.context_length"] == 1024
                    assert "tools" in shown["capabilities"]
                else:
                    events = [line[6:] for line in raw.decode().splitlines()
                              if line.startswith("data: ")]
                    assert events[-1] == "[DONE]"
                    text = "".join(
                        (json.loads(e)["choices"][0]["delta"].get("content") or "")
                        for e in events[:-1] if json.loads(e).get("choices"))
                    assert text
