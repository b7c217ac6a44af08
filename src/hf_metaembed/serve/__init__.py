"""`hf-metaembed serve`: a MetaEmbed model behind an HTTP API (FastAPI on uvicorn), with OpenAI-format embeddings,
dynamic batching across requests within the library's token budgets, a bounded queue, Prometheus metrics and
graceful shutdown. Needs the `serve` extra: `pip install 'hf_metaembed[serve]'`.

```python
from hf_metaembed.serve import ServeSettings, create_app

app = create_app(ServeSettings(model="my-model"))  # any ASGI server can run it
```
"""

from .settings import ServeSettings


def create_app(settings: ServeSettings):
    """The FastAPI app serving `settings.model` (see `hf_metaembed.serve.app`)."""
    from .app import create_app as build

    return build(settings)


__all__ = ["ServeSettings", "create_app"]
