"""Table tests for the Ollama <-> llama-server body conversions, on recorded payloads."""

from __future__ import annotations

import base64
import copy
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from ollama._types import ChatResponse, EmbeddingsResponse, EmbedResponse, GenerateResponse

from llamarunner.proxy.ollama.convert import (
    CHAT_PATH,
    COMPLETION_PATH,
    DEFAULT_MEDIA_MARKER,
    INFILL_PATH,
    RAW_ARGUMENTS_KEY,
    batch_limit_from_error,
    chat_response_to_ollama,
    chat_to_openai,
    chat_to_upstream,
    completion_prompt_parts,
    done_reason_from,
    durations_from_timings,
    embed_response_to_ollama,
    embed_to_upstream,
    embed_token_limit,
    embeddings_response_to_ollama,
    embeddings_to_upstream,
    fit_tokens,
    fits_untokenized,
    generate_response_to_ollama,
    generate_to_upstream,
    load_only_reply,
    logprobs_requested,
    logprobs_to_ollama,
    needs_chat_prompt,
    request_context,
    tool_calls_from_openai,
)
from llamarunner.proxy.ollama.options import OllamaRequestError

DATA = Path(__file__).resolve().parents[2] / "data"
LLAMA = DATA / "llama_server"
RECORDED = DATA / "ollama"
IMAGES = RECORDED / "images"
CREATED = "2025-01-31T12:34:56.123456789Z"


def llama(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LLAMA / name).read_text())
    return data


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tiny_png() -> bytes:
    """A real 1x1 RGB PNG, built from its chunks."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "client-name", "messages": messages, **extra}


def user(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


# --- chat request ------------------------------------------------------------------------


def test_minimal_chat_streams_by_default() -> None:
    body = chat_to_openai(chat([user("hello")]), model="tiny")
    assert body == {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "reasoning_format": "deepseek",
    }


@pytest.mark.parametrize(("stream", "has_options"), [(True, True), (False, False)])
def test_stream_flag(stream: bool, has_options: bool) -> None:
    body = chat_to_openai(chat([user()], stream=stream), model="m")
    assert body["stream"] is stream
    assert ("stream_options" in body) is has_options


def test_model_comes_from_the_route_and_roles_are_lowercased() -> None:
    body = chat_to_openai(chat([{"role": "SYSTEM", "content": "s"}, {"role": "User",
                                                                      "content": "u"}]),
                          model="real-model")
    assert body["model"] == "real-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_missing_content_and_messages_are_empty() -> None:
    assert chat_to_openai({"model": "x"}, model="m")["messages"] == []
    assert chat_to_openai(chat([{"role": "user"}]), model="m")["messages"] == [
        {"role": "user", "content": ""}]


@pytest.mark.parametrize(
    ("file", "mime"),
    [
        ("python.png", "image/png"),
        ("python.jpg", "image/jpeg"),
        ("python.gif", "image/gif"),
        ("python.webp", "image/webp"),
        ("python.bmp", "image/bmp"),
    ],
)
def test_images_become_typed_data_uris(file: str, mime: str) -> None:
    data = (IMAGES / file).read_bytes()
    body = chat_to_openai(chat([user("what is this?", images=[b64(data)])]), model="m")
    assert body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64(data)}"}},
        {"type": "text", "text": "what is this?"},
    ]


def test_built_png_and_several_images_keep_their_order() -> None:
    png, jpg = tiny_png(), (IMAGES / "python.jpg").read_bytes()
    body = chat_to_openai(chat([user("", images=[b64(png), b64(jpg)])]), model="m")
    urls = [part["image_url"]["url"] for part in body["messages"][0]["content"]]
    assert urls == [f"data:image/png;base64,{b64(png)}", f"data:image/jpeg;base64,{b64(jpg)}"]


def test_unknown_image_format_is_sent_as_bare_base64() -> None:
    # llama-server only takes data:image/... URIs; bare base64 lets stb_image decide.
    tiff = b64((IMAGES / "python.tiff").read_bytes())
    body = chat_to_openai(chat([user("x", images=[tiff])]), model="m")
    assert body["messages"][0]["content"][0]["image_url"]["url"] == tiff


def test_image_given_as_data_uri_is_accepted() -> None:
    png = b64(tiny_png())
    body = chat_to_openai(chat([user("x", images=[f"data:image/png;base64,{png}"])]),
                          model="m")
    assert body["messages"][0]["content"][0]["image_url"]["url"] == (
        f"data:image/png;base64,{png}")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("not base64!", "illegal base64 data at input byte 3"),
        ("iVBORw0KGgo", "illegal base64 data at input byte 8"),  # missing padding
        ("ab=c", "illegal base64 data at input byte 2"),
        ("%%%%", "illegal base64 data at input byte 0"),
        (42, "json: cannot unmarshal number into Go struct field "
             "Message.messages.0.images of type api.ImageData"),
    ],
)
def test_invalid_images_are_refused(image: object, message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        chat_to_openai(chat([user("x", images=[image])]), model="m")
    assert str(info.value) == message


def test_assistant_thinking_goes_back_as_reasoning_content() -> None:
    body = chat_to_openai(chat([
        user("q"), {"role": "assistant", "content": "a", "thinking": "hmm"},
        user("q2", thinking="ignored on user turns"),
    ]), model="m")
    assert body["messages"][1] == {"role": "assistant", "content": "a",
                                   "reasoning_content": "hmm"}
    assert "reasoning_content" not in body["messages"][2]


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


def test_tool_calls_get_ids_and_tool_replies_find_them() -> None:
    body = chat_to_openai(chat([
        user("weather in Paris and Rome? time?"),
        {"role": "assistant", "content": "", "tool_calls": [
            call("get_weather", city="Paris"), call("get_weather", city="Rome"),
            call("get_time")]},
        {"role": "tool", "tool_name": "get_time", "content": "noon"},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
        {"role": "tool", "content": "rainy"},  # no name: the oldest open call
    ], tools=[WEATHER]), model="m")
    assistant = body["messages"][1]
    assert assistant["tool_calls"] == [
        {"id": "call_0", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert body["messages"][2:] == [
        {"role": "tool", "content": "noon", "name": "get_time", "tool_call_id": "call_2"},
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "call_0"},
        {"role": "tool", "content": "rainy", "tool_call_id": "call_1"},
    ]
    assert body["tools"] == [WEATHER]


def test_tool_call_ids_from_the_client_are_kept() -> None:
    body = chat_to_openai(chat([
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abc123", "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "1"},
        {"role": "tool", "tool_name": "f", "content": "late reply, nothing open"},
    ]), model="m")
    assert body["messages"][0]["tool_calls"][0]["id"] == "call_abc123"
    assert body["messages"][1]["tool_call_id"] == "call_abc123"
    assert "tool_call_id" not in body["messages"][2]


@pytest.mark.parametrize(
    ("arguments", "encoded"),
    [
        ({"city": "Zürich", "days": 3}, '{"city": "Zürich", "days": 3}'),
        ({}, "{}"),
        (None, "{}"),
        ('{"a": [1, 2]}', '{"a": [1, 2]}'),  # OpenAI-style string, when it is an object
        ("", "{}"),
    ],
)
def test_tool_call_arguments_are_json_encoded(arguments: object, encoded: str) -> None:
    msg = {"role": "assistant", "content": "",
           "tool_calls": [{"function": {"name": "f", "arguments": arguments}}]}
    body = chat_to_openai(chat([msg]), model="m")
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == encoded


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", 5, [1]])
def test_tool_call_arguments_must_be_an_object(arguments: object) -> None:
    msg = {"role": "assistant", "tool_calls": [{"function": {"name": "f",
                                                              "arguments": arguments}}]}
    with pytest.raises(OllamaRequestError, match=r"ToolCallFunction\.arguments"):
        chat_to_openai(chat([msg]), model="m")


def test_tool_calls_round_trip_ollama_openai_ollama() -> None:
    original: list[dict[str, Any]] = [
        {"id": "call_x1", "function": {"name": "get_weather",
                                       "arguments": {"city": "Paris", "unit": "C"}}},
        {"function": {"name": "lookup", "arguments": {"q": {"nested": [1, 2.5, None]}}}},
    ]
    body = chat_to_openai(chat([{"role": "assistant", "content": "", "tool_calls": original}]),
                          model="m")
    back = tool_calls_from_openai(body["messages"][0]["tool_calls"])
    assert back == [
        {"id": "call_x1", "function": {"index": 0, "name": "get_weather",
                                       "arguments": {"city": "Paris", "unit": "C"}}},
        {"id": "call_1", "function": {"index": 1, "name": "lookup",
                                      "arguments": {"q": {"nested": [1, 2.5, None]}}}},
    ]
    reply = {"choices": [{"message": {"role": "assistant", "content": None,
                                      "tool_calls": body["messages"][0]["tool_calls"]},
                          "finish_reason": "tool_calls"}]}
    out = chat_response_to_ollama(reply, model="m", created_at=CREATED, total_ns=5, load_ns=0)
    validated = ChatResponse.model_validate(out)
    assert validated.message.tool_calls is not None
    assert [(c.function.name, dict(c.function.arguments))
            for c in validated.message.tool_calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in original]
    assert out["done_reason"] == "stop"


@pytest.mark.parametrize(
    ("think", "fields"),
    [
        (None, {"reasoning_format": "deepseek"}),
        (True, {"reasoning_format": "deepseek",
                "chat_template_kwargs": {"enable_thinking": True}}),
        (False, {"reasoning_format": "deepseek",
                 "chat_template_kwargs": {"enable_thinking": False},
                 "reasoning_effort": "none"}),
        ("low", {"reasoning_format": "deepseek",
                 "chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "low"}),
        ("medium", {"reasoning_format": "deepseek",
                    "chat_template_kwargs": {"enable_thinking": True},
                    "reasoning_effort": "medium"}),
        ("high", {"reasoning_format": "deepseek",
                  "chat_template_kwargs": {"enable_thinking": True},
                  "reasoning_effort": "high"}),
    ],
)
def test_think(think: object, fields: dict[str, Any]) -> None:
    body = chat_to_openai(chat([user()], think=think), model="m")
    got = {k: body[k] for k in ("reasoning_format", "chat_template_kwargs", "reasoning_effort")
           if k in body}
    assert got == fields


@pytest.mark.parametrize(
    ("think", "message"),
    [
        ("max", 'invalid think value: "max" (must be "high", "medium", "low", true, or false)'),
        ("true", 'invalid think value: "true" (must be "high", "medium", "low", true, or '
                 "false)"),
        (1, 'think must be a boolean or string ("high", "medium", "low", true, or false)'),
        ({}, 'think must be a boolean or string ("high", "medium", "low", true, or false)'),
    ],
)
def test_think_rejects(think: object, message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        chat_to_openai(chat([user()], think=think), model="m")
    assert str(info.value) == message


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("fmt", "response_format"),
    [
        (None, None),
        ("", None),
        ("json", {"type": "json_object"}),
        (SCHEMA, {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}),
    ],
)
def test_chat_format(fmt: object, response_format: dict[str, Any] | None) -> None:
    body = chat_to_openai(chat([user()], format=fmt), model="m")
    assert body.get("response_format") == response_format


def test_chat_format_invalid() -> None:
    with pytest.raises(OllamaRequestError, match=r'^invalid format: "\\"yaml\\""; expected'):
        chat_to_openai(chat([user()], format="yaml"), model="m")


def test_chat_options_and_their_errors() -> None:
    body = chat_to_openai(chat([user()], options={"temperature": 0.2, "num_predict": 5,
                                                  "num_ctx": 4096, "bogus": 1}), model="m")
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 5
    assert "num_ctx" not in body and "bogus" not in body
    with pytest.raises(OllamaRequestError, match='option "top_k" must be of type integer'):
        chat_to_openai(chat([user()], options={"top_k": "many"}), model="m")


def test_empty_tools_are_left_out() -> None:
    assert "tools" not in chat_to_openai(chat([user()], tools=[]), model="m")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ([], "json: cannot unmarshal array into Go value of type api.ChatRequest"),
        ({"messages": "hi"}, "json: cannot unmarshal string into Go struct field "
                             "ChatRequest.messages of type []api.Message"),
        ({"messages": ["hi"]}, "json: cannot unmarshal string into Go value of type api.Message"),
        ({"messages": [{"role": "user", "content": 5}]},
         "json: cannot unmarshal number into Go struct field Message.content of type string"),
        ({"messages": [{"role": 1, "content": ""}]},
         "json: cannot unmarshal number into Go struct field Message.role of type string"),
        ({"messages": [], "stream": "yes"},
         "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool"),
        ({"messages": [], "tools": {}},
         "json: cannot unmarshal object into Go struct field ChatRequest.tools of type "
         "api.Tools"),
        ({"messages": [{"role": "user", "images": "abc"}]},
         "json: cannot unmarshal string into Go struct field Message.images of type "
         "[]api.ImageData"),
    ],
)
def test_chat_body_type_errors(req: Any, message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        chat_to_openai(req, model="m")
    assert str(info.value) == message


# --- recorded: llama-server accepted what we built -----------------------------------------

ACCEPTED = ["chat_options", "chat_think_high_schema", "chat_tools_history",
            "chat_stream_think_false", "generate_system", "generate_raw", "generate_raw_stream",
            "embed", "embeddings_legacy"]
REFUSED_BY_THE_MODEL = {"chat_image_no_vision": 500, "generate_suffix": 501}


@pytest.mark.parametrize("name", ACCEPTED + list(REFUSED_BY_THE_MODEL))
def test_recorded_bodies_are_what_we_build_now(name: str) -> None:
    rec = recorded(name)
    req = rec["ollama_request"]
    if rec["upstream_path"] == "/v1/embeddings" and "prompt" in req:
        assert embeddings_to_upstream(req, model="tiny") == rec["upstream_body"]
    elif rec["upstream_path"] == "/v1/embeddings":
        assert embed_to_upstream(req, model="tiny")[0] == rec["upstream_body"]
    elif "messages" in req:
        assert chat_to_openai(req, model="tiny") == rec["upstream_body"]
    else:
        assert generate_to_upstream(req, model="tiny") == (rec["upstream_path"],
                                                           rec["upstream_body"])
    expected = REFUSED_BY_THE_MODEL.get(name, 200)
    assert rec["status"] == expected


def test_recorded_refusals_name_the_missing_capability() -> None:
    # The tiny model has no vision projector and no fill-in-the-middle tokens.
    assert "image input is not supported" in recorded(
        "chat_image_no_vision")["response"]["error"]["message"]
    assert "Infill is not supported by this model" in recorded(
        "generate_suffix")["response"]["error"]["message"]


def test_recorded_template_renders_the_tool_history() -> None:
    prompt = recorded("chat_tools_history_template")["response"]["prompt"]
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<|tool|>\nsunny, 21C" in prompt


# --- generate request --------------------------------------------------------------------


def test_generate_uses_the_chat_template() -> None:
    path, body = generate_to_upstream(
        {"model": "x", "prompt": "why?", "system": "be brief", "stream": False,
         "options": {"temperature": 0}, "think": False}, model="m")
    assert path == CHAT_PATH
    assert body == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "why?"}],
        "stream": False, "temperature": 0.0, "reasoning_format": "deepseek",
        "chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "none",
    }


GREEDY = {"options": {"temperature": 0}, "stream": False}


@pytest.mark.parametrize("req,kwargs,path,prompt", [
    # The request's own template: rendered here, sent as it is to /completion.
    ({"prompt": "hi", "template": "Q: {{ .Prompt }} A:"}, {}, COMPLETION_PATH, "Q: hi A:"),
    ({"prompt": "hi", "system": "s", "template": "{{ .System }}|{{ .Prompt }}"}, {},
     COMPLETION_PATH, "s|hi"),
    ({"prompt": "hi", "system": "s",
      "template": "{{ range .Messages }}{{ .Role }}:{{ .Content }} {{ end }}"}, {},
     COMPLETION_PATH, "system:s user:hi "),
    ({"prompt": "def f(", "suffix": "pass", "template": "<P>{{ .Prompt }}<S>{{ .Suffix }}<M>"},
     {}, COMPLETION_PATH, "<P>def f(<S>pass<M>"),
    # ... after the tokens of an earlier answer.
    ({"prompt": "hi", "template": "Q: {{ .Prompt }}", "context": [1, 5, 9]}, {},
     COMPLETION_PATH, [1, 5, 9, "Q: hi"]),
    # A model without a chat template gets plain text.
    ({"prompt": "hi", "system": "be brief"}, {"can_chat": False}, COMPLETION_PATH,
     "be brief\n\nhi"),
    ({"prompt": "hi"}, {"can_chat": False}, COMPLETION_PATH, "hi"),
    ({"prompt": "hi", "context": [3, 4]}, {"can_chat": False}, COMPLETION_PATH, [3, 4, "hi"]),
    # A context with the model's template: the route renders the turn first.
    ({"prompt": "hi", "context": [3, 4]}, {}, CHAT_PATH, None),
    ({"prompt": "hi", "context": [3, 4]}, {"chat_prompt": "<u>hi</u>"}, COMPLETION_PATH,
     [3, 4, "<u>hi</u>"]),
])
def test_generate_paths_that_render_the_prompt(req: dict[str, Any], kwargs: dict[str, Any],
                                               path: str, prompt: object) -> None:
    got_path, body = generate_to_upstream({**req, **GREEDY}, model="m", **kwargs)
    assert got_path == path
    if path == COMPLETION_PATH:
        assert body == {"prompt": prompt, "stream": False, "temperature": 0.0,
                        "return_tokens": True}
    else:
        assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_template_with_images_puts_the_media_marker_in_front() -> None:
    png = b64(tiny_png())
    path, body = generate_to_upstream(
        {"prompt": "what?", "template": "Q: {{ .Prompt }}", "images": [png]}, model="m",
        media_marker="<m>")
    assert path == COMPLETION_PATH
    assert body["prompt"] == {"prompt_string": "<m>Q: what?", "multimodal_data": [png]}


@pytest.mark.parametrize("req,message", [
    ({"prompt": "p", "context": [1, 2], "images": ["AAAA"]},
     "images are not supported together with context"),
    ({"prompt": "p", "context": [1, 2], "suffix": "s"},
     "context is not supported together with suffix"),
    ({"prompt": "p", "context": [1, "2"]},
     "json: cannot unmarshal string into Go struct field GenerateRequest.context of type int"),
    ({"prompt": "p", "context": [1, 2.5]}, "json: cannot unmarshal number 2.5 into Go struct "
                                           "field GenerateRequest.context of type int"),
    ({"prompt": "p", "template": '{{ define "t" }}{{ end }}'},
     "template: line 1: {{define}} is not supported; write the template out in one piece"),
    ({"prompt": "p", "template": "{{ .Prompt | shout }}"},
     'template: line 1: function "shout" is not supported'),
    ({"prompt": "p", "template": "{{ .Prompt }}", "think": "max"},
     'invalid think value: "max" (must be "high", "medium", "low", true, or false)'),
])
def test_generate_refusals(req: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        generate_to_upstream(req, model="m")
    assert str(info.value) == message


@pytest.mark.parametrize("req,can_chat,needed", [
    ({"prompt": "p", "context": [1]}, True, True),
    ({"prompt": "p", "context": [1]}, False, False),
    ({"prompt": "p"}, True, False),
    ({"prompt": "p", "context": []}, True, False),
    ({"prompt": "p", "context": [1], "template": "{{ .Prompt }}"}, True, False),
    ({"prompt": "p", "context": [1], "raw": True}, True, False),
])
def test_needs_chat_prompt(req: dict[str, Any], can_chat: bool, needed: bool) -> None:
    assert needs_chat_prompt(req, can_chat=can_chat) is needed


@pytest.mark.parametrize("body,parts", [
    ({"prompt": "text"}, ([], "text")),
    ({"prompt": [1, 2, "text"]}, ([1, 2], "text")),
    ({"prompt": {"prompt_string": "x", "multimodal_data": ["AAAA"]}}, None),
    ({"prompt": [1, 2]}, None),
    ({}, None),
])
def test_completion_prompt_parts(body: dict[str, Any], parts: object) -> None:
    assert completion_prompt_parts(body) == parts


def test_request_context() -> None:
    assert request_context({"context": [1, 2, 3]}) == [1, 2, 3]
    assert request_context({}) == []


def test_generate_with_images_and_format() -> None:
    jpg = b64((IMAGES / "python.jpg").read_bytes())
    _, body = generate_to_upstream({"prompt": "describe", "images": [jpg], "format": "json"},
                                   model="m")
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{jpg}"}},
        {"type": "text", "text": "describe"}]}]
    assert body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("fmt", "schema"),
    [(None, None), ("json", {"type": "object"}), (SCHEMA, SCHEMA)],
)
def test_raw_generate_goes_to_the_native_completion(fmt: object, schema: object) -> None:
    path, body = generate_to_upstream(
        {"prompt": "[INST] hi [/INST]", "raw": True, "stream": False, "format": fmt,
         "options": {"num_predict": 8, "stop": ["</s>"]}, "suffix": "ignored in raw mode"},
        model="m")
    assert path == COMPLETION_PATH
    expected: dict[str, Any] = {"prompt": "[INST] hi [/INST]", "stream": False,
                                "max_tokens": 8, "stop": ["</s>"]}
    if schema is not None:
        expected["json_schema"] = schema
    assert body == expected


def test_raw_generate_places_images_at_their_tags() -> None:
    png, jpg = b64(tiny_png()), b64((IMAGES / "python.jpg").read_bytes())
    _, body = generate_to_upstream(
        {"prompt": "A [img-1] then [img-0] and [img-7]", "raw": True, "images": [png, jpg]},
        model="m", media_marker="<__media_X__>")
    assert body["prompt"] == {
        "prompt_string": "A <__media_X__> then <__media_X__> and [img-7]",
        "multimodal_data": [jpg, png],
    }


def test_raw_generate_untagged_images_go_first() -> None:
    png = b64(tiny_png())
    _, body = generate_to_upstream({"prompt": "what?", "raw": True, "images": [png]},
                                   model="m")
    assert body["prompt"] == {"prompt_string": DEFAULT_MEDIA_MARKER + "what?",
                              "multimodal_data": [png]}


@pytest.mark.parametrize(
    "extra", [{"system": "s"}, {"template": "{{ .Prompt }}"}, {"context": [1, 2]}])
def test_raw_mode_refuses_template_system_and_context(extra: dict[str, Any]) -> None:
    with pytest.raises(OllamaRequestError) as info:
        generate_to_upstream({"prompt": "p", "raw": True, **extra}, model="m")
    assert str(info.value) == "raw mode does not support template, system, or context"


def test_suffix_goes_to_infill() -> None:
    path, body = generate_to_upstream(
        {"prompt": "def compute_gcd(a, b):", "suffix": "    return result",
         "options": {"temperature": 0}, "stream": False}, model="m")
    assert path == INFILL_PATH
    assert body == {"input_prefix": "def compute_gcd(a, b):",
                    "input_suffix": "    return result", "stream": False, "temperature": 0.0}


def test_suffix_with_images_is_refused() -> None:
    with pytest.raises(OllamaRequestError, match="suffix"):
        generate_to_upstream({"prompt": "p", "suffix": "s", "images": [b64(tiny_png())]},
                             model="m")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"prompt": 5}, "json: cannot unmarshal number into Go struct field "
                        "GenerateRequest.prompt of type string"),
        ({"prompt": "p", "raw": "yes"}, "json: cannot unmarshal string into Go struct field "
                                        "GenerateRequest.raw of type bool"),
        ({"prompt": "p", "context": "1,2"}, "json: cannot unmarshal string into Go struct "
                                            "field GenerateRequest.context of type []int"),
        ({"prompt": "p", "format": "yaml"}, r'invalid format: "\"yaml\""; expected "json" or a '
                                            "valid JSON Schema object"),
        ({"prompt": "p", "think": "max"}, 'invalid think value: "max" (must be "high", '
                                          '"medium", "low", true, or false)'),
        ({"prompt": "p", "options": {"seed": "x"}}, 'option "seed" must be of type integer'),
        ({"prompt": "p", "images": ["???"]}, "illegal base64 data at input byte 0"),
        ({"prompt": "p", "raw": True, "think": "max"}, 'invalid think value: "max" (must be '
                                                       '"high", "medium", "low", true, or '
                                                       "false)"),
        ({"prompt": "p", "suffix": "s", "think": 3}, 'think must be a boolean or string '
                                                     '("high", "medium", "low", true, or '
                                                     "false)"),
        ({"prompt": "p", "options": [1]}, "json: cannot unmarshal array into Go struct field "
                                          "GenerateRequest.options of type "
                                          "map[string]interface {}"),
    ],
)
def test_generate_errors(req: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        generate_to_upstream(req, model="m")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("kind", "req", "keep_alive", "expected"),
    [
        ("chat", {"model": "x"}, None, {"model": "m", "created_at": CREATED,
                                        "message": {"role": "assistant", "content": ""},
                                        "done": True, "done_reason": "load"}),
        ("chat", {"messages": []}, 0.0, {"model": "m", "created_at": CREATED,
                                         "message": {"role": "assistant", "content": ""},
                                         "done": True, "done_reason": "unload"}),
        ("chat", {"messages": [user()]}, 0.0, None),
        ("generate", {"prompt": ""}, 300.0, {"model": "m", "created_at": CREATED,
                                             "response": "", "done": True,
                                             "done_reason": "load"}),
        ("generate", {}, 0.0, {"model": "m", "created_at": CREATED, "response": "",
                               "done": True, "done_reason": "unload"}),
        ("generate", {"prompt": "hi"}, None, None),
    ],
)
def test_load_only_reply(kind: Any, req: dict[str, Any], keep_alive: float | None,
                         expected: dict[str, Any] | None) -> None:
    reply = load_only_reply(req, kind=kind, model="m", created_at=CREATED,
                            keep_alive=keep_alive)
    assert reply == expected
    if reply is not None:
        model = ChatResponse if kind == "chat" else GenerateResponse
        model.model_validate(reply)


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timings", "usage", "expected"),
    [
        # tests/data/llama_server/chat.json: nothing cached
        (llama("chat.json")["timings"], llama("chat.json")["usage"],
         {"prompt_eval_count": 39, "prompt_eval_duration": 2_479_000, "eval_count": 8,
          "eval_duration": 1_734_000}),
        # the streamed chat: 38 of 39 prompt tokens came from the cache
        ({"cache_n": 38, "prompt_n": 1, "prompt_ms": 0.624, "predicted_n": 8,
          "predicted_ms": 1.603}, None,
         {"prompt_eval_count": 39, "prompt_eval_duration": 624_000, "eval_count": 8,
          "eval_duration": 1_603_000}),
        # tests/data/llama_server/completion_native.json
        (llama("completion_native.json")["timings"], None,
         {"prompt_eval_count": 13, "prompt_eval_duration": 237_000, "eval_count": 8,
          "eval_duration": 987_000}),
        (None, {"prompt_tokens": 39, "completion_tokens": 8},
         {"prompt_eval_count": 39, "eval_count": 8}),
        (None, None, {}),
        ({}, {"prompt_tokens": 3, "completion_tokens": 0}, {"prompt_eval_count": 3}),
        ({"prompt_n": 0, "prompt_ms": 0.0, "predicted_n": 0, "predicted_ms": 0.0}, None, {}),
        ({"prompt_n": "x", "prompt_ms": None, "predicted_n": -4, "predicted_ms": math.nan},
         None, {}),
    ],
)
def test_durations_from_timings(timings: Any, usage: Any, expected: dict[str, int]) -> None:
    got = durations_from_timings(timings, usage, total_ns=1_000_000_000, load_ns=0)
    # load_duration is always present: 0 tells a client the model was already warm.
    assert got == {"total_duration": 1_000_000_000, "load_duration": 0, **expected}
    assert all(type(v) is int for v in got.values())


def test_durations_include_load_time_and_drop_other_zeros() -> None:
    got = durations_from_timings(None, None, total_ns=10, load_ns=7)
    assert got == {"total_duration": 10, "load_duration": 7}
    assert durations_from_timings(None, None, total_ns=-1, load_ns=-1) == {"load_duration": 0}


@pytest.mark.parametrize(
    ("finish_reason", "stop_type", "reason"),
    [("stop", None, "stop"), ("length", None, "length"), ("tool_calls", None, "stop"),
     (None, None, "stop"), (None, "limit", "length"), (None, "eos", "stop"),
     (None, "word", "stop"), (None, "none", "stop")],
)
def test_done_reason(finish_reason: Any, stop_type: Any, reason: str) -> None:
    assert done_reason_from(finish_reason, stop_type) == reason


# --- responses ---------------------------------------------------------------------------


def test_recorded_chat_response() -> None:
    out = chat_response_to_ollama(llama("chat.json"), model="tiny:latest", created_at=CREATED,
                                  total_ns=123_456_789, load_ns=1_000)
    assert out == {
        "model": "tiny:latest", "created_at": CREATED,
        "message": {"role": "assistant", "content": " to hello to hello to hello to hello"},
        "done": True, "done_reason": "length",
        "total_duration": 123_456_789, "load_duration": 1_000,
        "prompt_eval_count": 39, "prompt_eval_duration": 2_479_000,
        "eval_count": 8, "eval_duration": 1_734_000,
    }
    ChatResponse.model_validate(out)


@pytest.mark.parametrize("name", ["chat_options", "chat_think_high_schema",
                                  "chat_tools_history"])
def test_recorded_conversion_replies(name: str) -> None:
    resp = recorded(name)["response"]
    out = chat_response_to_ollama(resp, model="tiny", created_at=CREATED, total_ns=1,
                                  load_ns=0)
    assert out["message"]["content"] == resp["choices"][0]["message"]["content"]
    assert out["prompt_eval_count"] == resp["usage"]["prompt_tokens"]
    assert out["eval_count"] == resp["usage"]["completion_tokens"]
    ChatResponse.model_validate(out)


def test_chat_response_with_thinking_and_tool_calls() -> None:
    resp = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "Paris needs a lookup.",
        "tool_calls": [{"type": "function", "id": "QpWk2", "function": {
            "name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9}}
    out = chat_response_to_ollama(resp, model="m", created_at=CREATED, total_ns=9, load_ns=0)
    assert out["message"] == {
        "role": "assistant", "content": "", "thinking": "Paris needs a lookup.",
        "tool_calls": [{"id": "QpWk2", "function": {"index": 0, "name": "get_weather",
                                                     "arguments": {"city": "Paris"}}}]}
    assert out["done_reason"] == "stop"
    assert out["prompt_eval_count"] == 20 and out["eval_count"] == 9
    ChatResponse.model_validate(out)


@pytest.mark.parametrize(
    ("arguments", "decoded"),
    [
        ('{"a": 1}', {"a": 1}),
        ({"a": 1}, {"a": 1}),
        ("", {}),
        (None, {}),
        ('{"a": 1', {RAW_ARGUMENTS_KEY: '{"a": 1'}),  # cut off by num_predict
        ("[1, 2]", {RAW_ARGUMENTS_KEY: "[1, 2]"}),
        ("42", {RAW_ARGUMENTS_KEY: "42"}),
        (["x"], {RAW_ARGUMENTS_KEY: '["x"]'}),
    ],
)
def test_tool_call_arguments_never_crash(arguments: object, decoded: dict[str, Any]) -> None:
    calls = tool_calls_from_openai([{"function": {"name": "f", "arguments": arguments}}])
    assert calls == [{"function": {"index": 0, "name": "f", "arguments": decoded}}]
    ChatResponse.model_validate({"message": {"role": "assistant", "tool_calls": calls}})


def test_tool_calls_from_openai_tolerates_junk() -> None:
    assert tool_calls_from_openai(None) == []
    assert tool_calls_from_openai([]) == []
    assert tool_calls_from_openai(["x", {"function": "y"}]) == [  # type: ignore[list-item]
        {"function": {"index": 1, "name": "", "arguments": {}}}]


@pytest.mark.parametrize("resp", [{}, {"choices": []}, {"choices": [None]},
                                  {"choices": [{"message": None}]}])
def test_chat_response_without_a_message_is_safe(resp: dict[str, Any]) -> None:
    out = chat_response_to_ollama(resp, model="m", created_at=CREATED, total_ns=1, load_ns=0)
    assert out["message"] == {"role": "assistant", "content": ""}
    assert out["done"] is True and out["done_reason"] == "stop"
    ChatResponse.model_validate(out)


def test_generate_response_from_chat_completion() -> None:
    resp = recorded("generate_system")["response"]
    timings = resp["timings"]  # whole milliseconds with 3 decimals: exact in nanoseconds
    out = generate_response_to_ollama(resp, model="tiny", created_at=CREATED, total_ns=50,
                                      load_ns=5, upstream=CHAT_PATH)
    assert out == {
        "model": "tiny", "created_at": CREATED,
        "response": " to hello to hello to hello to hello", "done": True,
        "done_reason": "length", "total_duration": 50, "load_duration": 5,
        "prompt_eval_count": 61, "prompt_eval_duration": int(f"{timings['prompt_ms']:.3f}"
                                                              .replace(".", "")) * 1000,
        "eval_count": 8,
        "eval_duration": int(f"{timings['predicted_ms']:.3f}".replace(".", "")) * 1000,
    }
    GenerateResponse.model_validate(out)


def test_generate_response_with_thinking() -> None:
    resp = {"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": "42", "reasoning_content": "6 times 7"}}]}
    out = generate_response_to_ollama(resp, model="m", created_at=CREATED, total_ns=1,
                                      load_ns=0, upstream=CHAT_PATH)
    assert (out["response"], out["thinking"], out["done_reason"]) == ("42", "6 times 7", "stop")
    assert "context" not in out
    GenerateResponse.model_validate(out)


@pytest.mark.parametrize("source", ["llama_server/completion_native.json",
                                    "ollama/generate_raw.json"])
def test_generate_response_from_native_completion(source: str) -> None:
    resp = json.loads((DATA / source).read_text())
    resp = resp.get("response", resp)
    out = generate_response_to_ollama(resp, model="tiny", created_at=CREATED, total_ns=77,
                                      load_ns=0, upstream=COMPLETION_PATH)
    assert out["response"] == " red world one to hello to hello to"
    assert out["done_reason"] == "length"  # stop_type "limit"
    assert out["prompt_eval_count"] == resp["tokens_evaluated"] == 13
    assert out["eval_count"] == resp["tokens_predicted"] == 8
    assert out["prompt_eval_duration"] == round(resp["timings"]["prompt_ms"] * 1e6)
    assert out["eval_duration"] == round(resp["timings"]["predicted_ms"] * 1e6)
    GenerateResponse.model_validate(out)


def test_generate_response_from_native_without_timings() -> None:
    resp = {"content": "x", "stop": True, "stop_type": "eos", "tokens_evaluated": 4,
            "tokens_predicted": 1}
    out = generate_response_to_ollama(resp, model="m", created_at=CREATED, total_ns=3,
                                      load_ns=0, upstream=INFILL_PATH)
    assert out == {"model": "m", "created_at": CREATED, "response": "x", "done": True,
                   "done_reason": "stop", "total_duration": 3, "load_duration": 0,
                   "prompt_eval_count": 4,
                   "eval_count": 1}


def test_generate_response_from_v1_completions() -> None:
    out = generate_response_to_ollama(llama("completions.json"), model="m", created_at=CREATED,
                                      total_ns=1, load_ns=0, upstream="/v1/completions")
    assert out["response"] == " red world one to hello to hello to"
    assert out["done_reason"] == "length"
    assert out["prompt_eval_count"] == 13  # 11 evaluated + 2 cached
    GenerateResponse.model_validate(out)


# --- embeddings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "body", "plan"),
    [
        ({"input": "hello"}, {"input": ["hello"], "encoding_format": "float"},
         {"inputs": 1, "dimensions": 0, "truncate": True}),
        ({"input": ["a", "b"], "truncate": False, "dimensions": 256},
         {"input": ["a", "b"], "encoding_format": "float"},
         {"inputs": 2, "dimensions": 256, "truncate": False}),
        ({"input": ""}, {"input": [], "encoding_format": "float"},
         {"inputs": 0, "dimensions": 0, "truncate": True}),
        ({}, {"input": [], "encoding_format": "float"},
         {"inputs": 0, "dimensions": 0, "truncate": True}),
        ({"input": [], "dimensions": -3}, {"input": [], "encoding_format": "float"},
         {"inputs": 0, "dimensions": 0, "truncate": True}),
        ({"input": "x", "keep_alive": "5m", "options": {"temperature": 0}},
         {"input": ["x"], "encoding_format": "float"},
         {"inputs": 1, "dimensions": 0, "truncate": True}),
    ],
)
def test_embed_to_upstream(req: dict[str, Any], body: dict[str, Any],
                           plan: dict[str, Any]) -> None:
    assert embed_to_upstream(req) == (body, plan)
    assert embed_to_upstream(req, model="tiny")[0] == {"model": "tiny", **body}


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"input": 5}, "invalid input type"),
        ({"input": ["a", 1]}, "invalid input type"),
        ({"input": {"text": "a"}}, "invalid input type"),
        ({"input": "a", "truncate": "no"}, "json: cannot unmarshal string into Go struct field "
                                           "EmbedRequest.truncate of type bool"),
        ({"input": "a", "dimensions": "8"}, "json: cannot unmarshal string into Go struct "
                                            "field EmbedRequest.dimensions of type int"),
        ({"input": "a", "dimensions": 1.5}, "json: cannot unmarshal number 1.5 into Go struct "
                                            "field EmbedRequest.dimensions of type int"),
        ({"input": "a", "options": {"num_ctx": "big"}},
         'option "num_ctx" must be of type integer'),
        ({"input": "a", "options": "x"}, "json: cannot unmarshal string into Go struct field "
                                         "EmbedRequest.options of type map[string]interface {}"),
    ],
)
def test_embed_request_errors(req: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        embed_to_upstream(req)
    assert str(info.value) == message


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_embed_response_is_normalised() -> None:
    resp = llama("embeddings.json")
    out = embed_response_to_ollama(resp, model="tiny", total_ns=2_000, load_ns=100)
    assert list(out) == ["model", "embeddings", "total_duration", "load_duration",
                         "prompt_eval_count"]
    assert out["prompt_eval_count"] == 22
    assert len(out["embeddings"]) == 2
    for got, item in zip(out["embeddings"], resp["data"], strict=True):
        assert norm(got) == pytest.approx(1.0, abs=1e-12)
        scale = norm(item["embedding"])
        assert got == pytest.approx([v / scale for v in item["embedding"]], abs=1e-12)
    EmbedResponse.model_validate(out)


def test_embed_dimensions_truncate_then_renormalise() -> None:
    resp = recorded("embed")["response"]
    full = embed_response_to_ollama(resp, model="tiny", total_ns=1, load_ns=0)
    cut = embed_response_to_ollama(resp, model="tiny", total_ns=1, load_ns=0, dimensions=16)
    for short, long in zip(cut["embeddings"], full["embeddings"], strict=True):
        assert len(short) == 16
        assert norm(short) == pytest.approx(1.0, abs=1e-12)
        prefix = long[:16]
        assert short == pytest.approx([v / norm(prefix) for v in prefix], abs=1e-12)
    EmbedResponse.model_validate(cut)


@pytest.mark.parametrize("dimensions", [0, -1, 64, 1000])
def test_embed_dimensions_at_or_over_the_size_keep_it(dimensions: int) -> None:
    resp = llama("embeddings.json")
    out = embed_response_to_ollama(resp, model="m", total_ns=1, load_ns=0,
                                   dimensions=dimensions)
    assert [len(v) for v in out["embeddings"]] == [64, 64]


def test_embed_response_orders_by_index_and_survives_a_zero_vector() -> None:
    resp = {"data": [{"index": 1, "embedding": [0.0, 0.0]},
                     {"index": 0, "embedding": [3.0, 4.0]}]}
    out = embed_response_to_ollama(resp, model="m", total_ns=0, load_ns=0)
    assert list(out) == ["model", "embeddings"]  # zero durations are omitted
    first, second = out["embeddings"]
    assert first == pytest.approx([0.6, 0.8])
    assert second == [0.0, 0.0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_embed_response_refuses_nan_and_inf(bad: float) -> None:
    with pytest.raises(OllamaRequestError, match="embedding contains NaN or Inf values"):
        embed_response_to_ollama({"data": [{"index": 0, "embedding": [1.0, bad]}]}, model="m",
                                 total_ns=1, load_ns=0)


def test_embed_response_with_no_inputs() -> None:
    out = embed_response_to_ollama({"data": []}, model="m", total_ns=0, load_ns=0)
    assert out == {"model": "m", "embeddings": []}
    EmbedResponse.model_validate(out)


def test_legacy_embeddings_request() -> None:
    assert embeddings_to_upstream({"model": "x", "prompt": "hello"}) == {
        "input": "hello", "encoding_format": "float", "embd_normalize": -1}
    assert embeddings_to_upstream({"prompt": ""}) is None
    assert embeddings_to_upstream({}) is None
    with pytest.raises(OllamaRequestError, match=r"EmbeddingRequest\.prompt of type string"):
        embeddings_to_upstream({"prompt": ["a"]})


def test_legacy_embeddings_are_not_normalised() -> None:
    resp = recorded("embeddings_legacy")["response"]
    out = embeddings_response_to_ollama(resp)
    assert out == {"embedding": resp["data"][0]["embedding"]}
    assert norm(out["embedding"]) > 2  # llama-server kept the raw pooled vector
    EmbeddingsResponse.model_validate(out)
    assert embeddings_response_to_ollama(None) == {"embedding": []}
    EmbeddingsResponse.model_validate(embeddings_response_to_ollama(None))


def test_conversions_do_not_mutate_their_input() -> None:
    req = chat([user("x", images=[b64(tiny_png())]),
                {"role": "assistant", "content": "", "tool_calls": [call("f", a=1)]}],
               options={"stop": ["a"]}, format=SCHEMA, tools=[WEATHER])
    before = copy.deepcopy(req)
    chat_to_openai(req, model="m")
    assert req == before
    resp = llama("embeddings.json")
    before = copy.deepcopy(resp)
    embed_response_to_ollama(resp, model="m", total_ns=1, load_ns=0, dimensions=8)
    assert resp == before


# --- log probabilities -------------------------------------------------------------------


@pytest.mark.parametrize("req,top", [
    ({}, None),
    ({"logprobs": False, "top_logprobs": 5}, None),
    ({"top_logprobs": 5}, None),
    ({"logprobs": True}, 0),
    ({"logprobs": True, "top_logprobs": 0}, 0),
    ({"logprobs": True, "top_logprobs": 20}, 20),
])
def test_logprobs_requested(req: dict[str, Any], top: int | None) -> None:
    assert logprobs_requested(req, "ChatRequest") == top


@pytest.mark.parametrize("req,message", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ({"top_logprobs": -1}, "top_logprobs must be between 0 and 20"),  # checked regardless
    ({"logprobs": True, "top_logprobs": "3"}, "json: cannot unmarshal string into Go struct "
                                              "field GenerateRequest.top_logprobs of type int"),
    ({"logprobs": True, "top_logprobs": 2.5}, "json: cannot unmarshal number 2.5 into Go "
                                              "struct field GenerateRequest.top_logprobs of "
                                              "type int"),
    ({"logprobs": "yes"}, "json: cannot unmarshal string into Go struct field "
                          "GenerateRequest.logprobs of type bool"),
])
def test_logprobs_requested_refusals(req: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        logprobs_requested(req, "GenerateRequest")
    assert str(info.value) == message


@pytest.mark.parametrize("req,fields", [
    ({"logprobs": True}, {"logprobs": True, "top_logprobs": 1}),  # 0 would send none
    ({"logprobs": True, "top_logprobs": 4}, {"logprobs": True, "top_logprobs": 4}),
    ({"top_logprobs": 4}, {}),
])
def test_chat_and_generate_ask_openai_for_logprobs(req: dict[str, Any],
                                                   fields: dict[str, Any]) -> None:
    chat = chat_to_openai({"messages": [{"role": "user", "content": "x"}], **req}, model="m")
    _, generate = generate_to_upstream({"prompt": "x", **req}, model="m")
    for body in (chat, generate):
        assert {k: body[k] for k in ("logprobs", "top_logprobs") if k in body} == fields


@pytest.mark.parametrize("req,n_probs", [
    ({"logprobs": True}, 1), ({"logprobs": True, "top_logprobs": 7}, 7), ({}, None)])
def test_native_paths_ask_for_n_probs(req: dict[str, Any], n_probs: int | None) -> None:
    for extra in ({"raw": True}, {"template": "{{ .Prompt }}"}, {"suffix": "s"}):
        path, body = generate_to_upstream({"prompt": "x", **extra, **req}, model="m")
        assert path in (COMPLETION_PATH, INFILL_PATH)
        assert body.get("n_probs") == n_probs
        assert "logprobs" not in body


ENTRY = {"id": 263, "token": " to", "bytes": [32, 116, 111], "logprob": -0.87,
         "top_logprobs": [{"id": 263, "token": " to", "bytes": [32, 116, 111], "logprob": -0.87},
                          {"id": 286, "token": " one", "bytes": [], "logprob": -1.6},
                          {"id": 9, "token": "x", "logprob": -3}]}


@pytest.mark.parametrize("top,expected", [
    (0, [{"token": " to", "logprob": -0.87, "bytes": [32, 116, 111]}]),
    (2, [{"token": " to", "logprob": -0.87, "bytes": [32, 116, 111], "top_logprobs": [
        {"token": " to", "logprob": -0.87, "bytes": [32, 116, 111]},
        {"token": " one", "logprob": -1.6}]}]),
    (5, [{"token": " to", "logprob": -0.87, "bytes": [32, 116, 111], "top_logprobs": [
        {"token": " to", "logprob": -0.87, "bytes": [32, 116, 111]},
        {"token": " one", "logprob": -1.6}, {"token": "x", "logprob": -3.0}]}]),
])
def test_logprobs_to_ollama(top: int, expected: list[dict[str, Any]]) -> None:
    assert logprobs_to_ollama([ENTRY, "junk", None], top) == expected


@pytest.mark.parametrize("entries", [None, "x", {}, []])
def test_logprobs_to_ollama_without_entries(entries: object) -> None:
    assert logprobs_to_ollama(entries, 3) == []


def test_chat_response_with_logprobs() -> None:
    resp = {"choices": [{"finish_reason": "stop", "message": {"role": "assistant",
                                                              "content": " to"},
                         "logprobs": {"content": [ENTRY]}}]}
    out = chat_response_to_ollama(resp, model="m", created_at=CREATED, total_ns=1, load_ns=0,
                                  top_logprobs=1)
    assert out["logprobs"] == [{"token": " to", "logprob": -0.87, "bytes": [32, 116, 111],
                                "top_logprobs": [{"token": " to", "logprob": -0.87,
                                                  "bytes": [32, 116, 111]}]}]
    ChatResponse.model_validate(out)
    plain = chat_response_to_ollama(resp, model="m", created_at=CREATED, total_ns=1, load_ns=0)
    assert "logprobs" not in plain


NATIVE = {"content": " to", "tokens": [263], "stop": True, "stop_type": "eos",
          "tokens_evaluated": 5, "tokens_predicted": 1, "completion_probabilities": [ENTRY]}


def test_chat_response_from_a_native_completion() -> None:
    out = chat_response_to_ollama(NATIVE, model="m", created_at=CREATED, total_ns=1,
                                  load_ns=0, upstream=COMPLETION_PATH, top_logprobs=0)
    assert out["message"] == {"role": "assistant", "content": " to"}
    assert out["done_reason"] == "stop"
    assert out["prompt_eval_count"] == 5 and out["eval_count"] == 1
    assert out["logprobs"] == [{"token": " to", "logprob": -0.87, "bytes": [32, 116, 111]}]
    ChatResponse.model_validate(out)


def test_generate_response_with_context_and_logprobs() -> None:
    out = generate_response_to_ollama(NATIVE, model="m", created_at=CREATED, total_ns=1,
                                      load_ns=0, upstream=COMPLETION_PATH, top_logprobs=2,
                                      context=[1, 2, 263])
    assert out["context"] == [1, 2, 263]
    assert list(out)[:7] == ["model", "created_at", "response", "done", "done_reason",
                             "context", "total_duration"]
    assert len(out["logprobs"][0]["top_logprobs"]) == 2
    parsed = GenerateResponse.model_validate(out)
    assert parsed.context == [1, 2, 263] and parsed.logprobs[0].token == " to"


# --- chat with its own template ----------------------------------------------------------


def test_chat_without_template_is_the_chat_completion() -> None:
    req = {"messages": [{"role": "user", "content": "x"}]}
    assert chat_to_upstream(req, model="m") == (CHAT_PATH, chat_to_openai(req, model="m"))


def test_chat_with_template_renders_to_completion() -> None:
    path, body = chat_to_upstream({
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "template": "{{ .System }}{{ range .Messages }}|{{ .Role }}{{ end }}|A:",
        "format": "json", "logprobs": True, "top_logprobs": 3, "stream": False,
        "options": {"num_predict": 4}}, model="m")
    assert path == COMPLETION_PATH
    assert body == {"prompt": "s|system|user|A:", "stream": False, "max_tokens": 4,
                    "json_schema": {"type": "object"}, "n_probs": 3}


@pytest.mark.parametrize("req,message", [
    ({"messages": [{"role": "user", "content": "x", "images": ["AAAA"]}],
      "template": "{{ .Messages }}"}, "images are not supported together with template"),
    ({"messages": [], "template": "{{ if }}"}, "template: line 1: missing value for command"),
    ({"messages": [{"role": 5}], "template": "x"},
     "json: cannot unmarshal number into Go struct field Message.role of type string"),
])
def test_chat_with_template_refusals(req: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaRequestError) as info:
        chat_to_upstream(req, model="m")
    assert str(info.value) == message


# --- embed truncation --------------------------------------------------------------------


@pytest.mark.parametrize("args,slot,limit", [
    ({}, None, 512),  # llama-server's default physical batch
    ({}, 256, 256),
    ({"ctx-size": 64}, 256, 64),
    ({"c": 128, "ubatch-size": 1024, "batch-size": 4096}, 8192, 128),
    ({"ubatch-size": 2048, "batch-size": 1024}, 8192, 1024),
    ({"ub": 300}, None, 300),
    ({"ctx-size": 0}, 4096, 512),  # 0: the model's own context
    ({"ctx-size": True}, 4096, 512),
])
def test_embed_token_limit(args: dict[str, Any], slot: int | None, limit: int) -> None:
    assert embed_token_limit(args, slot) == limit


@pytest.mark.parametrize("text,limit,fits", [
    ("abcd", 8, True), ("abcde", 8, False), ("é" * 2, 8, True), ("é" * 3, 8, False),
    ("", 3, False),
])
def test_fits_untokenized(text: str, limit: int, fits: bool) -> None:
    assert fits_untokenized(text, limit) is fits


@pytest.mark.parametrize("with_special,without,limit,fitted", [
    ([1, 5, 6, 7], [5, 6, 7], 10, [1, 5, 6, 7]),  # already fits
    ([1, 5, 6, 7, 8], [5, 6, 7, 8], 3, [1, 5, 6]),  # BOS kept, the end cut
    ([101, 5, 6, 7, 102], [5, 6, 7], 4, [101, 5, 6, 102]),  # CLS ... SEP kept
    ([5, 6, 7, 8], [5, 6, 7, 8], 2, [5, 6]),  # nothing special
    ([101, 5, 6, 102], [5, 6], 2, None),  # only the specials would fit
    ([1, 9, 9, 9], [5, 6, 7], 2, [1, 9]),  # specials not around the text: a plain cut
])
def test_fit_tokens(with_special: list[int], without: list[int], limit: int,
                    fitted: list[int] | None) -> None:
    assert fit_tokens(with_special, without, limit) == fitted


@pytest.mark.parametrize("message,limit", [
    ("input (721 tokens) is too large to process. increase the physical batch size "
     "(current batch size: 64)", 64),
    ("the request exceeds the available context size", None),
    ("", None),
])
def test_batch_limit_from_error(message: str, limit: int | None) -> None:
    assert batch_limit_from_error(message) == limit
