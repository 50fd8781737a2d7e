"""The exception tree for errors a client or user can meet, each with an HTTP status."""

from __future__ import annotations


class LlamaRunnerError(Exception):
    """Base for errors that reach a client; `status` and `code` drive the API's error shape."""

    status: int = 500
    code: str = "internal_error"
    error_type: str = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFoundError(LlamaRunnerError):
    status = 404
    code = "model_not_found"
    error_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' not found")
        self.model = model


class BadRequestError(LlamaRunnerError):
    status = 400
    code = "invalid_request"
    error_type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RuntimeMissingError(LlamaRunnerError):
    """The llama-server binary a model needs cannot be found."""

    status = 503
    code = "runtime_not_found"

    def __init__(self, model: str, runtime: str, detail: str) -> None:
        super().__init__(
            f"model '{model}' needs runtime '{runtime}', which was not found ({detail}); "
            "install one with `llamarunner runtime install` or set runtimes."
            f"{runtime}.path in the config"
        )
        self.model = model
        self.runtime = runtime


class ModelFileMissingError(LlamaRunnerError):
    status = 503
    code = "model_file_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"the file for model '{model}' does not exist or cannot be read")
        self.model = model


class RunnerFailedError(LlamaRunnerError):
    """llama-server could not be started (or died while starting); carries its last lines."""

    status = 502
    code = "runner_failed"

    def __init__(
        self,
        model: str,
        reason: str,
        *,
        exit_code: int | None = None,
        tail: list[str] | None = None,
    ) -> None:
        detail = f"llama-server for model '{model}' failed: {reason}"
        if exit_code is not None:
            detail += f" (exit code {exit_code})"
        lines = tail or []
        if lines:
            detail += "; last output:\n" + "\n".join(lines)
        super().__init__(detail)
        self.model = model
        self.reason = reason
        self.exit_code = exit_code
        self.tail = lines


class UpstreamError(LlamaRunnerError):
    """llama-server answered badly or the connection to it broke."""

    status = 502
    code = "upstream_error"


class RetryLaterError(LlamaRunnerError):
    """A 429: the client should wait `retry_after` seconds (the Retry-After header)."""

    status = 429
    error_type = "rate_limit_error"
    retry_after: int = 1


class QueueFullError(RetryLaterError):
    code = "queue_full"

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        super().__init__(
            f"too many requests are waiting for a model (limit {limit}); retry shortly"
        )
        self.retry_after = retry_after


class RateLimitedError(RetryLaterError):
    """A key (or an anonymous client) used up its requests or tokens for the minute.

    `error_type` is "requests" or "tokens", as OpenAI's own 429s name the exhausted limit.
    """

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: int) -> None:
        super().__init__(message)
        self.error_type = kind
        self.retry_after = max(1, retry_after)


class ServiceStoppingError(LlamaRunnerError):
    status = 503
    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__("the server is shutting down")


class FeatureNotEnabledError(LlamaRunnerError):
    status = 400
    code = "not_supported"
    error_type = "invalid_request_error"


class ChatNotSupportedError(LlamaRunnerError):
    """The model has no chat template, so a chat request would give it foreign tokens."""

    status = 400
    code = "chat_not_supported"
    error_type = "invalid_request_error"

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(
            f"model '{model}' cannot chat: {detail}. Set \"chat_template\" for it under "
            "models in the config (a llama-server built-in name such as chatml, gemma or "
            "llama3, or the path of a Jinja file), or send plain text to /api/generate or "
            "/v1/completions"
        )
        self.model = model


class AudioEngineMissingError(LlamaRunnerError):
    """An audio model was asked for, but the speech-to-text engine is not installed."""

    status = 501
    code = "audio_engine_missing"
    error_type = "server_error"


class NotAudioModelError(LlamaRunnerError):
    """A speech-to-text route named a model that is not a speech-to-text model."""

    status = 400
    code = "model_not_audio"
    error_type = "invalid_request_error"
    param = "model"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"model '{model}' is not an audio model; name a speech-to-text (Whisper) model "
            "for /v1/audio routes")
        self.model = model


class AudioModelCannotChatError(LlamaRunnerError):
    """A text route named a speech-to-text model."""

    status = 400
    code = "model_is_audio"
    error_type = "invalid_request_error"
    param = "model"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"model '{model}' is an audio (speech-to-text) model; send audio to "
            "/v1/audio/transcriptions, or name a text model here")
        self.model = model


class ModelForbiddenError(LlamaRunnerError):
    """The request's API key may not use this model (`models` of its entry)."""

    status = 403
    code = "model_not_allowed"
    error_type = "permission_error"
    param = "model"

    def __init__(self, model: str, key_name: str) -> None:
        super().__init__(f"API key '{key_name}' may not use model '{model}'")
        self.model = model


class PeerUnavailableError(LlamaRunnerError):
    """A peer server (`peers.<name>`) could not be reached, or refused our key."""

    status = 503
    code = "peer_unavailable"

    def __init__(self, peer: str, model: str, reason: str, *, status: int = 503) -> None:
        super().__init__(f"model '{model}' is served by peer '{peer}', which is unavailable: "
                         f"{reason}")
        self.status = status
        self.peer = peer


class PeerUnsupportedError(LlamaRunnerError):
    """A request needs llama-server's own endpoints, which a peer does not offer."""

    status = 400
    code = "not_supported_by_peer"
    error_type = "invalid_request_error"

    def __init__(self, peer: str, model: str, what: str) -> None:
        super().__init__(f"model '{model}' is served by peer '{peer}', which speaks only the "
                         f"OpenAI API: {what} needs a model that runs here")


class RpcWorkerUnavailableError(RunnerFailedError):
    """An RPC worker a model is split over (`rpc`) cannot take it; nothing was started.

    `failures` are (host:port, state, reason) of each worker that failed its probe.
    """

    status = 503
    code = "rpc_worker_unavailable"

    def __init__(self, model: str, failures: list[tuple[str, str, str]]) -> None:
        workers = ", ".join(f"{address} is {state} ({reason})"
                            for address, state, reason in failures)
        busy = all(state == "busy" for _address, state, _reason in failures)
        hint = ("wait until the other llama-server lets go of it, or split the model over "
                "workers no other model uses" if busy else
                "start `llamarunner worker --host <its private address> --port <port>` "
                "there, or remove it from the model's `rpc` list")
        noun = "RPC worker" if len(failures) == 1 else "RPC workers"
        LlamaRunnerError.__init__(
            self, f"model '{model}' cannot start: {noun} {workers}. To fix: {hint}")
        self.model = model
        self.reason = ", ".join(f"RPC worker {address} is {state}"
                                for address, state, _reason in failures)
        self.exit_code = None
        self.tail = []
        self.workers = [address for address, _state, _reason in failures]
