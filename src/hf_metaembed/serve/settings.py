"""What one `hf-metaembed serve` process is told: the model, the limits, the batching, the device. Plain data, no
torch or FastAPI: the CLI builds it and hands it to every worker process as JSON in an environment variable."""

import dataclasses
import json
import os
from dataclasses import dataclass

SETTINGS_ENV = "HF_METAEMBED_SERVE_SETTINGS"
API_KEY_ENV = "HF_METAEMBED_API_KEY"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ServeSettings:
    """Settings of a server (each `hf-metaembed serve` option, same name).

    Args:
        model: folder of a saved MetaEmbed model and its processor.
        model_name: the name answered in `model` fields (default: the folder's name).
        device, dtype: where and in what precision the model runs (`auto`: cuda when available).
        max_tokens: padded tokens per backbone pass; requests are gathered into batches within it.
        max_batch_size: sequences per model batch at most.
        max_wait_ms: how long the first waiting sequence waits for others to share its batch.
        max_queue: sequences waiting or running at most; past it a request is answered 503 with Retry-After.
        max_input_length: characters per input sequence (per chain for complexes) at most.
        max_request_bytes: request body size at most.
        max_inputs: inputs per request at most.
        truncation: cut inputs longer than a backbone accepts instead of answering 400.
        api_key: required on every route but /health, as `Authorization: Bearer KEY` or `X-API-Key: KEY`.
        threads: torch CPU threads (default: torch's choice).
        log_requests: write one JSON access-log line per request to stderr.
    """

    model: str
    model_name: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    max_tokens: int | list[int] = 2048
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_input_length: int = 4096
    max_request_bytes: int = 1_000_000
    max_inputs: int = 256
    truncation: bool = False
    api_key: str | None = None
    threads: int | None = None
    log_requests: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        for name in ("max_batch_size", "max_queue", "max_input_length", "max_request_bytes", "max_inputs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms!r}")
        if self.model_name is None:
            self.model_name = os.path.basename(os.path.normpath(self.model))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        return cls(**json.loads(text))

    @classmethod
    def from_environment(cls) -> "ServeSettings":
        """The settings the CLI put in `HF_METAEMBED_SERVE_SETTINGS` (each uvicorn worker reads them)."""
        text = os.environ.get(SETTINGS_ENV)
        if not text:
            raise RuntimeError(
                f"{SETTINGS_ENV} is not set: start the server with `hf-metaembed serve --model FOLDER`, or build the "
                "app with hf_metaembed.serve.create_app(ServeSettings(model=FOLDER))"
            )
        settings = cls.from_json(text)
        if settings.api_key is None:
            settings.api_key = os.environ.get(API_KEY_ENV) or None
        return settings


__all__ = ["API_KEY_ENV", "DTYPES", "SETTINGS_ENV", "ServeSettings"]
