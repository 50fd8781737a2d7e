"""Pure Ollama <-> llama-server translations for chat, generate and embeddings bodies."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypedDict

from .options import (
    OllamaRequestError,
    go_type_error,
    json_kind,
    response_format_from,
    sampling_from_options,
)
from .prompt import TemplateError, Thinking, render_prompt

__all__ = [
    "CHAT_PATH",
    "COMPLETION_PATH",
    "DEFAULT_MEDIA_MARKER",
    "EMBEDDINGS_PATH",
    "EMBED_CANNOT_FIT",
    "EMBED_TOO_LONG",
    "INFILL_PATH",
    "MAX_TOP_LOGPROBS",
    "RAW_ARGUMENTS_KEY",
    "SPECIAL_TOKEN_ROOM",
    "EmbedPlan",
    "batch_limit_from_error",
    "chat_response_to_ollama",
    "chat_to_openai",
    "chat_to_upstream",
    "completion_prompt_parts",
    "done_reason_from",
    "durations_from_timings",
    "embed_response_to_ollama",
    "embed_to_upstream",
    "embed_token_limit",
    "embeddings_response_to_ollama",
    "embeddings_to_upstream",
    "fit_tokens",
    "fits_untokenized",
    "generate_response_to_ollama",
    "generate_to_upstream",
    "image_data_uri",
    "load_only_reply",
    "logprobs_requested",
    "logprobs_to_ollama",
    "needs_chat_prompt",
    "request_context",
    "tool_calls_from_openai",
]

Body = dict[str, Any]

CHAT_PATH: Final = "/v1/chat/completions"
COMPLETION_PATH: Final = "/completion"  # llama.cpp's native endpoint: prompt used verbatim
INFILL_PATH: Final = "/infill"
EMBEDDINGS_PATH: Final = "/v1/embeddings"
LEGACY_COMPLETIONS_PATH: Final = "/v1/completions"

# llama-server's default media marker; recent builds pick a random one per process and
# report it as "media_marker" in GET /props, which the route should pass in.
DEFAULT_MEDIA_MARKER: Final = "<__media__>"

# Where a tool call's arguments go when the model wrote something that is not a JSON
# object: Ollama's ToolCall.Function.Arguments is always an object, and the official
# clients refuse anything else, so the raw text is kept under this key instead of lost.
RAW_ARGUMENTS_KEY: Final = "_raw_arguments"

_THINK_LEVELS: Final = ("high", "medium", "low")
_IMG_TAG = re.compile(r"\[img-(\d+)\]")


# --- small readers with Ollama's (Go encoding/json's) error messages --------------------

def _require_object(req: object, go_type: str) -> Mapping[str, Any]:
    if not isinstance(req, Mapping):
        raise OllamaRequestError(
            f"json: cannot unmarshal {json_kind(req)} into Go value of type {go_type}"
        )
    return req


def _str_field(obj: Mapping[str, Any], key: str, struct: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise go_type_error(struct, key, "string", value)
    return value


def _bool_field(obj: Mapping[str, Any], key: str, struct: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise go_type_error(struct, key, "bool", value)
    return value


def _list_field(obj: Mapping[str, Any], key: str, struct: str, go_type: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise go_type_error(struct, key, go_type, value)
    return value


def _stream_of(req: Mapping[str, Any], struct: str) -> bool:
    # Ollama streams unless the client says "stream": false explicitly.
    stream = _bool_field(req, "stream", struct)
    return True if stream is None else stream


# --- images ------------------------------------------------------------------------------

_MAGIC: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
)


def _sniff_mime(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, offset, mime in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return mime
    return None


def _decode_image(value: object, where: str) -> tuple[str, bytes]:
    """(canonical base64, decoded bytes) of one Ollama image, or Ollama's decode error."""
    if not isinstance(value, str):
        raise go_type_error("Message", where, "api.ImageData", value)
    text = value
    if text.startswith("data:") and "," in text:
        # Not Ollama's API, but browsers' FileReader hands out data URIs; take the payload.
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OllamaRequestError(
            f"illegal base64 data at input byte {_bad_base64_offset(text)}"
        ) from None
    return text, data


def _bad_base64_offset(text: str) -> int:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for i, ch in enumerate(text):
        if ch == "=":
            return i
        if ch not in alphabet:
            return i
    return len(text) - len(text) % 4


def image_data_uri(b64: str, data: bytes) -> str:
    """The ``image_url.url`` for llama-server: a data URI when the type is known.

    llama-server only takes ``data:image/...`` URIs; for formats we cannot name it also
    takes bare base64 and lets stb_image identify the bytes itself.
    """
    mime = _sniff_mime(data)
    return f"data:{mime};base64,{b64}" if mime else b64


def _image_parts(images: Iterable[object], where: str) -> list[Body]:
    parts: list[Body] = []
    for image in images:
        b64, data = _decode_image(image, where)
        parts.append({"type": "image_url", "image_url": {"url": image_data_uri(b64, data)}})
    return parts


def _user_content(text: str, images: Sequence[object], where: str) -> str | list[Body]:
    if not images:
        return text
    # Ollama renders images ahead of the message text ("[img-0]..."), so keep that order.
    parts = _image_parts(images, where)
    if text:
        parts.append({"type": "text", "text": text})
    return parts


# --- think -------------------------------------------------------------------------------

def _think_fields(think: object) -> Body:
    """llama-server fields for Ollama's ``think``; reasoning always comes back separately."""
    fields: Body = {"reasoning_format": "deepseek"}
    if think is None:
        return fields
    if isinstance(think, bool):
        fields["chat_template_kwargs"] = {"enable_thinking": think}
        if not think:
            # enable_thinking only reaches templates that read it; "none" also makes
            # llama-server turn reasoning off for templates with other switches.
            fields["reasoning_effort"] = "none"
        return fields
    if isinstance(think, str):
        if think not in _THINK_LEVELS:
            raise OllamaRequestError(
                f'invalid think value: {json.dumps(think)} (must be "high", "medium", "low", '
                "true, or false)"
            )
        fields["chat_template_kwargs"] = {"enable_thinking": True}
        fields["reasoning_effort"] = think
        return fields
    raise OllamaRequestError(
        'think must be a boolean or string ("high", "medium", "low", true, or false)'
    )


# --- log probabilities -------------------------------------------------------------------

MAX_TOP_LOGPROBS: Final = 20


def logprobs_requested(req: Mapping[str, Any], struct: str) -> int | None:
    """How many alternatives per token a request wants with its log probabilities.

    ``None`` when ``logprobs`` is not true; else ``top_logprobs`` (0..20, 0 = only the
    chosen token). Ollama checks the range even without ``logprobs``, with this message.
    """
    wanted = _bool_field(req, "logprobs", struct)
    top = _int_field(req, "top_logprobs", struct)
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise OllamaRequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top if wanted else None


def _logprob_fields(top: int | None, *, native: bool) -> Body:
    if top is None:
        return {}
    # Asked for zero alternatives, llama-server sends no log probabilities at all: ask for
    # one and leave it out of the answer (logprobs_to_ollama).
    count = max(top, 1)
    return {"n_probs": count} if native else {"logprobs": True, "top_logprobs": count}


def _token_logprob(entry: Mapping[str, Any]) -> Body:
    logprob = entry.get("logprob")
    item: Body = {
        "token": _text(entry.get("token")),
        "logprob": float(logprob) if isinstance(logprob, int | float)
        and not isinstance(logprob, bool) else 0.0,
    }
    raw = entry.get("bytes")
    if isinstance(raw, list) and raw and all(isinstance(b, int) for b in raw):
        item["bytes"] = list(raw)
    return item


def logprobs_to_ollama(entries: object, top: int) -> list[Body]:
    """llama-server's per-token log probabilities as Ollama's ``logprobs`` list.

    ``entries`` is an OpenAI ``logprobs.content`` list or the native
    ``completion_probabilities`` (both ``{token, logprob, bytes, top_logprobs}``); each
    becomes ``{token, logprob, bytes, top_logprobs}`` with at most ``top`` alternatives,
    and without ``top_logprobs`` when ``top`` is 0 (Go's omitempty).
    """
    out: list[Body] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        item = _token_logprob(entry)
        alternatives = entry.get("top_logprobs")
        if top > 0 and isinstance(alternatives, list):
            item["top_logprobs"] = [_token_logprob(alt) for alt in alternatives[:top]
                                    if isinstance(alt, Mapping)]
        out.append(item)
    return out


def _logprob_entries(resp: Mapping[str, Any]) -> object:
    """The per-token entries of an OpenAI choice or a native completion (or chunk)."""
    if "choices" in resp:
        logprobs = _first_choice(resp).get("logprobs")
        return logprobs.get("content") if isinstance(logprobs, Mapping) else None
    return resp.get("completion_probabilities")


# --- chat request ------------------------------------------------------------------------

def _arguments_object(value: object) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if value is None:
        return {}
    if isinstance(value, str):
        # Clients that learnt OpenAI's shape send the arguments as a JSON string.
        try:
            decoded = json.loads(value) if value.strip() else {}
        except ValueError:
            decoded = None
        if isinstance(decoded, Mapping):
            return decoded
    raise go_type_error("ToolCallFunction", "arguments", "api.ToolCallFunctionArguments", value)


class _ToolCallIds:
    """Gives every assistant tool call an id and finds it again for the tool's reply."""

    def __init__(self) -> None:
        self._count = 0
        self._pending: list[tuple[str, str]] = []  # (id, function name), oldest first

    def issue(self, given: object, name: str) -> str:
        call_id = given if isinstance(given, str) and given else f"call_{self._count}"
        self._count += 1
        self._pending.append((call_id, name))
        return call_id

    def answer(self, given: str, tool_name: str) -> str | None:
        if given:
            self._pending = [p for p in self._pending if p[0] != given]
            return given
        for i, (call_id, name) in enumerate(self._pending):
            if not tool_name or name == tool_name:
                del self._pending[i]
                return call_id
        return None


def _openai_message(msg: object, index: int, ids: _ToolCallIds) -> Body:
    message = _require_object(msg, "api.Message")
    where = f"messages.{index}"
    role = _str_field(message, "role", "Message").lower()  # Ollama lowercases roles
    content = _str_field(message, "content", "Message")
    images = _list_field(message, "images", "Message", "[]api.ImageData")
    out: Body = {"role": role, "content": _user_content(content, images, f"{where}.images")}

    if role == "assistant":
        thinking = _str_field(message, "thinking", "Message")
        if thinking:
            out["reasoning_content"] = thinking
        calls = _list_field(message, "tool_calls", "Message", "[]api.ToolCall")
        if calls:
            out["tool_calls"] = [_openai_tool_call(call, ids) for call in calls]
    elif role == "tool":
        tool_name = _str_field(message, "tool_name", "Message")
        call_id = ids.answer(_str_field(message, "tool_call_id", "Message"), tool_name)
        if tool_name:
            out["name"] = tool_name
        if call_id is not None:
            out["tool_call_id"] = call_id
    return out


def _openai_tool_call(call: object, ids: _ToolCallIds) -> Body:
    tool_call = _require_object(call, "api.ToolCall")
    function = _require_object(tool_call.get("function") or {}, "api.ToolCallFunction")
    name = _str_field(function, "name", "ToolCallFunction")
    arguments = _arguments_object(function.get("arguments"))
    return {
        "id": ids.issue(tool_call.get("id"), name),
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _common_fields(req: Mapping[str, Any], struct: str, *, chat: bool) -> Body:
    """Sampling, format and stream fields shared by every generation request."""
    stream = _stream_of(req, struct)
    body: Body = {"stream": stream}
    if stream and chat:
        # Usage (and, on recent builds, the timings) only come in this last event.
        body["stream_options"] = {"include_usage": True}
    sampling, _ = sampling_from_options(req.get("options"), struct=struct)
    body.update(sampling)
    return body


def chat_to_openai(req: Mapping[str, Any], *, model: str) -> Body:
    """An Ollama ``/api/chat`` body as a llama-server ``/v1/chat/completions`` body.

    Images become ``image_url`` parts (data URIs typed from the bytes), assistant
    ``tool_calls`` get OpenAI ids ("call_<n>", or the client's own ``id``) that later
    ``tool`` messages are matched to by ``tool_call_id`` or ``tool_name``, assistant
    ``thinking`` is sent back as ``reasoning_content``, ``format`` becomes
    ``response_format``, ``think`` becomes ``chat_template_kwargs.enable_thinking`` (plus
    ``reasoning_effort`` for levels and for false), ``options`` become sampling fields and
    ``logprobs``/``top_logprobs`` OpenAI's. ``keep_alive`` is the route's business (see
    ``parse_keep_alive``); ``truncate`` and ``shift`` are accepted and ignored.
    """
    req = _require_object(req, "api.ChatRequest")
    messages = _list_field(req, "messages", "ChatRequest", "[]api.Message")
    ids = _ToolCallIds()
    body: Body = {
        "model": model,
        "messages": [_openai_message(m, i, ids) for i, m in enumerate(messages)],
    }
    body.update(_common_fields(req, "ChatRequest", chat=True))
    response_format = response_format_from(req.get("format"))
    if response_format is not None:
        body["response_format"] = response_format
    tools = _list_field(req, "tools", "ChatRequest", "api.Tools")
    if tools:
        body["tools"] = [dict(_require_object(t, "api.Tool")) for t in tools]
    body.update(_think_fields(req.get("think")))
    body.update(_logprob_fields(logprobs_requested(req, "ChatRequest"), native=False))
    return body


def _rendered(source: str, **values: Any) -> str:
    try:
        return render_prompt(source, **values)
    except TemplateError as exc:
        raise OllamaRequestError(f"template: {exc}") from None


def chat_to_upstream(req: Mapping[str, Any], *, model: str) -> tuple[str, Body]:
    """An Ollama ``/api/chat`` body as ``(llama-server path, body)``.

    Normally the chat completion of :func:`chat_to_openai`, where the model's own chat
    template applies. A request with its own ``template`` (Go text/template, as Ollama
    takes it) is rendered here and sent to the native ``/completion`` as it is: no chat
    template on top, the answer read back as plain text (no tool-call or thinking parsing).
    """
    req = _require_object(req, "api.ChatRequest")
    template = _str_field(req, "template", "ChatRequest")
    if not template:
        return CHAT_PATH, chat_to_openai(req, model=model)
    chat_to_openai(req, model=model)  # the same checks of every field as a normal chat
    messages = _list_field(req, "messages", "ChatRequest", "[]api.Message")
    if any(isinstance(m, Mapping) and m.get("images") for m in messages):
        raise OllamaRequestError("images are not supported together with template")
    tools = [t for t in _list_field(req, "tools", "ChatRequest", "api.Tools")
             if isinstance(t, Mapping)]
    text = _rendered(template, messages=[m for m in messages if isinstance(m, Mapping)],
                     tools=tools, thinking=Thinking.of(req.get("think")))
    native: Body = {"prompt": text}
    native.update(_common_fields(req, "ChatRequest", chat=False))
    native.update(_native_format(req.get("format")))
    native.update(_logprob_fields(logprobs_requested(req, "ChatRequest"), native=True))
    return COMPLETION_PATH, native


# --- generate request --------------------------------------------------------------------

def _native_format(format: object) -> Body:
    """``format`` for the native endpoints, which take a bare ``json_schema``."""
    response_format = response_format_from(format)
    if response_format is None:
        return {}
    if response_format["type"] == "json_object":
        return {"json_schema": {"type": "object"}}  # Ollama's JSON mode is an object
    return {"json_schema": response_format["json_schema"]["schema"]}


def _raw_prompt(prompt: str, images: Sequence[object], media_marker: str) -> str | Body:
    if not images:
        return prompt
    data = [_decode_image(image, f"images.{i}")[0] for i, image in enumerate(images)]
    # Raw prompts place images with Ollama's "[img-N]" tags; llama-server wants its media
    # marker instead and the data in the same order. Untagged images go first.
    order: list[int] = []

    def swap(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if n >= len(data):
            return match.group(0)
        order.append(n)
        return media_marker

    text = _IMG_TAG.sub(swap, prompt)
    if not order:
        order = list(range(len(data)))
        text = media_marker * len(data) + text
    return {"prompt_string": text, "multimodal_data": [data[n] for n in order]}


def request_context(req: Mapping[str, Any]) -> list[int]:
    """The ``context`` tokens of a generate request (those of an earlier answer), checked."""
    context = _list_field(req, "context", "GenerateRequest", "[]int")
    for token in context:
        if isinstance(token, bool) or not isinstance(token, int):
            raise go_type_error("GenerateRequest", "context", "int", token)
    return context


def needs_chat_prompt(req: Mapping[str, Any], *, can_chat: bool) -> bool:
    """True when a generate request continues a ``context`` with the model's own chat
    template: the route renders the prompt with the runner (``/apply-template``) and
    passes it to :func:`generate_to_upstream` as ``chat_prompt``."""
    return (can_chat and not req.get("raw") and not req.get("template")
            and not req.get("suffix") and bool(req.get("context")))


def _plain_text(system: str, prompt: str) -> str:
    return f"{system}\n\n{prompt}" if system else prompt


def generate_to_upstream(
    req: Mapping[str, Any], *, model: str, media_marker: str = DEFAULT_MEDIA_MARKER,
    can_chat: bool = True, chat_prompt: str | None = None,
) -> tuple[str, Body]:
    """An Ollama ``/api/generate`` body as ``(llama-server path, body)``.

    - normal: ``/v1/chat/completions`` with ``[system?, user(prompt, images)]`` so the
      model's own chat template applies, as Ollama's template would;
    - ``raw: true``: llama.cpp's native ``/completion`` with the prompt untouched
      (images replace Ollama's ``[img-N]`` tags with ``media_marker``); ``suffix`` is
      ignored there, as Ollama ignores it in raw mode;
    - ``template``: the request's own Go template, rendered here (``.System``,
      ``.Prompt``, ``.Messages``; ``.Suffix`` with ``suffix``), to ``/completion``;
    - ``suffix``: the native ``/infill`` (``input_prefix``/``input_suffix``), which needs
      a model with fill-in-the-middle tokens, like Ollama's "insert" capability;
    - a model that cannot chat (``can_chat`` false): ``system`` and ``prompt`` as plain
      text to ``/completion``;
    - ``context`` (the tokens of an earlier answer): ``/completion`` with those tokens
      first and this turn's text after them; for a model with a chat template the text is
      ``chat_prompt``, which the route gets from the runner (see
      :func:`needs_chat_prompt`).

    ``/completion`` bodies that are not raw ask for the answer's tokens
    (``return_tokens``), from which the reply's ``context`` is made. Native replies
    (``content``, ``stop_type``, ``timings``) are read back by
    :func:`generate_response_to_ollama` and the stream converter. Raw mode refuses
    ``template``, ``system`` and ``context``, exactly as Ollama does. An empty prompt only
    loads the model: answer it with :func:`load_only_reply` instead of calling this.
    """
    req = _require_object(req, "api.GenerateRequest")
    prompt = _str_field(req, "prompt", "GenerateRequest")
    suffix = _str_field(req, "suffix", "GenerateRequest")
    system = _str_field(req, "system", "GenerateRequest")
    template = _str_field(req, "template", "GenerateRequest")
    context = request_context(req)
    raw = bool(_bool_field(req, "raw", "GenerateRequest"))
    images = _list_field(req, "images", "GenerateRequest", "[]api.ImageData")
    top = logprobs_requested(req, "GenerateRequest")

    if raw and (template or system or context):
        raise OllamaRequestError("raw mode does not support template, system, or context")

    if raw or suffix or template or not can_chat:
        # No chat template on these paths, so no thinking switch, but Ollama still
        # refuses a malformed "think" when it decodes the request.
        _think_fields(req.get("think"))

    if raw:
        body: Body = {"prompt": _raw_prompt(prompt, images, media_marker)}
        body.update(_native_fields(req, top))
        return COMPLETION_PATH, body

    if context and images:
        raise OllamaRequestError("images are not supported together with context")
    if context and suffix and not template:
        raise OllamaRequestError("context is not supported together with suffix")

    if template:
        if suffix:
            text = _rendered(template, prompt=prompt, suffix=suffix,
                             thinking=Thinking.of(req.get("think")))
        else:
            turn = [{"role": "system", "content": system}] if system else []
            turn.append({"role": "user", "content": prompt})
            text = _rendered(template, messages=turn, thinking=Thinking.of(req.get("think")))
        return COMPLETION_PATH, _continued(text, context, images, media_marker, req, top)

    if suffix:
        if images:
            raise OllamaRequestError("images are not supported together with suffix")
        body = {"input_prefix": prompt, "input_suffix": suffix}
        body.update(_native_fields(req, top))
        return INFILL_PATH, body

    if not can_chat:
        text = _plain_text(system, prompt)
        return COMPLETION_PATH, _continued(text, context, images, media_marker, req, top)

    if context and chat_prompt is not None:
        return COMPLETION_PATH, _continued(chat_prompt, context, [], media_marker, req, top)

    messages: list[Body] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _user_content(prompt, images, "images")})
    body = {"model": model, "messages": messages}
    body.update(_common_fields(req, "GenerateRequest", chat=True))
    response_format = response_format_from(req.get("format"))
    if response_format is not None:
        body["response_format"] = response_format
    body.update(_think_fields(req.get("think")))
    body.update(_logprob_fields(top, native=False))
    return CHAT_PATH, body


def _native_fields(req: Mapping[str, Any], top: int | None) -> Body:
    body = _common_fields(req, "GenerateRequest", chat=False)
    body.update(_native_format(req.get("format")))
    body.update(_logprob_fields(top, native=True))
    return body


def _continued(text: str, context: Sequence[int], images: Sequence[object],
               media_marker: str, req: Mapping[str, Any], top: int | None) -> Body:
    """A ``/completion`` body for rendered text, after the ``context`` tokens if any.

    llama-server reads a prompt list of token ids and strings as one sequence, and adds
    BOS only when it starts with a string, so the context's own BOS is not doubled.
    """
    prompt: str | list[int | str] | Body = (
        [*context, text] if context else _raw_prompt(text, images, media_marker))
    body: Body = {"prompt": prompt}
    body.update(_native_fields(req, top))
    body["return_tokens"] = True
    return body


def completion_prompt_parts(body: Mapping[str, Any]) -> tuple[list[int], str] | None:
    """(context tokens, text after them) of a ``/completion`` body made here; ``None``
    for one with images, whose prompt cannot be given back as tokens."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [], prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], str):
        tokens = [t for t in prompt[:-1] if isinstance(t, int)]
        return tokens, prompt[-1]
    return None


def load_only_reply(
    req: Mapping[str, Any], *, kind: Literal["chat", "generate"], model: str, created_at: str,
    keep_alive: float | None,
) -> Body | None:
    """Ollama's reply when a request only loads (or unloads) the model, else ``None``.

    Ollama treats a chat without messages, or a generate with an empty prompt, as "load
    the model" (``done_reason: "load"``), and as "unload it" when ``keep_alive`` is 0
    (``done_reason: "unload"``). The route still has to do the loading or unloading.
    """
    if kind == "chat":
        if _list_field(req, "messages", "ChatRequest", "[]api.Message"):
            return None
    elif _str_field(req, "prompt", "GenerateRequest"):
        return None
    reason = "unload" if keep_alive == 0 else "load"
    reply: Body = {"model": model, "created_at": created_at}
    if kind == "chat":
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    reply.update({"done": True, "done_reason": reason})
    return reply


# --- responses ---------------------------------------------------------------------------

def _ms_to_ns(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(round(value * 1_000_000), 0)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


def durations_from_timings(
    timings: Mapping[str, Any] | None, usage: Mapping[str, Any] | None, *,
    total_ns: int, load_ns: int,
) -> dict[str, int]:
    """Ollama's metrics, integer nanoseconds, from llama-server's ``timings``/``usage``.

    ``prompt_eval_count`` is the whole prompt (``prompt_n`` + ``cache_n``) because
    Ollama counts the prompt before its cache is consulted; ``prompt_eval_duration`` is
    only the time spent on the uncached part, as in Ollama. Without ``timings`` the
    counts come from ``usage``. Zero values are left out, like Go's ``omitempty``, so
    clients never divide by a zero duration; except ``load_duration``, which is always
    there so a client can tell a warm model (0) from a cold start.
    """
    prompt_count = eval_count = prompt_ns = eval_ns = 0
    if timings and "prompt_n" in timings:
        prompt_count = _count(timings.get("prompt_n")) + _count(timings.get("cache_n"))
        eval_count = _count(timings.get("predicted_n"))
        prompt_ns = _ms_to_ns(timings.get("prompt_ms"))
        eval_ns = _ms_to_ns(timings.get("predicted_ms"))
    elif usage:
        prompt_count = _count(usage.get("prompt_tokens"))
        eval_count = _count(usage.get("completion_tokens"))
    metrics = {
        "total_duration": max(int(total_ns), 0),
        "load_duration": max(int(load_ns), 0),
        "prompt_eval_count": prompt_count,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_count,
        "eval_duration": eval_ns,
    }
    return {key: value for key, value in metrics.items() if value or key == "load_duration"}


def done_reason_from(finish_reason: object = None, stop_type: object = None) -> str:
    """Ollama's ``done_reason`` from an OpenAI ``finish_reason`` or a native ``stop_type``.

    Ollama only says "stop" or "length"; a turn that ends in tool calls is a "stop".
    """
    if finish_reason == "length" or stop_type == "limit":
        return "length"
    return "stop"


def _arguments_from_openai(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if value is None:
        return {}
    text = value if isinstance(value, str) else json.dumps(value)
    if not text.strip():
        return {}
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        return decoded
    return {RAW_ARGUMENTS_KEY: text}


def tool_calls_from_openai(calls: Iterable[Mapping[str, Any]] | None) -> list[Body]:
    """OpenAI ``tool_calls`` as Ollama's: ``{"id", "function": {"index", "name",
    "arguments": object}}``.

    Arguments that are not a JSON object (a model cut off by ``num_predict``, say) are
    kept as text under :data:`RAW_ARGUMENTS_KEY` rather than dropped or crashing.
    """
    out: list[Body] = []
    for i, call in enumerate(calls or ()):
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        index = call.get("index", i)
        converted: Body = {}
        if isinstance(call.get("id"), str) and call["id"]:
            converted["id"] = call["id"]
        converted["function"] = {
            "index": index if isinstance(index, int) and not isinstance(index, bool) else i,
            "name": function.get("name") if isinstance(function.get("name"), str) else "",
            "arguments": _arguments_from_openai(function.get("arguments")),
        }
        out.append(converted)
    return out


def _first_choice(resp: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = resp.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    return {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def chat_response_to_ollama(
    resp: Mapping[str, Any], *, model: str, created_at: str, total_ns: int, load_ns: int,
    upstream: str = CHAT_PATH, top_logprobs: int | None = None,
) -> Body:
    """A non-streamed llama-server reply as Ollama's ``ChatResponse``.

    ``upstream`` is the path :func:`chat_to_upstream` chose: a chat completion, or the
    native ``/completion`` of a request with its own template. ``top_logprobs`` (from
    :func:`logprobs_requested`) adds ``logprobs`` when not ``None``.
    """
    if upstream == COMPLETION_PATH:
        out_message: Body = {"role": "assistant", "content": _text(resp.get("content"))}
        reason = done_reason_from(stop_type=resp.get("stop_type"))
        usage: Mapping[str, Any] | None = _native_usage(resp)
    else:
        choice = _first_choice(resp)
        message = choice.get("message")
        message = message if isinstance(message, Mapping) else {}
        out_message = {"role": "assistant", "content": _text(message.get("content"))}
        thinking = _text(message.get("reasoning_content"))
        if thinking:
            out_message["thinking"] = thinking
        tool_calls = tool_calls_from_openai(message.get("tool_calls"))
        if tool_calls:
            out_message["tool_calls"] = tool_calls
        reason = done_reason_from(choice.get("finish_reason"))
        usage = resp.get("usage")
    out: Body = {
        "model": model,
        "created_at": created_at,
        "message": out_message,
        "done": True,
        "done_reason": reason,
    }
    out.update(durations_from_timings(
        resp.get("timings"), usage, total_ns=total_ns, load_ns=load_ns))
    if top_logprobs is not None:
        out["logprobs"] = logprobs_to_ollama(_logprob_entries(resp), top_logprobs)
    return out


def _native_usage(resp: Mapping[str, Any]) -> Body:
    return {"prompt_tokens": resp.get("tokens_evaluated"),
            "completion_tokens": resp.get("tokens_predicted")}


def generate_response_to_ollama(
    resp: Mapping[str, Any], *, model: str, created_at: str, total_ns: int, load_ns: int,
    upstream: str, top_logprobs: int | None = None, context: Sequence[int] | None = None,
) -> Body:
    """A non-streamed llama-server reply as Ollama's ``GenerateResponse``.

    ``upstream`` is the path :func:`generate_to_upstream` chose: chat completions,
    ``/v1/completions``, or the native ``/completion``/``/infill``. ``context`` (the
    tokens of prompt and answer, which the route works out) and ``logprobs`` (when
    ``top_logprobs`` is not ``None``) are added when given.
    """
    thinking = ""
    usage: Mapping[str, Any] | None
    if upstream == CHAT_PATH:
        choice = _first_choice(resp)
        message = choice.get("message")
        message = message if isinstance(message, Mapping) else {}
        text = _text(message.get("content"))
        thinking = _text(message.get("reasoning_content"))
        reason = done_reason_from(choice.get("finish_reason"))
        usage = resp.get("usage")
    elif upstream == LEGACY_COMPLETIONS_PATH:
        choice = _first_choice(resp)
        text = _text(choice.get("text"))
        reason = done_reason_from(choice.get("finish_reason"))
        usage = resp.get("usage")
    else:
        text = _text(resp.get("content"))
        reason = done_reason_from(stop_type=resp.get("stop_type"))
        usage = _native_usage(resp)
    out: Body = {"model": model, "created_at": created_at, "response": text}
    if thinking:
        out["thinking"] = thinking
    out.update({"done": True, "done_reason": reason})
    if context is not None:
        out["context"] = list(context)
    out.update(durations_from_timings(
        resp.get("timings"), usage, total_ns=total_ns, load_ns=load_ns))
    if top_logprobs is not None:
        out["logprobs"] = logprobs_to_ollama(_logprob_entries(resp), top_logprobs)
    return out


# --- embeddings --------------------------------------------------------------------------

class EmbedPlan(TypedDict):
    """What the route needs besides the upstream body to answer ``/api/embed``."""

    inputs: int  # 0: answer {"embeddings": []} without calling llama-server, as Ollama does
    dimensions: int  # 0: keep the model's size
    truncate: bool


def _embed_inputs(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise OllamaRequestError("invalid input type")


def _int_field(obj: Mapping[str, Any], key: str, struct: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise go_type_error(struct, key, "int", value)
    return value


def embed_to_upstream(
    req: Mapping[str, Any], *, model: str | None = None
) -> tuple[Body, EmbedPlan]:
    """An Ollama ``/api/embed`` body as a llama-server ``/v1/embeddings`` body and plan.

    ``input`` is a string or a list of strings (an empty string means no input, as in
    Ollama); ``truncate`` defaults to true; ``dimensions`` > 0 shortens each vector in
    :func:`embed_response_to_ollama`; ``options`` are type-checked like Ollama does.
    """
    req = _require_object(req, "api.EmbedRequest")
    inputs = _embed_inputs(req.get("input"))
    truncate = _bool_field(req, "truncate", "EmbedRequest")
    dimensions = max(_int_field(req, "dimensions", "EmbedRequest"), 0)
    # Validation only: Ollama refuses badly typed options on every endpoint.
    sampling_from_options(req.get("options"), struct="EmbedRequest")
    body: Body = {}
    if model is not None:
        body["model"] = model
    body.update({"input": inputs, "encoding_format": "float"})
    plan: EmbedPlan = {
        "inputs": len(inputs),
        "dimensions": dimensions,
        "truncate": True if truncate is None else truncate,
    }
    return body, plan


def _normalized(vector: Sequence[float]) -> list[float]:
    """L2-normalise the way Ollama's EmbedHandler does, refusing NaN and Inf."""
    total = 0.0
    for v in vector:
        if not math.isfinite(v):
            raise OllamaRequestError("embedding contains NaN or Inf values")
        total += v * v
    scale = 1.0 / max(math.sqrt(total), 1e-12)
    return [v * scale for v in vector]


def _vectors(resp: Mapping[str, Any]) -> list[list[float]]:
    data = resp.get("data")
    if not isinstance(data, list):
        return []
    items = [d for d in data if isinstance(d, Mapping)]
    items.sort(key=lambda d: d.get("index", 0) if isinstance(d.get("index"), int) else 0)
    vectors: list[list[float]] = []
    for item in items:
        embedding = item.get("embedding")
        if not isinstance(embedding, list):
            raise OllamaRequestError("embedding is not a list of numbers")
        vectors.append([float(v) for v in embedding])
    return vectors


def embed_response_to_ollama(
    resp: Mapping[str, Any], *, model: str, total_ns: int, load_ns: int, dimensions: int = 0,
) -> Body:
    """llama-server's ``/v1/embeddings`` reply as Ollama's ``EmbedResponse``.

    Every vector is L2-normalised; with ``dimensions`` it is cut to that size and
    normalised again, exactly Ollama's order of operations.
    """
    embeddings: list[list[float]] = []
    for vector in _vectors(resp):
        normalized = _normalized(vector)
        if 0 < dimensions < len(normalized):
            normalized = _normalized(normalized[:dimensions])
        embeddings.append(normalized)
    usage = resp.get("usage")
    prompt_tokens = _count(usage.get("prompt_tokens")) if isinstance(usage, Mapping) else 0
    out: Body = {"model": model, "embeddings": embeddings}
    for key, value in (("total_duration", max(int(total_ns), 0)),
                       ("load_duration", max(int(load_ns), 0)),
                       ("prompt_eval_count", prompt_tokens)):
        if value:
            out[key] = value
    return out


EMBED_TOO_LONG: Final = "the input length exceeds the context length"  # Ollama's 400
EMBED_CANNOT_FIT: Final = "input after truncation exceeds maximum context length"

# llama-server's defaults for the two batch sizes; an embedding input must fit in one
# physical batch (it cannot be split across batches), and in the context.
_DEFAULT_BATCH: Final = 2048
_DEFAULT_UBATCH: Final = 512
_LIMIT_FLAGS: Final = ((("ctx-size", "c"), None), (("batch-size", "b"), _DEFAULT_BATCH),
                       (("ubatch-size", "ub"), _DEFAULT_UBATCH))
# Every token covers at least one byte of text, besides the few special tokens a
# tokenizer adds (BOS, EOS, CLS, SEP): text this much shorter than the limit fits.
SPECIAL_TOKEN_ROOM: Final = 4
_TOO_LARGE = re.compile(r"too large to process.*?current batch size: (\d+)", re.DOTALL)


def _positive_arg(args: Mapping[str, object], names: Sequence[str]) -> int | None:
    for name in names:
        value = args.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def embed_token_limit(args: Mapping[str, object], slot_context: int | None) -> int | None:
    """The most tokens one embedding input may have on a runner with these args.

    The smallest of the slot's context (``n_ctx`` from ``/props``), ``ctx-size``, and the
    logical and physical batch sizes (llama-server's defaults when not set). ``None``
    when nothing is known.
    """
    limits = [slot_context] if slot_context and slot_context > 0 else []
    for names, default in _LIMIT_FLAGS:
        value = _positive_arg(args, names) or default
        if value:
            limits.append(value)
    return min(limits) if limits else None


def fits_untokenized(text: str, limit: int) -> bool:
    """True when ``text`` surely fits in ``limit`` tokens, without asking the tokenizer."""
    return len(text.encode("utf-8")) + SPECIAL_TOKEN_ROOM <= limit


def fit_tokens(with_special: Sequence[int], without_special: Sequence[int],
               limit: int) -> list[int] | None:
    """An input's tokens cut to ``limit``, keeping the special tokens its tokenizer adds.

    ``with_special``/``without_special`` are the same text tokenized with and without
    them; the end of the text is cut, as Ollama's truncate does. ``None`` when not even
    the special tokens fit.
    """
    if len(with_special) <= limit:
        return list(with_special)
    specials = len(with_special) - len(without_special)
    keep = limit - max(specials, 0)
    if keep <= 0:
        return None
    body = list(without_special)
    for start in range(max(specials, 0) + 1):
        if list(with_special[start:start + len(body)]) == body:
            return [*with_special[:start], *body[:keep], *with_special[start + len(body):]]
    return list(with_special[:limit])  # the specials are not simply around the text


def batch_limit_from_error(message: str) -> int | None:
    """The batch size in llama-server's "input is too large to process" error, if it is one."""
    match = _TOO_LARGE.search(message)
    return int(match.group(1)) if match else None


def embeddings_to_upstream(req: Mapping[str, Any], *, model: str | None = None) -> Body | None:
    """A legacy ``/api/embeddings`` body (``prompt``) as a ``/v1/embeddings`` body.

    ``None`` for an empty prompt: Ollama answers ``{"embedding": []}`` after loading the
    model without computing anything. Ollama does not normalise this endpoint's vector,
    so llama-server is asked not to either (``embd_normalize: -1``; builds that predate
    the field ignore it and return a unit vector, which cosine similarity cannot tell).
    """
    req = _require_object(req, "api.EmbeddingRequest")
    prompt = _str_field(req, "prompt", "EmbeddingRequest")
    sampling_from_options(req.get("options"), struct="EmbeddingRequest")
    if not prompt:
        return None
    body: Body = {}
    if model is not None:
        body["model"] = model
    body.update({"input": prompt, "encoding_format": "float", "embd_normalize": -1})
    return body


def embeddings_response_to_ollama(resp: Mapping[str, Any] | None) -> Body:
    """llama-server's reply as the legacy ``{"embedding": [...]}``, vector untouched."""
    vectors = _vectors(resp) if resp is not None else []
    return {"embedding": vectors[0] if vectors else []}
