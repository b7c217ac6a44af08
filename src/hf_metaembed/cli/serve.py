"""`hf-metaembed serve`: a saved model behind an HTTP API (see `hf_metaembed.serve`).

The parser is built without importing torch, FastAPI or uvicorn; `run_serve` imports them when the command runs.
"""

import argparse
import os

SERVE_EXTRA_HINT = "pip install 'hf_metaembed[serve]'"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hf-metaembed serve`; run with `run_serve`."""
    from ..serve.settings import API_KEY_ENV, DTYPES, ServeSettings

    defaults = ServeSettings(model=".")
    parser.add_argument(
        "--model", required=True, help="folder (or Hub id) of a saved MetaEmbed model and its processor"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, each loading the model once")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="model precision (default: float32)")
    parser.add_argument("--model-name", help="name answered in 'model' fields (default: the folder's name)")
    batching = parser.add_argument_group("batching and limits")
    batching.add_argument(
        "--max-tokens",
        type=_max_tokens,
        default=defaults.max_tokens,
        help="padded tokens per backbone pass, one number or one per backbone (a,b); concurrent requests are "
        f"gathered into batches within it (default: {defaults.max_tokens})",
    )
    batching.add_argument(
        "--max-batch-size", type=int, default=defaults.max_batch_size, help="inputs per model batch at most"
    )
    batching.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help=f"how long an input waits for others to share its batch (default: {defaults.max_wait_ms:g} ms)",
    )
    batching.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help=f"inputs waiting or running at most; past it requests get 503 with Retry-After "
        f"(default: {defaults.max_queue})",
    )
    batching.add_argument(
        "--max-input-length",
        type=int,
        default=defaults.max_input_length,
        help=f"characters per input sequence (per chain) at most (default: {defaults.max_input_length})",
    )
    batching.add_argument(
        "--max-request-bytes",
        type=int,
        default=defaults.max_request_bytes,
        help=f"request body size at most (default: {defaults.max_request_bytes})",
    )
    batching.add_argument(
        "--max-inputs", type=int, default=defaults.max_inputs, help="inputs per request at most (default: 256)"
    )
    batching.add_argument(
        "--truncation", action="store_true", help="cut inputs longer than a backbone accepts instead of answering 400"
    )
    parser.add_argument(
        "--api-key",
        help=f"require this key on every route but /health ('Authorization: Bearer KEY'); default: ${API_KEY_ENV}",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds to finish requests in flight after SIGTERM (default: 30)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not write the JSON access log (stderr)")


def _max_tokens(text: str) -> int | list[int]:
    from .loading import max_tokens_argument

    return max_tokens_argument(text)


def _local_folder(model: str) -> str:
    """`model` itself when it is a local path; for a Hub id (`owner/name`), its snapshot in the Hub cache, downloaded
    once (every worker then reads the same files)."""
    from ..modeling.backbones import looks_local
    from .errors import UsageError

    if looks_local(model) or os.path.exists(model):
        return model
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model)
    except Exception as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "download it once without HF_HUB_OFFLINE=1, or pass a local folder"
            if offline
            else ("check the name, or pass a local folder written by save_pretrained")
        )
        raise UsageError(
            f"--model {model!r} is neither a local folder nor a reachable Hub repo: {hint} ({error})"
        ) from None


def run_serve(args) -> int:
    """`hf-metaembed serve`: check the model folder and the options (exit code 2 on a problem), then serve until
    SIGTERM or Ctrl-C."""
    from .errors import EXIT_OK, UsageError, check_positive, require
    from .loading import check_model_folder, torch_device

    for package in ("fastapi", "uvicorn", "prometheus_client"):
        require(package, SERVE_EXTRA_HINT)
    for name in ("workers", "max_batch_size", "max_queue", "max_input_length", "max_request_bytes", "max_inputs"):
        check_positive(getattr(args, name), "--" + name.replace("_", "-"))
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be from 1 to 65535, got {args.port}")
    local = _local_folder(args.model)
    folder = check_model_folder(local)
    hub_name = None if local == args.model else args.model  # a Hub model answers to its id
    torch_device(args.device)  # a device this torch cannot use is a usage error before any worker starts
    from ..serve.server import run_server
    from ..serve.settings import API_KEY_ENV, ServeSettings

    settings = ServeSettings(
        model=str(folder),
        model_name=args.model_name or hub_name,
        device=args.device,
        dtype=args.dtype,
        max_tokens=args.max_tokens,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_input_length=args.max_input_length,
        max_request_bytes=args.max_request_bytes,
        max_inputs=args.max_inputs,
        truncation=args.truncation,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        threads=getattr(args, "threads", None),
        log_requests=not args.no_access_log,
    )
    run_server(settings, args.host, args.port, args.workers, args.graceful_timeout, "debug" if args.debug else "info")
    return EXIT_OK


__all__ = ["add_serve_arguments", "run_serve"]
