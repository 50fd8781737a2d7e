#!/usr/bin/env python3
"""Stands in for llama-server: same CLI, endpoints and payload shapes, plus fault switches.

Standard library only, so it runs under any python3. Every shape, header and log line here
imitates the recordings in ``tests/data/llama_server/`` (real llama-server 0.6.0-dev serving
the tiny test model); the integration tests compare the two.

Usage: ``fake_llama_server.py -m MODEL --host H --port P [any llama-server flags] [faults]``.
Unknown ``--flag [value]`` tokens are accepted and ignored, like the real server's options
the fake has no use for. Fault switches (all optional):

``--fault-exit-on-start [CODE]``   print model-load errors, exit CODE (default 1) at once
``--fault-ignore-sigterm``         SIGTERM is ignored (SIGINT still stops it)
``--fault-slow-health SECONDS``    /health is 503 for SECONDS, a log line every 0.2 s
``--fault-never-healthy``          /health is 503 forever and the log goes silent
``--fault-never-healthy-logging``  /health is 503 forever, a log line every 0.2 s
``--fault-crash-mid-stream N``     ``os._exit(137)`` after N content chunks of a stream
``--fault-first-token-delay S``    wait S seconds before the first token (and headers)
``--fault-chunk-interval S``       wait S seconds between tokens
``--fault-chunks N``               tokens to generate (default 8; ``max_tokens`` caps it)
``--fault-http-status CODE``       completion endpoints answer CODE with an error body
``--fault-fork-grandchild``        spawn a sleeping grandchild in the same process group
                                   (it outlives the fake unless the group is killed)
``--fault-record-argv PATH``       write ``{"pid", "argv", "grandchild_pid"}`` JSON to PATH
``--fault-log-disconnects PATH``   append ``<path> <unix time>`` to PATH each time a client
                                   goes away before its response was complete
``--fault-segv-unless-no-repack``  die of SIGSEGV while loading unless ``--no-repack`` is
                                   given (a CPU whose AMX tiles fault under virtualisation)
``--fault-echo``                   generate the prompt text itself as one token, so tests
                                   can match answers to requests

Like llama-server, the fake demands a key on every route but ``/health`` when one is given
through the ``LLAMA_API_KEY`` environment variable or ``--api-key`` (comma-separated; both
add up): ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``, else 401.

Deliberate simplifications: token counts are word counts, generated text is
``chunk_texts(n)``, embeddings are a hash of the input; ``--pooling none`` gives the real
400, any other (or no) ``--pooling`` works.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import signal
import socketserver
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

BUILD_INFO = "b0-unknown"
N_EMBD = 64  # the tiny test model's width, so embedding vectors look like the recording
LOADING_S = 0.03  # the tiny model is healthy ~30 ms after spawn (recorded)
LOG_INTERVAL_S = 0.2
CRASH_EXIT_CODE = 137

_WORDS = (
    "Hello", " from", " the", " fake", " llama", " server", ".", " It", " streams",
    " one", " token", " per", " chunk", ",", " deterministically", "!",
)  # fmt: skip

# Error types by status, as llama-server's format_error_response() names them.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
_EXCEED_CONTEXT_TOKENS = 2427  # from error_exceed_context.json

# A stock ChatML template: the fake has no model, but clients read this from /props.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


def chunk_texts(n: int) -> list[str]:
    """The text pieces the fake generates for ``n`` tokens, in order."""
    return [_WORDS[i % len(_WORDS)] for i in range(n)]


# ---------------------------------------------------------------------------------------
# command line


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8080
    model: str = ""
    alias: str | None = None
    ctx_size: int = 0
    parallel: int = 4
    threads: int = 1
    embedding: bool = False
    pooling: str | None = None
    exit_on_start: int | None = None
    ignore_sigterm: bool = False
    slow_health: float = LOADING_S
    never_healthy: bool = False
    never_healthy_logging: bool = False
    crash_mid_stream: int | None = None
    first_token_delay: float = 0.0
    chunk_interval: float = 0.0
    chunks: int | None = None
    http_status: int | None = None
    fork_grandchild: bool = False
    record_argv: str | None = None
    log_disconnects: str | None = None
    echo: bool = False
    segv_unless_no_repack: bool = False
    no_repack: bool = False
    api_keys: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        # Real llama-server names the model by --alias, else by -m exactly as given, and
        # uses that name in every response whatever "model" the request asked for.
        return self.alias if self.alias else self.model

    @property
    def n_ctx(self) -> int:
        return self.ctx_size if self.ctx_size > 0 else 4096


_VALUE_OPTS: dict[str, tuple[str, type]] = {
    "--host": ("host", str),
    "--port": ("port", int),
    "-m": ("model", str),
    "--model": ("model", str),
    "-a": ("alias", str),
    "--alias": ("alias", str),
    "-c": ("ctx_size", int),
    "--ctx-size": ("ctx_size", int),
    "-np": ("parallel", int),
    "--parallel": ("parallel", int),
    "-t": ("threads", int),
    "--threads": ("threads", int),
    "--pooling": ("pooling", str),
    "--fault-slow-health": ("slow_health", float),
    "--fault-crash-mid-stream": ("crash_mid_stream", int),
    "--fault-first-token-delay": ("first_token_delay", float),
    "--fault-chunk-interval": ("chunk_interval", float),
    "--fault-chunks": ("chunks", int),
    "--fault-http-status": ("http_status", int),
    "--fault-record-argv": ("record_argv", str),
    "--fault-log-disconnects": ("log_disconnects", str),
}
_FLAG_OPTS: dict[str, str] = {
    "--embedding": "embedding",
    "--embeddings": "embedding",
    "--fault-ignore-sigterm": "ignore_sigterm",
    "--fault-never-healthy": "never_healthy",
    "--fault-never-healthy-logging": "never_healthy_logging",
    "--fault-fork-grandchild": "fork_grandchild",
    "--fault-echo": "echo",
    "--fault-segv-unless-no-repack": "segv_unless_no_repack",
    "--no-repack": "no_repack",
}


def _looks_like_value(token: str) -> bool:
    if not token.startswith("-"):
        return True
    try:  # negative numbers such as "-ngl -1" are values, not flags
        float(token)
    except ValueError:
        return False
    return True


def _csv_keys(value: str) -> list[str]:
    return [key for key in (part.strip() for part in value.split(",")) if key]


def parse_args(argv: list[str], env: dict[str, str] | None = None) -> Options:
    """Parse leniently: known options are typed, anything else is skipped.

    As in llama-server, the environment applies first and the command line adds to it.
    """
    opts = Options()
    env_keys = (os.environ if env is None else env).get("LLAMA_API_KEY", "")
    opts.api_keys.extend(_csv_keys(env_keys))
    i = 0
    while i < len(argv):
        token = argv[i]
        inline: str | None = None
        if token.startswith("--") and "=" in token:
            token, inline = token.split("=", 1)
        has_next = i + 1 < len(argv) and _looks_like_value(argv[i + 1])
        if token in _VALUE_OPTS:
            attr, kind = _VALUE_OPTS[token]
            if inline is None and i + 1 >= len(argv):
                _die_usage(f"expected value for argument {token}")
            raw = inline if inline is not None else argv[i + 1]
            try:
                setattr(opts, attr, kind(raw))
            except ValueError:
                _die_usage(f"invalid value for argument {token}: {raw}")
            i += 1 if inline is not None else 2
        elif token in _FLAG_OPTS:
            setattr(opts, _FLAG_OPTS[token], True)
            i += 1
        elif token == "--api-key":
            if inline is None and i + 1 >= len(argv):
                _die_usage(f"expected value for argument {token}")
            opts.api_keys.extend(_csv_keys(inline if inline is not None else argv[i + 1]))
            i += 1 if inline is not None else 2
        elif token == "--fault-exit-on-start":
            value = inline if inline is not None else (argv[i + 1] if has_next else None)
            try:
                opts.exit_on_start = int(value) if value is not None else 1
            except ValueError:
                opts.exit_on_start = 1
                value = None  # not ours: leave the token for the next round
            i += 1 if (inline is not None or value is None) else 2
        else:
            opts.ignored.append(argv[i])
            take_value = inline is None and has_next and token.startswith("-")
            if take_value:
                opts.ignored.append(argv[i + 1])
            i += 2 if take_value else 1
    return opts


def _die_usage(message: str) -> NoReturn:
    # llama-server prints the bad argument and exits 1 before doing anything else.
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------
# logging in llama-server's format: "<min>.<sec>.<ms>.<us> <level> <text>"


class Log:
    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, level: str, text: str) -> None:
        us = int((time.monotonic() - self._t0) * 1_000_000)
        minutes, seconds = us // 60_000_000, us // 1_000_000 % 60
        stamp = f"{minutes}.{seconds:02d}.{us // 1000 % 1000:03d}.{us % 1000:03d}"
        with self._lock:
            try:
                sys.stderr.write(f"{stamp} {level} {text}\n")
                sys.stderr.flush()
            except (BrokenPipeError, ValueError):
                pass  # the reader went away; a real server keeps serving too


# ---------------------------------------------------------------------------------------
# payloads


def _completion_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "chatcmpl-" + "".join(secrets.choice(alphabet) for _ in range(32))


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    if status == 400 and message is None:
        return {"error": {
            "code": 400,
            "message": f"request ({_EXCEED_CONTEXT_TOKENS} tokens) exceeds the available "
                       "context size (256 tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": _EXCEED_CONTEXT_TOKENS,
            "n_ctx": 256,
        }}
    return {"error": {
        "code": status,
        "message": message or f"fake llama-server fault: HTTP {status}",
        "type": _ERROR_TYPES.get(status, "server_error"),
    }}


# Loading and 404 bodies list their keys in a different order than format_error_response().
_LOADING_BODY = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
_NOT_FOUND_BODY = {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}
_UNAUTHORIZED_BODY = {"error": {"message": "Invalid API Key", "type": "authentication_error",
                                "code": 401}}
# Routes llama-server answers without the key (server-http.cpp, get_public_endpoints).
_PUBLIC_PATHS = frozenset({"/health", "/v1/health"})


def _embedding(text: str) -> list[float]:
    raw = b""
    counter = 0
    while len(raw) < N_EMBD:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    vec = [(b - 127.5) / 127.5 for b in raw[:N_EMBD]]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]  # OAI embeddings come L2-normalised


@dataclass
class Generation:
    """One request's generation, with the timing numbers llama-server reports."""

    n_prompt: int
    texts: list[str]
    finish_reason: str
    task: int = 0
    t_start: float = field(default_factory=time.monotonic)
    t_first: float = 0.0
    t_end: float = 0.0

    def timings(self) -> dict[str, Any]:
        prompt_ms = max((self.t_first - self.t_start) * 1000, 0.001)
        predicted_ms = max((self.t_end - self.t_first) * 1000, 0.001)
        n = len(self.texts)
        return {
            "cache_n": 0,
            "prompt_n": self.n_prompt,
            "prompt_ms": round(prompt_ms, 3),
            "prompt_per_token_ms": prompt_ms / self.n_prompt,
            "prompt_per_second": self.n_prompt * 1000 / prompt_ms,
            "predicted_n": n,
            "predicted_ms": round(predicted_ms, 3),
            "predicted_per_token_ms": predicted_ms / max(n, 1),
            "predicted_per_second": n * 1000 / predicted_ms,
        }

    def usage(self) -> dict[str, Any]:
        n = len(self.texts)
        return {
            "completion_tokens": n,
            "prompt_tokens": self.n_prompt,
            "total_tokens": n + self.n_prompt,
            "prompt_tokens_details": {"cached_tokens": 0},
        }


# ---------------------------------------------------------------------------------------
# HTTP


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck stream must never keep the process alive
    request_queue_size = 128  # the default 5 refuses bursts of parallel test clients

    def __init__(self, opts: Options, log: Log) -> None:
        self.opts = opts
        self.log = log
        self.ready = threading.Event()
        self.task_id = 0
        self.task_lock = threading.Lock()
        super().__init__((opts.host, opts.port), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup that can
        # take seconds on a badly configured resolver; the fake never needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def next_task(self) -> int:
        with self.task_lock:
            self.task_id += 1
            return self.task_id


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # cpp-httplib's keep-alive timeout ("Keep-Alive: timeout=5, max=100")
    server: FakeServer

    # -- plumbing ---------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        pass  # llama-server at default verbosity does not log requests

    def version_string(self) -> str:
        return "llama.cpp"

    def send_response(self, code: int, message: str | None = None) -> None:
        # cpp-httplib sends no Date header; keep the recorded header set.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", ""))

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            # cpp-httplib closes the connection after an error status.
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Keep-Alive", "timeout=5, max=100")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Keep-Alive", "timeout=5, max=100")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        # One HTTP chunk per write, flushed, so clients see each token as it is made.
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # A relay that streams the request body sends it chunked; cpp-httplib accepts it.
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_json(self) -> Any:
        raw = self._read_body()
        try:
            return json.loads(raw or b"{}")
        except ValueError as exc:
            self._send_json(400, _error_body(400, f"[json.exception.parse_error.101] {exc}"))
            return None

    # -- routes -----------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/v1/health"):
            if self.server.ready.is_set():
                self._send_json(200, {"status": "ok"})
            else:
                self._send_json(503, _LOADING_BODY)
        elif not self.server.ready.is_set():
            self._send_json(503, _LOADING_BODY)  # every endpoint waits for the model
        elif not self._authorized():
            self._refuse()
        elif path in ("/v1/models", "/models"):
            self._send_json(200, self._models())
        elif path == "/props":
            self._send_json(200, self._props())
        else:
            self._send_json(404, _NOT_FOUND_BODY)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = {
            "/v1/chat/completions": self._chat,
            "/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/completion": self._native,
            "/completions": self._native,
            "/v1/embeddings": self._embeddings,
            "/embeddings": self._embeddings,
            "/embedding": self._embeddings,
        }
        handler = routes.get(path)
        authorized = self._authorized()
        if handler is None or not authorized:
            self._read_body()
            if not self.server.ready.is_set():
                self._send_json(503, _LOADING_BODY)
            elif not authorized:
                self._refuse()  # checked before routing: unknown paths get 401 too
            else:
                self._send_json(404, _NOT_FOUND_BODY)
            return
        body = self._read_json()
        if body is None:
            return
        if not isinstance(body, dict):
            self._send_json(400, _error_body(400, "request body must be a JSON object"))
            return
        if not self.server.ready.is_set():
            self._send_json(503, _LOADING_BODY)
            return
        # The client may go away mid-response (a cancelled request); nothing to clean up.
        try:
            handler(body)
        except (BrokenPipeError, ConnectionResetError):
            self._note_disconnect(path)

    def _authorized(self) -> bool:
        keys = self.server.opts.api_keys
        if not keys or self.path.split("?", 1)[0] in _PUBLIC_PATHS:
            return True
        given = self.headers.get("Authorization") or self.headers.get("X-Api-Key") or ""
        given = given.removeprefix("Bearer ")
        return any(secrets.compare_digest(given.encode(), key.encode()) for key in keys)

    def _refuse(self) -> None:
        self.server.log("W", "srv    operator(): unauthorized: Invalid API Key")
        self._send_json(401, _UNAUTHORIZED_BODY)

    def _note_disconnect(self, path: str) -> None:
        target = self.server.opts.log_disconnects
        if target:
            with open(target, "a", encoding="utf-8") as f:
                f.write(f"{path} {time.time():.6f}\n")

    # -- generation -------------------------------------------------------------------

    def _plan(self, body: dict[str, Any], prompt_text: str) -> Generation | None:
        """Apply the HTTP-status and timing faults; None means an error was sent."""
        opts = self.server.opts
        if opts.http_status is not None:
            self._send_json(opts.http_status, _error_body(opts.http_status))
            return None
        limit = next((body[k] for k in ("max_tokens", "max_completion_tokens", "n_predict")
                      if isinstance(body.get(k), int) and body[k] >= 0), None)
        n = opts.chunks if opts.chunks is not None else (limit if limit is not None else 8)
        if limit is not None:
            n = min(n, limit)
        # Real servers report "length" when max_tokens stopped them, "stop" on EOS.
        finish = "length" if limit is not None and n == limit else "stop"
        texts = [prompt_text] if opts.echo else chunk_texts(n)
        gen = Generation(n_prompt=_count_tokens(prompt_text), texts=texts,
                         finish_reason=finish)
        gen.task = self.server.next_task()
        self.server.log("I", f"slot launch_slot_: id  0 | task {gen.task} | processing task, "
                             "is_child = 0")
        if opts.first_token_delay > 0:
            time.sleep(opts.first_token_delay)
        gen.t_first = time.monotonic()
        return gen

    def _pace(self, index: int) -> None:
        if index > 0 and self.server.opts.chunk_interval > 0:
            time.sleep(self.server.opts.chunk_interval)

    def _generate_all(self, gen: Generation) -> None:
        for i in range(len(gen.texts)):
            self._pace(i)
        gen.t_end = time.monotonic()
        self._log_timings(gen)

    def _log_timings(self, gen: Generation) -> None:
        t = gen.timings()
        log, task = self.server.log, gen.task
        log("I", f"slot print_timing: id  0 | task {task} | prompt eval time = "
                 f"{t['prompt_ms']:10.2f} ms / {t['prompt_n']:5d} tokens")
        log("I", f"slot print_timing: id  0 | task {task} |        eval time = "
                 f"{t['predicted_ms']:10.2f} ms / {t['predicted_n']:5d} tokens")
        log("I", f"slot      release: id  0 | task {task} | stop processing: "
                 f"n_tokens = {t['prompt_n'] + t['predicted_n']}, truncated = 0")

    def _stream(self, gen: Generation, events: list[list[dict[str, Any]]],
                final: list[dict[str, Any]], done: bool) -> None:
        """Send one write per token (events[i] holds that token's SSE events)."""
        crash_after = self.server.opts.crash_mid_stream
        self._start_stream()
        if crash_after == 0:
            os._exit(CRASH_EXIT_CODE)
        for i, token_events in enumerate(events):
            self._pace(i)
            self._write_chunk(_sse(token_events))
            if crash_after is not None and i + 1 >= crash_after:
                # Abrupt death: no final event, no terminating chunk, like a segfault/OOM.
                os._exit(CRASH_EXIT_CODE)
        gen.t_end = time.monotonic()
        for event in final:
            if "timings" in event:
                event["timings"] = gen.timings()
        tail = _sse(final) + (b"data: [DONE]\n\n" if done else b"")
        self._write_chunk(tail)
        self._end_stream()
        self._log_timings(gen)

    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            self._send_json(400, _error_body(400, "'messages' is required"))
            return
        prompt = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        gen = self._plan(body, prompt)
        if gen is None:
            return
        gen.n_prompt += 4 * len(messages)  # role markers of a chat template
        cid, created, name = _completion_id(), int(time.time()), self.server.opts.model_name

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
                    "created": created, "id": cid, "model": name,
                    "system_fingerprint": BUILD_INFO, "object": "chat.completion.chunk"}

        if not body.get("stream"):
            self._generate_all(gen)
            self._send_json(200, {
                "choices": [{"finish_reason": gen.finish_reason, "index": 0,
                             "message": {"role": "assistant", "content": "".join(gen.texts)}}],
                "created": created, "model": name, "system_fingerprint": BUILD_INFO,
                "object": "chat.completion", "usage": gen.usage(), "id": cid,
                "timings": gen.timings(),
            })
            return
        events = [[chunk({"content": text})] for text in gen.texts]
        # llama-server sends the role delta and the first token in one write (format_oai_sse).
        role = chunk({"role": "assistant", "content": None})
        if events:
            events[0].insert(0, role)
        else:
            events = [[role]]
        final = [chunk({}, gen.finish_reason)]
        if (body.get("stream_options") or {}).get("include_usage"):
            final.append({"choices": [], "created": created, "id": cid, "model": name,
                          "system_fingerprint": BUILD_INFO, "object": "chat.completion.chunk",
                          "usage": gen.usage()})
        final[-1]["timings"] = None  # filled in when generation ends
        self._stream(gen, events, final, done=True)

    def _completions(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        if prompt is None:
            self._send_json(400, _error_body(400, "\"prompt\" must be provided"))
            return
        gen = self._plan(body, prompt if isinstance(prompt, str) else json.dumps(prompt))
        if gen is None:
            return
        cid, created, name = _completion_id(), int(time.time()), self.server.opts.model_name

        def choice(text: str, finish: str | None) -> list[dict[str, Any]]:
            return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]

        if not body.get("stream"):
            self._generate_all(gen)
            self._send_json(200, {
                "choices": choice("".join(gen.texts), gen.finish_reason), "created": created,
                "model": name, "system_fingerprint": BUILD_INFO, "object": "text_completion",
                "usage": gen.usage(), "id": cid, "timings": gen.timings(),
            })
            return
        events = [[{"choices": choice(text, None), "created": created, "model": name,
                    "system_fingerprint": BUILD_INFO, "object": "text_completion", "id": cid}]
                  for text in gen.texts]
        final = [{"choices": choice("", gen.finish_reason), "created": created, "model": name,
                  "system_fingerprint": BUILD_INFO, "object": "text_completion",
                  "usage": gen.usage(), "id": cid, "timings": None}]
        self._stream(gen, events, final, done=True)

    def _native(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        if prompt is None:
            self._send_json(400, _error_body(400, "\"prompt\" must be provided"))
            return
        prompt_text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        gen = self._plan(body, prompt_text)
        if gen is None:
            return
        opts = self.server.opts

        def result(content: str, stop: bool) -> dict[str, Any]:
            return {"index": 0, "content": content, "tokens": [], "stop": stop, "id_slot": 0,
                    "tokens_predicted": len(gen.texts), "tokens_evaluated": gen.n_prompt}

        if not body.get("stream"):
            self._generate_all(gen)
            self._send_json(200, {
                "index": 0, "content": "".join(gen.texts), "tokens": [], "id_slot": 0,
                "stop": True, "model": opts.model_name, "tokens_predicted": len(gen.texts),
                "tokens_evaluated": gen.n_prompt,
                "generation_settings": {"n_predict": body.get("n_predict", -1),
                                        "temperature": body.get("temperature", 0.8),
                                        "stream": False},
                "prompt": "<s> " + prompt_text, "has_new_line": False, "truncated": False,
                "stop_type": "limit" if gen.finish_reason == "length" else "eos",
                "stopping_word": "", "tokens_cached": gen.n_prompt + len(gen.texts),
                "timings": gen.timings(),
            })
            return
        events = [[result(text, False)] for text in gen.texts]
        final = [{**result("", True), "model": opts.model_name,
                  "stop_type": "limit" if gen.finish_reason == "length" else "eos",
                  "timings": None}]
        # The native endpoint ends its stream without "[DONE]".
        self._stream(gen, events, final, done=False)

    def _embeddings(self, body: dict[str, Any]) -> None:
        opts = self.server.opts
        if not opts.embedding:
            self._send_json(501, _error_body(
                501, "This server does not support embeddings. Start it with `--embeddings`"))
            return
        if opts.pooling == "none":
            self._send_json(400, _error_body(
                400, "Pooling type 'none' is not OAI compatible. Please use a different "
                     "pooling type"))
            return
        raw = body.get("input", body.get("content"))
        items: list[Any] = raw if isinstance(raw, list) else [raw]
        inputs: list[str] = [x for x in items if isinstance(x, str)]
        if not inputs or len(inputs) != len(items):
            self._send_json(400, _error_body(400, "\"input\" must be a string or a list of "
                                                  "strings"))
            return
        n_tokens = sum(_count_tokens(x) + 1 for x in inputs)  # +1 for BOS
        self._send_json(200, {
            "model": opts.model_name, "object": "list",
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            "data": [{"embedding": _embedding(x), "index": i, "object": "embedding"}
                     for i, x in enumerate(inputs)],
        })

    # -- static info ------------------------------------------------------------------

    def _models(self) -> dict[str, Any]:
        opts = self.server.opts
        name = opts.model_name
        return {
            "models": [{
                "name": name, "model": name, "modified_at": "", "size": "", "digest": "",
                "type": "model", "description": "", "tags": [""],
                "capabilities": ["completion"], "parameters": "",
                "details": {"parent_model": "", "format": "gguf", "family": "",
                            "families": [""], "parameter_size": "",
                            "quantization_level": ""},
            }],
            "object": "list",
            "data": [{
                "id": name, "aliases": [name], "tags": [], "object": "model",
                "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
                "created": int(time.time()), "owned_by": "llamacpp",
                "meta": {"vocab_type": 1, "n_vocab": 300, "n_ctx": opts.n_ctx,
                         "n_ctx_train": opts.n_ctx, "n_embd": N_EMBD, "n_params": 120640,
                         "size": 482560, "ftype": "all F32"},
            }],
        }

    def _props(self) -> dict[str, Any]:
        opts = self.server.opts
        return {
            "default_generation_settings": {
                "params": {"seed": 4294967295, "temperature": 0.8, "top_k": 40,
                           "top_p": 0.95, "min_p": 0.05, "max_tokens": -1, "n_predict": -1,
                           "stream": False},
                "n_ctx": opts.n_ctx,
            },
            "total_slots": opts.parallel,
            "model_alias": opts.model_name,
            "model_ftype": "all F32",
            "model_path": opts.model,
            "modalities": {"vision": False, "video": False, "audio": False},
            "media_marker": "<__media_fake__>",
            "endpoint_slots": True,
            "endpoint_props": False,
            "endpoint_metrics": False,
            "ui": True,
            "ui_settings": {},
            "chat_template": _CHAT_TEMPLATE,
            "chat_template_caps": {
                "supports_object_arguments": False, "supports_parallel_tool_calls": False,
                "supports_preserve_reasoning": False, "supports_reasoning_effort": False,
                "supports_string_content": True, "supports_system_role": True,
                "supports_tool_calls": False, "supports_tools": False,
                "supports_typed_content": False,
            },
            "bos_token": "<s>",
            "eos_token": "</s>",
            "build_info": BUILD_INFO,
            "is_sleeping": False,
            "cors_proxy_enabled": False,
        }


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"data: " + json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
        for e in events
    )


# ---------------------------------------------------------------------------------------
# process lifecycle


def _spawn_grandchild() -> int:
    # Same process group as us (no new session), so only a group kill reaches it.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(1000)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return child.pid


def _record(path: str, argv: list[str], grandchild: int | None) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "argv": argv, "grandchild_pid": grandchild}, f)
    os.replace(tmp, path)  # readers polling for the file never see half of it


def _load_failure(log: Log, model: str) -> None:
    log("E", f"gguf_init_from_file: failed to open GGUF file '{model}' (No such file or directory)")
    log("E", f"llama_model_load: error loading model: llama_model_loader: failed to load model "
             f"from {model}")
    log("E", "llama_model_load_from_file_impl: failed to load model")
    log("E", f"cmn  common_init_: failed to load model '{model}'")
    log("E", f"srv    load_model: failed to load model, '{model}'")
    log("I", "srv    operator(): operator(): cleaning up before exit...")
    log("E", "srv  llama_server: exiting due to model loading error")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts = parse_args(args)
    log = Log()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    if opts.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_signal)

    grandchild = _spawn_grandchild() if opts.fork_grandchild else None
    if opts.record_argv:
        _record(opts.record_argv, args, grandchild)

    log("I", "srv  llama_server: initializing ...")
    log("I", "cmn  common_param: common_params_print_info: verbosity = 3 "
             "(adjust with the `-lv N` CLI arg)")
    if not opts.api_keys:
        log("W", "srv  llama_server: security: no API key is set and CORS allows all origins "
                 "(see https://github.com/ggml-org/llama.cpp/pull/25655)")
    log("I", f"srv    load_model: loading model '{opts.model}'")
    if opts.exit_on_start is not None:
        _load_failure(log, opts.model)
        return opts.exit_on_start
    if opts.segv_unless_no_repack and not opts.no_repack:
        log("I", "cmn          init: llama threadpool init, n_threads = 2")
        os.kill(os.getpid(), signal.SIGSEGV)

    try:
        server = FakeServer(opts, log)
    except OSError as exc:
        log("E", f"srv  llama_server: couldn't bind HTTP server socket, hostname: {opts.host}, "
                 f"port: {opts.port} ({exc.strerror})")
        log("E", "srv  llama_server: exiting due to HTTP server error")
        return 1
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     name="http", daemon=True).start()

    if opts.never_healthy:
        stop.wait()  # a stalled load: silent, never ready
    elif opts.never_healthy_logging:
        t0 = time.monotonic()
        while not stop.wait(LOG_INTERVAL_S):
            log("I", f"srv    load_model: still loading, elapsed = {time.monotonic() - t0:.1f} s")
    else:
        deadline = time.monotonic() + opts.slow_health
        progress = opts.slow_health > LOADING_S
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if stop.wait(min(left, LOG_INTERVAL_S)) or not progress:
                continue
            done = 1 - max(deadline - time.monotonic(), 0) / opts.slow_health
            log("I", f"srv    load_model: loading tensors ... {done * 100:3.0f}%")
        if not stop.is_set():
            log("I", f"cmn          init: llama threadpool init, n_threads = {opts.threads}")
            log("I", f"srv    load_model: initializing, n_slots = {opts.parallel}, "
                     f"n_ctx_slot = {opts.n_ctx}, kv_unified = 'true'")
            log("I", "srv  llama_server: model loaded")
            log("I", f"srv  llama_server: listening on http://{opts.host}:{port}")
            server.ready.set()
            stop.wait()

    log("I", "srv    operator(): operator(): cleaning up before exit...")
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Skip interpreter teardown: daemon handler threads may be mid-write, and a real
    # server's exit does not wait for open streams either.
    os._exit(code)
