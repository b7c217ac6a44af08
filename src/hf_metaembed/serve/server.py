"""Run the app under uvicorn: one or several worker processes, each loading the model once, shut down gracefully
on SIGTERM (uvicorn stops accepting connections, finishes the requests in flight, then the batcher finishes what
it holds)."""

import os

from .settings import SETTINGS_ENV, ServeSettings

APP_FACTORY = "hf_metaembed.serve.app:app_from_environment"


def run_server(
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    graceful_timeout: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serve `settings.model` on `host:port` until SIGTERM or Ctrl-C.

    The settings reach every worker as JSON in `HF_METAEMBED_SERVE_SETTINGS` (uvicorn starts workers as new
    processes that import the app factory); the API key travels in `HF_METAEMBED_API_KEY` instead, so it is not
    written into the settings.
    """
    import uvicorn

    public = ServeSettings(**{**settings.__dict__, "api_key": None})
    os.environ[SETTINGS_ENV] = public.to_json()
    if settings.api_key:
        os.environ["HF_METAEMBED_API_KEY"] = settings.api_key
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the app writes its own structured access log
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout,
    )


__all__ = ["APP_FACTORY", "run_server"]
