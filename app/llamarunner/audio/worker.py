"""The speech-to-text worker program: OpenAI's audio API over one Whisper model.

The runner manager spawns it as a child, as it does llama-server:

    python -m llamarunner.audio.worker --host 127.0.0.1 --port P --model DIR --alias NAME

It binds its port first and says `listening on http://HOST:PORT`, then loads the model
(a CTranslate2 Whisper folder) with faster-whisper in a thread; GET /health answers 503
until the model is ready. Every other route wants `Authorization: Bearer <key>`, the key
being the one the parent put in LLAMARUNNER_WORKER_KEY. faster-whisper is imported
lazily, so this module imports without the optional `audio` dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import importlib
import importlib.util
import io
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import BodyPartReader, web

from . import formats
from .formats import Segment, Task, Transcription, Word
from .languages import language_name, normalise_language
from .launch import WORKER_KEY_ENV

# OpenAI's upload limit is 25 MB of audio; the rest of the form gets 1 MB on top.
DEFAULT_MAX_BYTES: Final = 26 * 1024 * 1024

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_ENGINE: Final = 3

ENGINE_MISSING: Final = 'faster-whisper is not installed: pip install "llamarunner[audio]"'

# How long the program waits, when stopping, for a model load or a transcription in a
# thread to let go of the engine before it exits without the interpreter's cleanup.
_ENGINE_RELEASE_WAIT: Final = 5.0
_READ_CHUNK: Final = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

# What a request cost, for its log line: (seconds of audio, seconds of processing).
_COST: Final = web.RequestKey("cost", tuple[float, float])


@dataclass(frozen=True)
class WorkerOptions:
    host: str
    port: int
    model: Path
    alias: str
    threads: int = 0
    device: str = "auto"
    compute_type: str = "default"
    max_bytes: int = DEFAULT_MAX_BYTES


class RequestError(Exception):
    """A request the worker refuses, with OpenAI's error fields; the worker carries on."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type

    def response(self) -> web.Response:
        return _json(formats.error_body(self.message, param=self.param, code=self.code,
                                        error_type=self.error_type), status=self.status)


class ModelLoadError(Exception):
    """The model folder could not be loaded; the message says what to do."""


class EngineMissingError(Exception):
    """faster-whisper (or a library under it) cannot be imported."""


@dataclass(frozen=True)
class AudioRequest:
    """One validated transcription or translation request."""

    task: Task
    audio: bytes
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    response_format: str = "json"
    words: bool = False
    stream: bool = False


# ---------------------------------------------------------------------------------------
# Command line and engine settings


def parse_args(argv: list[str] | None = None) -> WorkerOptions:
    parser = argparse.ArgumentParser(
        prog="python -m llamarunner.audio.worker",
        description="Serve OpenAI's audio API (transcriptions, translations) with one "
                    f"Whisper model. The API key is read from ${WORKER_KEY_ENV}.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--model", type=Path, required=True,
                        help="a CTranslate2 Whisper model folder (model.bin, tokenizer.json)")
    parser.add_argument("--alias", required=True, help="the model name clients see")
    parser.add_argument("--threads", type=_non_negative, default=0,
                        help="CPU threads for the engine; 0 lets it decide")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--compute-type", default="default",
                        help="int8, float16, int8_float16, float32 ...; 'default' is int8 "
                             "on CPU and float16 on CUDA")
    parser.add_argument("--max-bytes", type=_positive, default=DEFAULT_MAX_BYTES,
                        help="the largest request body accepted")
    args = parser.parse_args(argv)
    return WorkerOptions(host=args.host, port=args.port, model=args.model, alias=args.alias,
                         threads=args.threads, device=args.device,
                         compute_type=args.compute_type, max_bytes=args.max_bytes)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return value


def resolve_device(requested: str, cuda_devices: int) -> str:
    if requested == "auto":
        return "cuda" if cuda_devices > 0 else "cpu"
    return requested


def resolve_compute_type(requested: str, device: str) -> str:
    # CTranslate2's own "default" keeps the weights' saved type, float32 for most
    # converted Whisper models: int8 is far faster on CPUs, float16 the norm on GPUs.
    if requested == "default":
        return "float16" if device == "cuda" else "int8"
    return requested


def load_model(options: WorkerOptions) -> tuple[Any, str, str]:
    """The faster-whisper model, and the device and compute type it runs with."""
    try:
        faster_whisper = importlib.import_module("faster_whisper")
        ctranslate2 = importlib.import_module("ctranslate2")
    except ImportError as exc:
        raise EngineMissingError(f"{ENGINE_MISSING} ({exc})") from exc
    folder = options.model
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    # Checked here because faster-whisper fetches a missing tokenizer from the Hugging
    # Face Hub, and a child process must never go online on its own.
    for name in ("model.bin", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ModelLoadError(
                f"{folder} is not a CTranslate2 Whisper model: it has no {name}; use a "
                "faster-whisper model folder (config.json, model.bin, tokenizer.json, "
                "vocabulary.txt)")
    device = resolve_device(options.device, int(ctranslate2.get_cuda_device_count()))
    compute_type = resolve_compute_type(options.compute_type, device)
    try:
        model = faster_whisper.WhisperModel(
            str(folder), device=device, compute_type=compute_type,
            cpu_threads=options.threads, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"could not load the Whisper model in {folder}: {exc}") from exc
    return model, device, compute_type


# ---------------------------------------------------------------------------------------
# Requests


def build_request(task: Task, fields: dict[str, list[str]], audio: bytes | None) -> AudioRequest:
    """Validate OpenAI's form fields; raises RequestError naming the field at fault."""
    if audio is None:
        raise RequestError(400, "missing required field 'file': send the audio as the "
                                "multipart/form-data part named 'file'", param="file")
    response_format = _field(fields, "response_format") or "json"
    if response_format not in formats.RESPONSE_FORMATS:
        raise RequestError(
            400, f"response_format {response_format!r} is not supported; use one of "
                 + ", ".join(formats.RESPONSE_FORMATS), param="response_format")
    stream = _boolean(fields, "stream")
    if stream and response_format not in formats.STREAM_FORMATS:
        raise RequestError(
            400, f"streaming needs response_format json or text, not {response_format!r}",
            param="stream")
    granularities = fields.get("timestamp_granularities[]", []) + fields.get(
        "timestamp_granularities", [])
    for value in granularities:
        if value not in ("segment", "word"):
            raise RequestError(400, f"timestamp_granularities has {value!r}; use 'segment' "
                                    "or 'word'", param="timestamp_granularities")
    language = None
    if task == "transcribe":
        asked = _field(fields, "language")
        if asked:
            language = normalise_language(asked)
            if language is None:
                raise RequestError(
                    400, f"language {asked!r} is not one Whisper knows; give an ISO-639-1 "
                         "code such as 'en' or a name such as 'english'",
                    param="language", code="unsupported_language")
    return AudioRequest(
        task=task, audio=audio, language=language, prompt=_field(fields, "prompt") or None,
        temperature=_temperature(fields), response_format=response_format,
        # Word timing costs extra decoding and only verbose_json can carry it.
        words="word" in granularities and response_format == "verbose_json",
        stream=stream,
    )


def _field(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[-1].strip() if values else ""


def _boolean(fields: dict[str, list[str]], name: str) -> bool:
    value = _field(fields, name).lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise RequestError(400, f"{name} must be true or false, not {value!r}", param=name)


def _temperature(fields: dict[str, list[str]]) -> float | None:
    """None (the engine's fallback from 0 up to 1) for 0 or no value; else one temperature."""
    text = _field(fields, "temperature")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise RequestError(400, f"temperature must be a number from 0 to 1, not {text!r}",
                           param="temperature")
    return value or None


async def read_form(request: web.Request, max_bytes: int
                    ) -> tuple[dict[str, list[str]], bytes | None]:
    """The text fields and the `file` part of a multipart/form-data body, in memory."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    if request.content_type != "multipart/form-data":
        raise RequestError(400, "expected a multipart/form-data body with the audio in a "
                                f"part named 'file', not {request.content_type!r}")
    fields: dict[str, list[str]] = {}
    audio: bytes | None = None
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise RequestError(400, "nested multipart bodies are not supported")
            # Counted here: client_max_size only guards request.read() and post().
            body = io.BytesIO()
            while chunk := await part.read_chunk(_READ_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(max_bytes)
                body.write(chunk)
            if part.name == "file":
                audio = body.getvalue()
            elif part.name:
                fields.setdefault(part.name, []).append(
                    body.getvalue().decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise RequestError(400, f"malformed multipart/form-data body: {exc}") from exc
    return fields, audio


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, f"the request is larger than this worker's limit of "
                             f"{max_bytes} bytes; send a shorter or more compressed file",
                        param="file", code="file_too_large")


# ---------------------------------------------------------------------------------------
# The engine


@dataclass(frozen=True)
class _Ready:
    duration: float


@dataclass(frozen=True)
class _Decoded:
    segment: Segment


@dataclass(frozen=True)
class _Finished:
    result: Transcription
    took: float


@dataclass(frozen=True)
class _Failed:
    error: BaseException


StreamItem = _Ready | _Decoded | _Finished | _Failed


class Engine:
    """The loaded model; runs one job at a time in the calling (worker) thread."""

    def __init__(self, model: Any, alias: str, lock: threading.Lock) -> None:
        self.model = model
        self.alias = alias
        self.multilingual = bool(model.model.is_multilingual)
        # Held for a whole job, so a job whose client left keeps the engine until it
        # notices its stop flag, and the next job cannot run beside it.
        self._lock = lock

    def transcribe(self, req: AudioRequest, stop: threading.Event,
                   emit: Callable[[StreamItem], None] | None = None
                   ) -> tuple[Transcription, float]:
        """Blocking: decode the audio and run Whisper over it; returns the result and the
        seconds it took. `emit` hears each segment as soon as it is decoded."""
        with self._lock:
            started = time.monotonic()
            samples = self._decode(req.audio)
            options: dict[str, Any] = {
                "language": req.language, "task": req.task, "initial_prompt": req.prompt,
                "word_timestamps": req.words,
            }
            if req.temperature is not None:
                options["temperature"] = req.temperature
            # The returned generator decodes lazily: the work happens while iterating.
            raw_segments, info = self.model.transcribe(samples, **options)
            duration = float(info.duration)
            if emit is not None:
                emit(_Ready(duration))
            segments: list[Segment] = []
            words: list[Word] | None = [] if req.words else None
            for index, raw in enumerate(raw_segments):
                segment = _segment(raw, index)
                segments.append(segment)
                if words is not None:
                    words.extend(Word(str(w.word), float(w.start), float(w.end))
                                 for w in raw.words or ())
                if emit is not None:
                    emit(_Decoded(segment))
                if stop.is_set():  # before pulling (decoding) the next segment
                    break
            result = Transcription(
                text=formats.join_text(s.text for s in segments), language=str(info.language),
                duration=duration, task=req.task, segments=tuple(segments),
                words=None if words is None else tuple(words))
            return result, time.monotonic() - started

    def _decode(self, data: bytes) -> Any:
        if not data:
            raise _bad_audio("the file is empty")
        decode_audio = importlib.import_module("faster_whisper").decode_audio
        rate = self.model.feature_extractor.sampling_rate
        try:
            samples = decode_audio(io.BytesIO(data), sampling_rate=rate)
        except IndexError as exc:  # PyAV found a container but no audio stream in it
            raise _bad_audio("the file has no audio stream") from exc
        # Anything else that fails here fails on the client's bytes too: PyAV raises
        # FFmpegError (a ValueError) for data it cannot read.
        except Exception as exc:
            raise _bad_audio(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                             ) from exc
        if len(samples) == 0:
            raise _bad_audio("the file holds no audio samples")
        return samples


def _bad_audio(reason: str) -> RequestError:
    return RequestError(400, f"could not decode audio: {reason}", param="file",
                        code="invalid_audio")


def _segment(raw: Any, index: int) -> Segment:
    # faster-whisper numbers segments from 1 and gives numpy floats; OpenAI counts from 0.
    return Segment(
        id=index, seek=int(raw.seek), start=float(raw.start), end=float(raw.end),
        text=str(raw.text), tokens=tuple(int(t) for t in raw.tokens),
        temperature=float(raw.temperature or 0.0), avg_logprob=float(raw.avg_logprob),
        compression_ratio=float(raw.compression_ratio),
        no_speech_prob=float(raw.no_speech_prob),
    )


# ---------------------------------------------------------------------------------------
# The HTTP server


@dataclass
class WorkerState:
    options: WorkerOptions
    key: bytes
    engine_lock: threading.Lock
    engine: Engine | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    # Requests queue here in arrival order; the engine lock alone would let any waiting
    # thread jump the queue.
    queue: asyncio.Lock = field(default_factory=asyncio.Lock)


_STATE: Final = web.AppKey("state", WorkerState)


def build_app(state: WorkerState) -> web.Application:
    app = web.Application(client_max_size=state.options.max_bytes,
                          middlewares=[_log_requests, _openai_errors, _require_key])
    app[_STATE] = state
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/audio/transcriptions", _transcriptions)
    app.router.add_post("/v1/audio/translations", _translations)
    return app


@web.middleware
async def _log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away; nginx's number for it
        raise
    else:
        status = response.status
        return response
    finally:
        # The supervisor polls /health many times a second while the model loads.
        if request.path != "/health":
            _log_line(request, status)


def _log_line(request: web.Request, status: int) -> None:
    line = f"{request.method} {request.path} {status}"
    cost = request.get(_COST)
    if cost is not None:
        audio, took = cost
        rtf = took / audio if audio > 0 else 0.0
        line += f" audio {audio:.1f} s, processed in {took:.2f} s, real-time factor {rtf:.2f}"
    _say(line)


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 404:
            message = (f"no route {request.method} {request.path}; this worker serves "
                       "/v1/audio/transcriptions, /v1/audio/translations and /v1/models")
        code = "file_too_large" if exc.status == 413 else None
        return _json(formats.error_body(message, code=code), status=exc.status)
    except Exception as exc:
        # A bug, not the client's fault: say so in OpenAI's shape and keep serving.
        traceback.print_exc(file=sys.stderr)
        return _json(formats.error_body(f"internal error: {exc}", code="internal_error",
                                        error_type="server_error"), status=500)


@web.middleware
async def _require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/health" and request.method in ("GET", "HEAD"):
        return await handler(request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(_raw(given.strip()),
                                                             request.app[_STATE].key):
        raise RequestError(401, "missing or wrong API key: send the worker's key as "
                                "'Authorization: Bearer <key>'", code="invalid_api_key")
    return await handler(request)


def _raw(header: str) -> bytes:
    # aiohttp keeps bytes that are not UTF-8 as surrogates; a plain encode() would raise.
    return header.encode("utf-8", "surrogateescape")


async def _health(request: web.Request) -> web.Response:
    if request.app[_STATE].engine is None:
        return _json({"status": "loading"}, status=503)
    return _json({"status": "ok"})


async def _models(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return _json({"object": "list", "data": [{
        "id": state.options.alias, "object": "model", "created": state.created,
        "owned_by": "llamarunner"}]})


async def _transcriptions(request: web.Request) -> web.StreamResponse:
    return await _audio(request, "transcribe")


async def _translations(request: web.Request) -> web.StreamResponse:
    return await _audio(request, "translate")


async def _audio(request: web.Request, task: Task) -> web.StreamResponse:
    state = request.app[_STATE]
    engine = state.engine
    if engine is None:
        raise RequestError(503, f"model {state.options.alias} is still loading; retry "
                                "shortly", code="model_loading", error_type="server_error")
    fields, audio = await read_form(request, state.options.max_bytes)
    req = build_request(task, fields, audio)
    _check_model_fits(engine, req)
    async with state.queue:
        if req.stream:
            return await _stream(request, engine, req)
        stop = threading.Event()
        try:
            result, took = await _in_thread(lambda: engine.transcribe(req, stop))
        except asyncio.CancelledError:
            stop.set()  # the client left: the engine stops after its current segment
            raise
        except RequestError:
            raise
        except Exception as exc:
            raise _engine_failed(exc) from exc
    request[_COST] = (result.duration, took)
    body, content_type = formats.render(result, req.response_format)
    return web.Response(body=body, headers={"Content-Type": content_type})


def _check_model_fits(engine: Engine, req: AudioRequest) -> None:
    if engine.multilingual:
        return
    if req.task == "translate":
        raise RequestError(
            400, f"model {engine.alias} is English-only and cannot translate; use a "
                 "multilingual Whisper model", param="model", code="model_not_multilingual")
    if req.language not in (None, "en"):
        raise RequestError(
            400, f"model {engine.alias} only understands English and cannot transcribe "
                 f"{language_name(req.language or '')}; leave out 'language' or use a "
                 "multilingual Whisper model", param="language", code="unsupported_language")


async def _stream(request: web.Request, engine: Engine, req: AudioRequest
                  ) -> web.StreamResponse:
    """Server-sent events, one delta per segment as the engine decodes it."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[StreamItem] = asyncio.Queue()
    stop = threading.Event()

    def emit(item: StreamItem) -> None:
        _call_soon(loop, items.put_nowait, item)

    def work() -> None:
        try:
            result, took = engine.transcribe(req, stop, emit)
        except BaseException as exc:
            emit(_Failed(exc))
        else:
            emit(_Finished(result, took))

    threading.Thread(target=work, name="whisper-stream", daemon=True).start()
    response: web.StreamResponse | None = None
    first = True
    try:
        while True:
            item = await items.get()
            if isinstance(item, _Failed):
                error = item.error
                if response is None:  # nothing sent yet: a plain error response
                    raise error if isinstance(error, RequestError) else _engine_failed(error)
                if isinstance(error, RequestError):
                    await response.write(formats.error_event(
                        error.message, code=error.code, error_type=error.error_type))
                else:
                    await response.write(formats.error_event(
                        f"transcription failed: {error}", code="transcription_failed",
                        error_type="server_error"))
                return response
            if isinstance(item, _Ready):
                response = web.StreamResponse(headers={
                    "Content-Type": formats.EVENT_STREAM_TYPE, "Cache-Control": "no-cache"})
                await response.prepare(request)
            elif isinstance(item, _Decoded) and response is not None:
                await response.write(formats.delta_event(item.segment, first=first))
                first = False
            elif isinstance(item, _Finished) and response is not None:
                request[_COST] = (item.result.duration, item.took)
                await response.write(formats.done_event(item.result))
                await response.write_eof()
                return response
    except asyncio.CancelledError:
        stop.set()  # the client left: the engine stops after its current segment
        raise
    except ConnectionResetError:
        stop.set()
        # Nothing more can reach the client; the response it had is all there is.
        return response or web.Response(status=499)


def _engine_failed(exc: BaseException) -> RequestError:
    return RequestError(500, f"transcription failed: {exc}", code="transcription_failed",
                        error_type="server_error")


def _json(payload: dict[str, Any], *, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


# ---------------------------------------------------------------------------------------
# Threads


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object],
               *args: object) -> None:
    # The loop may already be closed when a job that was told to stop finally ends.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _in_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run blocking work in a daemon thread: one stuck in the engine must never keep the
    program from exiting on SIGTERM, as the executors' joined threads would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle_result(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def settle_error(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def run() -> None:
        try:
            value = work()
        except BaseException as exc:
            _call_soon(loop, settle_error, exc)
        else:
            _call_soon(loop, settle_result, value)

    threading.Thread(target=run, name="whisper", daemon=True).start()
    return future


# ---------------------------------------------------------------------------------------
# The program


def _say(line: str) -> None:
    # A supervisor that stopped reading must not turn log lines into failed requests.
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


def _complain(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


async def serve(options: WorkerOptions, key: str, engine_lock: threading.Lock) -> int:
    """Listen, load the model, serve until SIGTERM/SIGINT; returns the exit code."""
    loop = asyncio.get_running_loop()
    state = WorkerState(options=options, key=key.encode(), engine_lock=engine_lock)
    outcome: asyncio.Future[int] = loop.create_future()

    def finish(code: int) -> None:
        if not outcome.done():
            outcome.set_result(code)

    for signum in (signal.SIGTERM, signal.SIGINT):
        # Windows' loops have no signal handlers: Ctrl+C and termination stay default.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, finish, EXIT_OK)
    runner = web.AppRunner(build_app(state), handle_signals=False, access_log=None,
                           # A client that leaves cancels its handler, which stops the job.
                           handler_cancellation=True, shutdown_timeout=1.0)
    try:
        await runner.setup()
        site = web.TCPSite(runner, options.host, options.port)
        try:
            await site.start()
        except OSError as exc:
            # llama-server's wording: the supervisor recognises a port conflict by it.
            _complain(f"couldn't bind HTTP server socket: {exc}")
            return EXIT_FAILED
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else options.port
        _say(f"listening on http://{options.host}:{port}")
        _say(f"loading model {options.model}")
        loading = _in_thread(lambda: _load(options, engine_lock))
        loading.add_done_callback(lambda done: _loaded(done, state, finish))
        return await outcome
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
        await runner.cleanup()


def _load(options: WorkerOptions, lock: threading.Lock) -> tuple[Engine, str, float]:
    with lock:
        started = time.monotonic()
        model, device, compute_type = load_model(options)
        engine = Engine(model, options.alias, lock)
        return engine, f"{device}, {compute_type}", time.monotonic() - started


def _loaded(done: asyncio.Future[tuple[Engine, str, float]], state: WorkerState,
            finish: Callable[[int], None]) -> None:
    if done.cancelled():
        return
    error = done.exception()
    if isinstance(error, EngineMissingError):
        _complain(str(error))
        finish(EXIT_NO_ENGINE)
        return
    if error is not None:
        _complain(str(error) or type(error).__name__)
        finish(EXIT_FAILED)
        return
    engine, where, took = done.result()
    state.engine = engine
    kind = "multilingual" if engine.multilingual else "English-only"
    _say(f"model loaded: {state.options.alias} ({kind}), {took:.1f} s [{where}]")


def main(argv: list[str] | None = None) -> int:
    # The supervisor reads stdout through a pipe, which Python would block-buffer.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    options = parse_args(argv)
    key = os.environ.get(WORKER_KEY_ENV, "").strip()
    if not key:
        _complain(f"{WORKER_KEY_ENV} is not set: the worker serves only clients that hold "
                  "its key, and reads the key from that environment variable")
        return EXIT_USAGE
    # A cheap look before binding; the real import happens with the model load.
    if importlib.util.find_spec("faster_whisper") is None:
        _complain(ENGINE_MISSING)
        return EXIT_NO_ENGINE
    engine_lock = threading.Lock()
    try:
        code = asyncio.run(serve(options, key, engine_lock))
    except KeyboardInterrupt:  # Ctrl+C where the loop has no signal handlers (Windows)
        code = EXIT_OK
    # Daemon threads die with the interpreter; one still inside the engine's native code
    # can crash its finalisation, so give a load or a stopped job a moment to let go...
    if not engine_lock.acquire(timeout=_ENGINE_RELEASE_WAIT):
        # ...and past that, leave without finalising anything.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
