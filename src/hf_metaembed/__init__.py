"""hf_metaembed: fuse several pretrained encoders into one `transformers` model with meta-embeddings."""

import importlib

from ._version import __version__

# each public name and the module defining it, imported on first use (PEP 562): `import hf_metaembed` costs little
# more than `import torch; from transformers import AutoModel`, and `hf-metaembed --help` loads neither
_PUBLIC = {
    "BackboneFamily": ".modeling.backbone_families",
    "list_backbone_families": ".modeling.backbone_families",
    "register_backbone_family": ".modeling.backbone_families",
    "MetaEmbedConfig": ".modeling.configuration_metaembed",
    "list_fusions": ".modeling.fusion",
    "list_heads": ".modeling.heads",
    "list_losses": ".modeling.losses",
    "MetaEmbedForSequenceClassification": ".modeling.modeling_metaembed",
    "MetaEmbedForTokenClassification": ".modeling.modeling_metaembed",
    "MetaEmbedModel": ".modeling.modeling_metaembed",
    "MetaEmbedModelOutput": ".modeling.modeling_metaembed",
    "MetaEmbedPreTrainedModel": ".modeling.modeling_metaembed",
    "list_architectures": ".modeling.pairing",
    "list_poolings": ".modeling.pooling",
    "MetaEmbedProcessor": ".modeling.processing_metaembed",
    "list_unit_encoders": ".modeling.unit_encoders",
}
_registered = False


def register_auto_classes() -> None:
    """Register MetaEmbed with transformers' Auto classes (`AutoConfig`, `AutoModel`, `AutoModelFor*`,
    `AutoProcessor`; `AutoTokenizer` answers with an error naming `AutoProcessor`), so saved folders load without
    `trust_remote_code`. Done on first use of any public name (`from hf_metaembed import MetaEmbedModel`); call it
    yourself after a bare `import hf_metaembed`. Idempotent."""
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoProcessor,
        AutoTokenizer,
    )

    from .integrations import cards as _cards  # noqa: F401  (plugs the card-writing upload into push_to_hub)
    from .modeling import modeling_metaembed as modeling
    from .modeling.auto_classes import AUTO_CLASSES
    from .modeling.configuration_metaembed import MetaEmbedConfig
    from .modeling.processing_metaembed import MetaEmbedProcessor, MetaEmbedTokenizers

    factories = {
        "AutoModel": AutoModel,
        "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
        "AutoModelForTokenClassification": AutoModelForTokenClassification,
    }
    AutoConfig.register(MetaEmbedConfig.model_type, MetaEmbedConfig, exist_ok=True)
    for class_name, auto_class in AUTO_CLASSES.items():  # the bundle's one table (modeling/auto_classes.py)
        factories[auto_class].register(MetaEmbedConfig, getattr(modeling, class_name), exist_ok=True)
    AutoProcessor.register(MetaEmbedConfig, MetaEmbedProcessor, exist_ok=True)
    # a MetaEmbed folder has one tokenizer per backbone: AutoTokenizer gets an error that names AutoProcessor
    AutoTokenizer.register(MetaEmbedConfig, tokenizer_class=MetaEmbedTokenizers, exist_ok=True)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    register_auto_classes()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


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
    "register_auto_classes",
    "register_backbone_family",
]
