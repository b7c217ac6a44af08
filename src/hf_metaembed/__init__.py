"""hf_metaembed: fuse several pretrained encoders into one `transformers` model with meta-embeddings."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
    AutoTokenizer,
)

from ._version import __version__
from .integrations import cards as _cards  # noqa: F401  (plugs the card-writing upload into push_to_hub)
from .modeling import modeling_metaembed as _modeling
from .modeling.auto_classes import AUTO_CLASSES
from .modeling.backbone_families import BackboneFamily, list_backbone_families, register_backbone_family
from .modeling.configuration_metaembed import MetaEmbedConfig
from .modeling.fusion import list_fusions
from .modeling.heads import list_heads
from .modeling.losses import list_losses
from .modeling.modeling_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedModelOutput,
    MetaEmbedPreTrainedModel,
)
from .modeling.pairing import list_architectures
from .modeling.pooling import list_poolings
from .modeling.processing_metaembed import MetaEmbedProcessor, MetaEmbedTokenizers
from .modeling.unit_encoders import list_unit_encoders

_AUTO_FACTORIES = {
    "AutoModel": AutoModel,
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
}
AutoConfig.register(MetaEmbedConfig.model_type, MetaEmbedConfig, exist_ok=True)
for _class_name, _auto_class in AUTO_CLASSES.items():  # the bundle's one table (modeling/auto_classes.py)
    _AUTO_FACTORIES[_auto_class].register(MetaEmbedConfig, getattr(_modeling, _class_name), exist_ok=True)
AutoProcessor.register(MetaEmbedConfig, MetaEmbedProcessor, exist_ok=True)
# a MetaEmbed folder has one tokenizer per backbone: AutoTokenizer gets an error that names AutoProcessor
AutoTokenizer.register(MetaEmbedConfig, tokenizer_class=MetaEmbedTokenizers, exist_ok=True)


def fit_fusion(model, source, **kwargs):
    """Fit the model's fitted fusion (svd, pca, 1ton, gcca, daeme, caeme, aaeme, lle) on a feature cache, sequences
    or arrays and store the result as its weights: `hf_metaembed.fitting.fit_fusion` (imported on first use)."""
    from .fitting import fit_fusion as fit

    return fit(model, source, **kwargs)


__all__ = [
    "BackboneFamily",
    "MetaEmbedConfig",
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedProcessor",
    "__version__",
    "fit_fusion",
    "list_architectures",
    "list_backbone_families",
    "list_fusions",
    "list_heads",
    "list_losses",
    "list_poolings",
    "list_unit_encoders",
    "register_backbone_family",
]
