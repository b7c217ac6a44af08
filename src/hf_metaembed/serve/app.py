"""The HTTP API of `hf-metaembed serve` (FastAPI): OpenAI-format embeddings, the library's own `/embed` and
`/predict`, health, readiness and Prometheus metrics.

Routes:
    POST /v1/embeddings  OpenAI format: `input` (string or list of strings), `model`, `encoding_format` (`float`
                         or `base64` of little-endian float32), `dimensions` (the first N values)
    POST /embed          `inputs` (strings, or `{"ligand": [...], "receptor": [...]}` for pair models),
                         `unit_embeddings`, `fusion_weights` (booleans): per input its embedding and, when asked,
                         per segment its unit embeddings and fusion weights
    POST /predict        `inputs`, `top_k` (default 1; null for every label): labels and scores as
                         `pipeline("text-classification")` gives them, for models with a head
    GET  /health         the process is up (no API key needed)
    GET  /ready          the model is loaded (503 while it loads)
    GET  /metrics        Prometheus text format

Every error is JSON, `{"error": {"message", "type", "param", "code"}}` as the OpenAI API writes it, with a 4xx status
for a bad request (the message names the problem and the fix), 401 for a missing or wrong API key, 503 with
`Retry-After` while the model loads or when the queue is full.
"""

import asyncio
import base64
import hmac
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import DynamicBatcher, QueueFull
from .engine import Engine, InputRejected, Job
from .metrics import ServerMetrics
from .settings import ServeSettings

ROUTES = ("/v1/embeddings", "/embed", "/predict", "/health", "/ready", "/metrics")
OPEN_ROUTES = ("/health",)
ACCESS_LOGGER = "hf_metaembed.serve.access"
logger = logging.getLogger("hf_metaembed.serve")


class ApiError(Exception):
    """An error answered as JSON with `status` (and `headers`, e.g. Retry-After)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error", headers=None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = headers or {}


def _error_response(status: int, message: str, param=None, kind="invalid_request_error", headers=None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


class ServerState:
    """What one worker holds: the settings, the engine (once loaded), the batcher and the metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.engine: Engine | None = None
        self.batcher: DynamicBatcher | None = None
        self.load_error: str | None = None
        self._loading: asyncio.Task | None = None

    async def load(self) -> None:
        """Load the model in a thread (the process answers /health and /ready meanwhile), then start batching."""
        try:
            if self.settings.threads:
                import torch

                torch.set_num_threads(self.settings.threads)
            engine = await asyncio.to_thread(Engine, self.settings)
        except Exception as error:
            self.load_error = " ".join(str(error).split()) or type(error).__name__
            logger.error("hf-metaembed serve: cannot load %s: %s", self.settings.model, self.load_error)
            return
        self.batcher = DynamicBatcher(
            engine.run_batch,
            self.settings.max_tokens,
            len(engine.processor.tokenizers),
            self.settings.max_batch_size,
            self.settings.max_wait_ms / 1000,
            self.settings.max_queue,
            on_batch=self.metrics.observe_batch,
        )
        self.batcher.start()
        self.engine = engine
        print(f"hf-metaembed serve: model {self.settings.model_name!r} ready (dim {engine.dim})", file=sys.stderr)

    def start_loading(self) -> None:
        self._loading = asyncio.get_running_loop().create_task(self.load())

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.batcher is not None:
            await self.batcher.stop()

    def ready_engine(self) -> Engine:
        if self.engine is None:
            if self.load_error:
                raise ApiError(503, f"the model could not be loaded: {self.load_error}", kind="server_error")
            raise ApiError(
                503, "the model is still loading; retry shortly", kind="server_error", headers={"Retry-After": "1"}
            )
        return self.engine


# ---------------------------------------------------------------------------------------------- reading requests


async def read_json(request: Request, limit: int) -> dict:
    """The request's JSON object, after checking its size against `limit` bytes."""
    declared = request.headers.get("content-length")
    too_big = f"the request body is over {limit} bytes (--max-request-bytes); send fewer or shorter inputs"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, too_big)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, too_big)
    if not body:
        raise ApiError(400, 'the request has no body; send a JSON object such as {"input": "..."}')
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"malformed JSON ({error}); send a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body is a JSON {type(data).__name__}; send a JSON object")
    return data


def input_list(data: Mapping, key: str, limit: int) -> list:
    """`data[key]` as a non-empty list of inputs (one string is a list of one), at most `limit` of them."""
    if key not in data or data[key] is None:
        raise ApiError(400, f"'{key}' is required: a string or a list of strings", param=key)
    value = data[key]
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list):
        raise ApiError(400, f"'{key}' is a {type(value).__name__}; send a string or a list of strings", param=key)
    if not items:
        raise ApiError(400, f"'{key}' is an empty list; send at least one input", param=key)
    if all(isinstance(item, int) and not isinstance(item, bool) for item in items) or any(
        isinstance(item, list) for item in items
    ):
        raise ApiError(400, f"'{key}' holds token ids; this server reads text: send strings", param=key)
    if len(items) > limit:
        raise ApiError(
            413, f"'{key}' holds {len(items)} inputs; at most {limit} per request (--max-inputs)", param=key
        )
    return items


def flag(data: Mapping, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be true or false, got {json.dumps(value)}", param=key)
    return value


# ---------------------------------------------------------------------------------------------- the app


def create_app(settings: ServeSettings) -> FastAPI:
    """The FastAPI app serving `settings.model` (loaded when the app starts; `/ready` says when it is)."""
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start_loading()
        yield
        await state.stop()

    app = FastAPI(title="hf-metaembed serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    access = logging.getLogger(ACCESS_LOGGER)
    if settings.log_requests and not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return _error_response(error.status, error.message, error.param, error.kind, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = f"no route {request.method} {request.url.path}; routes: {', '.join(ROUTES)}"
        if error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error_response(error.status_code, message)

    @app.middleware("http")
    async def observe(request: Request, call_next) -> Response:
        started = time.perf_counter()
        path = request.url.path
        route = path if path in ROUTES else "other"
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        if settings.api_key and path not in OPEN_ROUTES and not _authorised(request, settings.api_key):
            response = _error_response(
                401,
                "missing or wrong API key: send 'Authorization: Bearer KEY' (or 'X-API-Key: KEY')",
                kind="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            try:
                response = await call_next(request)
            except Exception as error:  # a bug or a model failure: answered 500, the server goes on
                logger.exception("hf-metaembed serve: %s %s failed", request.method, path)
                response = _error_response(
                    500, f"internal error: {type(error).__name__}: {error}", kind="server_error"
                )
        elapsed = time.perf_counter() - started
        response.headers["X-Request-Id"] = request_id
        state.metrics.requests.labels(route, str(response.status_code)).inc()
        state.metrics.latency.labels(route).observe(elapsed)
        if settings.log_requests:
            access.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "request_id": request_id,
                        "client": request.client.host if request.client else None,
                        "method": request.method,
                        "path": path,
                        "status": response.status_code,
                        "duration_ms": round(elapsed * 1000, 2),
                        "inputs": getattr(request.state, "inputs", None),
                    }
                )
            )
        return response

    async def compute(request: Request, inputs: list, **options) -> tuple[Engine, list, list]:
        engine = state.ready_engine()
        request.state.inputs = len(inputs)
        try:
            rows = await asyncio.to_thread(engine.encode, inputs)
        except InputRejected as error:
            raise ApiError(400, str(error), param=error.param) from None
        try:
            results = await state.batcher.submit([Job(row, **options) for row in rows], rows)
        except QueueFull as error:
            state.metrics.rejected.inc()
            raise ApiError(
                503, str(error), kind="server_error", headers={"Retry-After": str(error.retry_after)}
            ) from None
        return engine, rows, results

    def usage(engine: Engine, rows: list) -> dict:
        tokens = sum(engine.token_count(row) for row in rows)
        return {"prompt_tokens": tokens, "total_tokens": tokens}

    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request) -> Response:
        data = await read_json(request, settings.max_request_bytes)
        engine = state.ready_engine()
        if engine.pair:
            raise ApiError(
                400,
                f"this model pairs complexes (architecture {engine.architecture!r}); POST /embed with "
                '{"inputs": [{"ligand": [chain, ...], "receptor": [chain, ...]}]}',
                param="input",
            )
        inputs = input_list(data, "input", settings.max_inputs)
        model = data.get("model")
        if model not in (None, settings.model_name, settings.model):
            raise ApiError(
                404, f"model {model!r} is not served here; this server serves {settings.model_name!r}", param="model"
            )
        encoding = data.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, f"encoding_format {encoding!r} is not one of: float, base64", param="encoding_format")
        dimensions = data.get("dimensions")
        if dimensions is not None and (
            not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= engine.dim
        ):
            raise ApiError(
                400,
                f"dimensions must be an integer from 1 to {engine.dim} (this model's size), got "
                f"{json.dumps(dimensions)}",
                param="dimensions",
            )
        engine, rows, results = await compute(request, inputs)
        items = []
        for index, result in enumerate(results):
            vector = result["embedding"].numpy()[: dimensions or engine.dim]
            if encoding == "base64":
                embedding: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                embedding = vector.tolist()
            items.append({"object": "embedding", "index": index, "embedding": embedding})
        return JSONResponse(
            {"object": "list", "data": items, "model": settings.model_name, "usage": usage(engine, rows)}
        )

    @app.post("/embed")
    async def embed(request: Request) -> Response:
        data = await read_json(request, settings.max_request_bytes)
        inputs = input_list(data, "inputs", settings.max_inputs)
        options = {"unit_embeddings": flag(data, "unit_embeddings"), "fusion_weights": flag(data, "fusion_weights")}
        engine, rows, results = await compute(request, inputs, **options)
        items = []
        for index, result in enumerate(results):
            item: dict[str, Any] = {"index": index, "embedding": result["embedding"].tolist()}
            segments = [
                {key: value.tolist() if hasattr(value, "tolist") else value for key, value in segment.items()}
                for segment in result.get("segments", [])
            ]
            if segments and not engine.pair:
                item.update({key: value for key, value in segments[0].items() if key != "side"})
            elif segments:
                item["segments"] = segments
            items.append(item)
        return JSONResponse({"model": settings.model_name, "data": items, "usage": usage(engine, rows)})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        data = await read_json(request, settings.max_request_bytes)
        engine = state.ready_engine()
        if not engine.has_head:
            raise ApiError(
                400,
                f"this model ({type(engine.model).__name__}) has no sequence head, so it has nothing to predict: use "
                "POST /embed or /v1/embeddings",
            )
        inputs = input_list(data, "inputs", settings.max_inputs)
        top_k = data.get("top_k", 1)
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ApiError(400, f"top_k must be a positive integer or null (every label), got {top_k!r}", "top_k")
        engine, rows, results = await compute(request, inputs, logits=True)
        items = [
            {"index": index, "predictions": engine.predictions(result["logits"], top_k)}
            for index, result in enumerate(results)
        ]
        return JSONResponse({"model": settings.model_name, "data": items, "usage": usage(engine, rows)})

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        if state.engine is None:
            status = "failed" if state.load_error else "loading"
            body = {"status": status, "model": settings.model_name, "error": state.load_error}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        engine = state.engine
        return JSONResponse(
            {
                "status": "ready",
                "model": settings.model_name,
                "dim": engine.dim,
                "architecture": engine.architecture,
                "predict": engine.has_head,
                "device": str(engine.device),
                "dtype": settings.dtype,
                "pid": os.getpid(),  # which worker answered (--workers N)
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        state.metrics.queue_depth.set(state.batcher.depth if state.batcher is not None else 0)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _authorised(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode(), key.encode())


def app_from_environment() -> FastAPI:
    """The app for `uvicorn --factory` (each worker process of `hf-metaembed serve --workers N` calls it)."""
    return create_app(ServeSettings.from_environment())


__all__ = ["ApiError", "app_from_environment", "create_app"]
