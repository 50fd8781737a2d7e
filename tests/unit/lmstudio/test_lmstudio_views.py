"""LM Studio's model entries, completion extras, v1 errors and annotated SSE streams."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from llamarunner.library.metadata import GGUFMetadata
from llamarunner.proxy.lmstudio.views import (
    CompletionContext,
    StreamAnnotator,
    bits_per_weight,
    load_response,
    model_info,
    model_type,
    publisher,
    runtime_name,
    served_context,
    v0_model,
    v1_error,
    v1_model,
)
from llamarunner.proxy.ollama.stream import DONE, parse_sse_lines

DATA = Path(__file__).parents[2] / "data" / "llama_server"

BASE = GGUFMetadata(
    path="/models/m.gguf", file_size=1000, mtime_ns=1, version=3, architecture="llama",
    name="Meta Llama 3.1 8B Instruct", basename=None, size_label="8B",
    parameter_count=8_000_000_000, file_type=15, quantization="Q4_K_M", context_length=131072,
    embedding_length=4096, block_count=32, head_count=32, head_count_kv=8,
    feed_forward_length=14336, vocab_size=128256, tokenizer_model="gpt2", bos_token_id=1,
    eos_token_id=2, chat_template=None, pooling_type=None, is_projector=False,
    projector_type=None, has_vision_encoder=False, model_info={},
)


def meta(**changes: Any) -> GGUFMetadata:
    return dataclasses.replace(BASE, **changes)


# --- models -------------------------------------------------------------------------------


@pytest.mark.parametrize("caps,expected", [
    (["completion", "tools"], "llm"),
    (["completion", "vision"], "vlm"),
    (["completion", "tools", "vision"], "vlm"),
    (["embedding"], "embeddings"),
    (["completion", "tools", "embedding"], "embeddings"),  # served with --embedding
    ([], "llm"),
])
def test_model_type(caps, expected) -> None:
    assert model_type(caps) == expected


@pytest.mark.parametrize("path,info,expected", [
    ("/home/u/.lmstudio/models/lmstudio-community/Qwen-GGUF/q.gguf", {}, "lmstudio-community"),
    ("/home/u/.cache/lm-studio/models/bartowski/L-GGUF/l.gguf", {"general.organization": "x"},
     "bartowski"),  # the store folder is what LM Studio itself shows
    ("/models/q.gguf", {"general.organization": " Qwen "}, "Qwen"),
    ("/models/q.gguf", {"general.organization": ""}, "local"),
    ("/models/q.gguf", {}, "local"),
    ("/home/u/.lmstudio/models/q.gguf", {}, "local"),  # not publisher/repo/file
])
def test_publisher(path, info, expected) -> None:
    assert publisher(meta(model_info=info), path) == expected


def test_publisher_without_metadata() -> None:
    assert publisher(None, "/m.gguf") == "local"


@pytest.mark.parametrize("quant,bits", [
    ("Q4_K_M", 4), ("Q8_0", 8), ("Q6_K", 6), ("IQ4_XS", 4), ("IQ2_XXS", 2), ("TQ1_0", 1),
    ("Q1_0", 1), ("F32", 32), ("F16", 16), ("BF16", 16), ("MXFP4", 4), ("q5_k_s", 5),
    ("weird", None), ("", None), (None, None),
])
def test_bits_per_weight(quant, bits) -> None:
    assert bits_per_weight(quant) == bits


@pytest.mark.parametrize("args,info,expected", [
    ({"ctx-size": 2048}, BASE, 2048),
    ({"c": 1024}, BASE, 1024),
    ({"ctx-size": 0}, BASE, 131072),  # 0 tells llama-server to use the training context
    ({}, BASE, 131072),
    ({}, None, None),
    ({"ctx-size": True}, None, None),
])
def test_served_context(args, info, expected) -> None:
    assert served_context(args, info) == expected


def test_v0_entry_matches_lm_studios_fields() -> None:
    entry = v0_model("llama-3.1-8b", meta(), capabilities=["completion", "tools"],
                     path="/m/llama.gguf", args={"ctx-size": 4096}, loaded=False)
    assert entry == {
        "id": "llama-3.1-8b", "object": "model", "type": "llm", "publisher": "local",
        "arch": "llama", "compatibility_type": "gguf", "quantization": "Q4_K_M",
        "state": "not-loaded", "max_context_length": 131072, "capabilities": ["tool_use"],
    }


def test_v0_loaded_entry_tells_the_served_context() -> None:
    entry = v0_model("m", meta(), capabilities=["completion"], path="/m.gguf",
                     args={"ctx-size": 8192}, loaded=True)
    assert entry["state"] == "loaded"
    assert entry["loaded_context_length"] == 8192
    assert entry["max_context_length"] == 131072
    assert entry["capabilities"] == []


def test_v0_embedding_model_never_offers_tools() -> None:
    entry = v0_model("e", meta(architecture="nomic-bert"),
                     capabilities=["completion", "tools", "embedding"], path="/e.gguf",
                     args={}, loaded=False)
    assert entry["type"] == "embeddings" and entry["capabilities"] == []


def test_v0_entry_without_metadata_keeps_strings() -> None:
    entry = v0_model("x", None, capabilities=["completion"], path="/x.gguf",
                     args={"ctx-size": 2048}, loaded=False)
    assert entry["arch"] == "unknown" and entry["quantization"] == "unknown"
    assert entry["max_context_length"] == 2048  # the configured one is all there is


def test_v1_llm_entry() -> None:
    entry = v1_model("llama-3.1-8b", meta(), capabilities=["completion", "tools", "vision"],
                     path="/home/u/.lmstudio/models/lmstudio-community/L/l.gguf",
                     size_bytes=4_920_000_000, args={"ctx-size": 4096}, loaded=True)
    assert entry == {
        "type": "llm",
        "publisher": "lmstudio-community",
        "key": "llama-3.1-8b",
        "display_name": "Meta Llama 3.1 8B Instruct",
        "architecture": "llama",
        "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
        "size_bytes": 4_920_000_000,
        "params_string": "8B",
        "loaded_instances": [{"id": "llama-3.1-8b", "config": {"context_length": 4096}}],
        "max_context_length": 131072,
        "format": "gguf",
        "capabilities": {"vision": True, "trained_for_tool_use": True},
        "description": None,
    }


def test_v1_embedding_entry_leaves_out_llm_fields() -> None:
    entry = v1_model("embedder", meta(name=None, size_label=None, quantization="F16"),
                     capabilities=["embedding"], path="/e.gguf", size_bytes=10, args={},
                     loaded=False)
    assert entry["type"] == "embedding"
    assert entry["display_name"] == "embedder"
    assert entry["params_string"] is None
    assert entry["quantization"] == {"name": "F16", "bits_per_weight": 16}
    assert entry["loaded_instances"] == []
    for absent in ("architecture", "capabilities", "description"):
        assert absent not in entry


def test_load_response_is_lm_studios_current_shape() -> None:
    assert load_response("m", {"ctx-size": 1024}, meta(), 1.23456) == {
        "type": "llm", "instance_id": "m", "load_time_seconds": 1.235, "status": "loaded"}
    assert load_response("e", {}, None, 0.0, embedding=True)["type"] == "embedding"


@pytest.mark.parametrize("args,embedding,config", [
    ({"ctx-size": 1024}, False, {"context_length": 1024, "eval_batch_size": 2048}),
    ({"ctx-size": 1024, "batch-size": 512}, False,
     {"context_length": 1024, "eval_batch_size": 512}),
    ({"c": 2048, "b": 256, "flash-attn": "on"}, False,
     {"context_length": 2048, "eval_batch_size": 256, "flash_attention": True}),
    ({"fa": "off", "no-kv-offload": True}, False,
     {"context_length": 4096, "eval_batch_size": 2048, "flash_attention": False,
      "offload_kv_cache_to_gpu": False}),
    ({"flash-attn": "auto"}, False, {"context_length": 4096, "eval_batch_size": 2048}),
    ({"ctx-size": 512, "batch-size": 64}, True, {"context_length": 512}),
])
def test_load_config_echoed_on_request(args, embedding, config) -> None:
    # meta() trains for 4096 tokens: the context without ctx-size.
    echoed = load_response("m", args, meta(context_length=4096), 0.5, embedding=embedding,
                           echo_config=True)
    assert echoed["load_config"] == config
    assert "load_config" not in load_response("m", args, meta(), 0.5, embedding=embedding)


def test_load_config_without_metadata_or_context() -> None:
    assert load_response("m", {}, None, 0.0, echo_config=True)["load_config"] == {
        "eval_batch_size": 2048}


@pytest.mark.parametrize("status,kind", [
    (400, "invalid_request"), (404, "model_not_found"), (413, "invalid_request"),
    (429, "invalid_request"), (501, "not_implemented"), (502, "internal_error"),
    (503, "internal_error"),
])
def test_v1_error_types(status, kind) -> None:
    assert v1_error("boom", status=status) == {"error": {"type": kind, "message": "boom"}}


def test_v1_error_names_code_and_param() -> None:
    body = v1_error("'model' is required", status=400, code="invalid_request", param="model")
    assert body["error"] == {"type": "invalid_request", "message": "'model' is required",
                             "code": "invalid_request", "param": "model"}


# --- completion extras --------------------------------------------------------------------


@pytest.mark.parametrize("system,machine,name", [
    ("Linux", "x86_64", "llama.cpp-linux-x86_64"),
    ("Darwin", "arm64", "llama.cpp-mac-arm64"),
    ("Windows", "AMD64", "llama.cpp-win-x86_64"),
    ("Linux", "aarch64", "llama.cpp-linux-arm64"),
    ("", "", "llama.cpp-unknown-unknown"),
])
def test_runtime_name(system, machine, name) -> None:
    assert runtime_name(system, machine) == name


def context(**changes: Any) -> CompletionContext:
    base = CompletionContext(model_info=model_info(meta(), 4096),
                             runtime_name="llama.cpp-linux-x86_64",
                             runtime_version="11434.0.0", max_tokens=8)
    return dataclasses.replace(base, **changes)


def test_non_streamed_chat_gets_lm_studio_fields_last() -> None:
    response = json.loads((DATA / "chat.json").read_text())
    original = dict(response)
    out = context().annotate(response)
    assert list(out)[: len(original)] == list(original)  # llama-server's fields untouched
    assert list(out)[-3:] == ["stats", "model_info", "runtime"]
    assert out["stats"] == {"tokens_per_second": 4036.908881199539,
                            "time_to_first_token": 0.002479, "generation_time": 0.004213,
                            "stop_reason": "maxPredictedTokensReached"}
    assert out["model_info"] == {"arch": "llama", "quant": "Q4_K_M", "format": "gguf",
                                 "context_length": 4096}
    assert out["runtime"] == {"name": "llama.cpp-linux-x86_64", "version": "11434.0.0",
                              "supported_formats": ["gguf"]}


def test_runtime_version_falls_back_to_llama_cpp_build() -> None:
    response = json.loads((DATA / "completions.json").read_text())
    assert context(runtime_version=None).extras(response)["runtime"]["version"] == "b0-unknown"
    assert context(runtime_version=None).extras({})["runtime"]["version"] == "unknown"


def test_model_info_without_metadata() -> None:
    assert model_info(None, None) == {"arch": "unknown", "quant": "unknown", "format": "gguf",
                                      "context_length": None}


# --- streams ------------------------------------------------------------------------------


def events(raw: bytes) -> list[bytes]:
    payloads, rest = parse_sse_lines(raw, final=True)
    assert rest == b""
    return payloads


def annotate(raw: bytes, size: int) -> tuple[bytes, StreamAnnotator, list[bytes]]:
    """Feed ``raw`` in ``size``-byte reads; return the output, annotator and each write."""
    annotator = StreamAnnotator(context().extras)
    writes = [annotator.feed(raw[i:i + size]) for i in range(0, len(raw), size)]
    writes.append(annotator.close())
    return b"".join(writes), annotator, writes


@pytest.mark.parametrize("source", ["chat_stream.sse", "chat_stream_usage.sse",
                                    "completions_stream.sse"])
@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_only_the_last_event_before_done_changes(source: str, size: int) -> None:
    raw = (DATA / source).read_bytes()
    out, annotator, _ = annotate(raw, size)
    assert annotator.done and not annotator.error
    before, after = events(raw), events(out)
    assert len(before) == len(after) and after[-1] == DONE
    assert after[:-2] == before[:-2]  # byte for byte
    last_in, last_out = json.loads(before[-2]), json.loads(after[-2])
    assert {k: last_out[k] for k in last_in} == last_in
    assert set(last_out) - set(last_in) == {"stats", "model_info", "runtime"}
    timings = last_in["timings"]
    assert last_out["stats"]["tokens_per_second"] == timings["predicted_per_second"]
    assert last_out["stats"]["stop_reason"] == "maxPredictedTokensReached"
    assert out.endswith(b"data: [DONE]\n\n")


def test_usage_stream_takes_finish_reason_from_an_earlier_event() -> None:
    raw = (DATA / "chat_stream_usage.sse").read_bytes()
    out, _, _ = annotate(raw, 100_000)
    last = json.loads(events(out)[-2])
    assert last["choices"] == [] and "usage" in last  # the include_usage event
    assert last["stats"]["stop_reason"] == "maxPredictedTokensReached"


def test_events_go_out_as_soon_as_they_are_complete() -> None:
    raw = (DATA / "chat_stream.sse").read_bytes()
    annotator = StreamAnnotator(context().extras)
    separator = raw.index(b"\n\n") + 2
    assert annotator.feed(raw[:separator - 1]) == b""  # not complete yet
    assert annotator.feed(raw[separator - 1:separator]) == raw[:separator]


def test_a_stream_without_done_is_relayed_unannotated() -> None:
    raw = (DATA / "chat_stream.sse").read_bytes()
    cut = raw[: raw.rindex(b"data: [DONE]")]
    out, annotator, _ = annotate(cut, 50)
    assert out == cut and not annotator.done and not annotator.error


def test_an_error_event_is_passed_on_and_ends_the_stream() -> None:
    raw = (DATA / "chat_stream.sse").read_bytes()
    first = raw[: raw.index(b"\n\n") + 2]
    error = b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n'
    out, annotator, _ = annotate(first + error, 100_000)
    assert out == first + error and annotator.error and not annotator.done


def test_an_event_held_back_is_released_unchanged_when_more_follow() -> None:
    # timings_per_token puts timings on every event: each waits only for the next one.
    one = b'data: {"choices":[{"delta":{"content":"a"},"finish_reason":null}],"timings":{}}\n\n'
    two = b'data: {"choices":[{"delta":{"content":"b"},"finish_reason":null}],"timings":{}}\n\n'
    annotator = StreamAnnotator(context().extras)
    assert annotator.feed(one) == b""
    assert annotator.feed(two) == one
    out = annotator.feed(b"data: [DONE]\n\n")
    assert json.loads(events(out)[0])["stats"]["stop_reason"] == "failed"


def test_non_json_payloads_pass_through() -> None:
    annotator = StreamAnnotator(context().extras)
    assert annotator.feed(b"data: hello\n\n: ping\n\n") == b"data: hello\n\n"
