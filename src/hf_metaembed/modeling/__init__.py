"""The remote-code bundle: every file here is copied, flat, next to a saved model so that
`AutoModel.from_pretrained(folder, trust_remote_code=True)` works where `hf_metaembed` is not installed.

The files import only torch, transformers, safetensors, the standard library and each other (`from .x import y`);
nothing here imports the rest of `hf_metaembed` (tests/test_layout.py checks it).
"""

from .configuration_metaembed import MetaEmbedConfig
from .modeling_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedModelOutput,
    MetaEmbedPreTrainedModel,
)
from .processing_metaembed import MetaEmbedProcessor

__all__ = [
    "MetaEmbedConfig",
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedProcessor",
]
