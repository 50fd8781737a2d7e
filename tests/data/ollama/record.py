"""Records what the real llama-server answers to the bodies our Ollama conversions build.

Usage: ``python tests/data/ollama/record.py [path/to/llama-server]``. Each case is an
Ollama request; the script converts it with ``llamarunner.proxy.ollama.convert``, sends the
result to a real llama-server serving the tiny test model and saves request, upstream
body and reply here, so the unit tests run on llama-server's real answers to our bodies.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "app"))

from tests.data.llama_server.record import MODEL_ALIAS, Server, request  # noqa: E402
from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

from llamarunner.proxy.ollama.convert import (  # noqa: E402
    chat_to_openai,
    embed_to_upstream,
    embeddings_to_upstream,
    generate_to_upstream,
)

# A real 1x1 PNG, so the image case reaches llama-server's media check.
PNG_1X1 = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c49444154789c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")).decode()

OPTIONS = {
    "temperature": 0, "top_k": 20, "top_p": 0.9, "min_p": 0.05, "typical_p": 1.0,
    "repeat_penalty": 1.1, "repeat_last_n": 32, "presence_penalty": 0.5,
    "frequency_penalty": 0.5, "seed": 42, "num_predict": 8, "num_keep": 4,
    "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "stop": ["\n\n"],
    "tfs_z": 1.0, "num_ctx": 256,
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}

CHAT_CASES: dict[str, dict[str, Any]] = {
    "chat_options": {
        "model": "tiny", "stream": False, "format": "json", "options": OPTIONS,
        "messages": [{"role": "system", "content": "answer in JSON"},
                     {"role": "user", "content": "hello world"}],
    },
    "chat_think_high_schema": {
        "model": "tiny", "stream": False, "think": "high",
        "format": {"type": "object", "properties": {"a": {"type": "integer"}},
                   "required": ["a"]},
        "options": {"temperature": 0, "num_predict": 8},
        "messages": [{"role": "user", "content": "hello world"}],
    },
    "chat_tools_history": {
        "model": "tiny", "stream": False, "tools": [WEATHER_TOOL],
        "options": {"temperature": 0, "num_predict": 8},
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "", "thinking": "need the tool",
             "tool_calls": [{"function": {"name": "get_weather",
                                          "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21C"},
        ],
    },
    "chat_image_no_vision": {
        "model": "tiny", "stream": False, "options": {"num_predict": 4},
        "messages": [{"role": "user", "content": "what is this?", "images": [PNG_1X1]}],
    },
}
CHAT_STREAM_CASES: dict[str, dict[str, Any]] = {
    "chat_stream_think_false": {
        "model": "tiny", "think": False, "options": {"temperature": 0, "num_predict": 8},
        "messages": [{"role": "user", "content": "hello world"}],
    },
}
GENERATE_CASES: dict[str, dict[str, Any]] = {
    "generate_system": {"model": "tiny", "stream": False, "system": "be brief",
                        "prompt": "hello world",
                        "options": {"temperature": 0, "num_predict": 8}},
    "generate_raw": {"model": "tiny", "stream": False, "raw": True, "prompt": "hello world",
                     "options": {"temperature": 0, "num_predict": 8}},
    "generate_suffix": {"model": "tiny", "stream": False, "prompt": "def f(",
                        "suffix": "    return x", "options": {"num_predict": 8}},
}
GENERATE_STREAM_CASES: dict[str, dict[str, Any]] = {
    "generate_raw_stream": {"model": "tiny", "raw": True, "prompt": "hello world",
                            "options": {"temperature": 0, "num_predict": 8}},
}


def save(name: str, ollama: dict[str, Any], path: str, body: dict[str, Any],
         status: int, reply: bytes, *, stream: bool) -> None:
    record: dict[str, Any] = {"ollama_request": ollama, "upstream_path": path,
                              "upstream_body": body, "status": status}
    if stream and status == 200:
        (HERE / f"{name}.sse").write_bytes(reply)
        record["response_file"] = f"{name}.sse"
    else:
        record["response"] = json.loads(reply)
    (HERE / f"{name}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"recorded {name}: {status} {len(reply)} bytes")


def main(binary: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_gguf(Path(tmp) / "tiny.gguf", context_length=1024)
        servers: list[Server] = []
        try:
            # The rendered tool template alone is longer than 256 tokens.
            srv = Server(binary, model, ["-c", "1024"], Path(tmp) / "main.log")
            servers.append(srv)
            srv.wait_health(None)
            for name, req in {**CHAT_CASES, **CHAT_STREAM_CASES}.items():
                body = chat_to_openai(req, model=MODEL_ALIAS)
                status, _, reply = request(srv.port, "POST", "/v1/chat/completions", body)
                save(name, req, "/v1/chat/completions", body, status, reply,
                     stream=body["stream"])
            # How the tiny model's template renders our tool-call history.
            req = CHAT_CASES["chat_tools_history"]
            body = chat_to_openai(req, model=MODEL_ALIAS)
            status, _, reply = request(srv.port, "POST", "/apply-template", body)
            save("chat_tools_history_template", req, "/apply-template", body, status, reply,
                 stream=False)
            for name, req in {**GENERATE_CASES, **GENERATE_STREAM_CASES}.items():
                path, body = generate_to_upstream(req, model=MODEL_ALIAS)
                status, _, reply = request(srv.port, "POST", path, body)
                save(name, req, path, body, status, reply, stream=body["stream"])
            srv.stop()

            srv = Server(binary, model, ["--embedding", "--pooling", "mean"],
                         Path(tmp) / "emb.log")
            servers.append(srv)
            srv.wait_health(None)
            embed_req = {"model": "tiny", "input": ["hello world", "the cat"],
                         "dimensions": 16}
            body, _ = embed_to_upstream(embed_req, model=MODEL_ALIAS)
            status, _, reply = request(srv.port, "POST", "/v1/embeddings", body)
            save("embed", embed_req, "/v1/embeddings", body, status, reply, stream=False)
            legacy_req = {"model": "tiny", "prompt": "hello world"}
            legacy = embeddings_to_upstream(legacy_req, model=MODEL_ALIAS)
            assert legacy is not None
            status, _, reply = request(srv.port, "POST", "/v1/embeddings", legacy)
            save("embeddings_legacy", legacy_req, "/v1/embeddings", legacy, status, reply,
                 stream=False)
            srv.stop()
        finally:
            for s in servers:
                if s.proc.poll() is None:
                    os.killpg(s.proc.pid, signal.SIGKILL)
                    s.proc.wait()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lcb/build/bin/llama-server")
