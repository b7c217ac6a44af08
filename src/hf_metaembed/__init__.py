"""hf_metaembed: fuse several pretrained encoders into one `transformers` model with meta-embeddings."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
)

from .configuration_metaembed import MetaEmbedConfig
from .fusion import list_fusions
from .heads import list_heads
from .modeling_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedModelOutput,
    MetaEmbedPreTrainedModel,
)
from .pairing import list_architectures
from .pooling import list_poolings
from .processing_metaembed import MetaEmbedProcessor

AutoConfig.register(MetaEmbedConfig.model_type, MetaEmbedConfig, exist_ok=True)
AutoModel.register(MetaEmbedConfig, MetaEmbedModel, exist_ok=True)
AutoModelForSequenceClassification.register(MetaEmbedConfig, MetaEmbedForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(MetaEmbedConfig, MetaEmbedForTokenClassification, exist_ok=True)
AutoProcessor.register(MetaEmbedConfig, MetaEmbedProcessor, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "MetaEmbedConfig",
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedProcessor",
    "list_architectures",
    "list_fusions",
    "list_heads",
    "list_poolings",
]
