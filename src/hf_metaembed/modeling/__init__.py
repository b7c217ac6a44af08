"""The remote-code bundle: every file here is copied, flat, next to a saved model so that
`AutoModel.from_pretrained(folder, trust_remote_code=True)` works where `hf_metaembed` is not installed.

The files import only torch, transformers, safetensors, the standard library and each other (`from .x import y`);
nothing here imports the rest of `hf_metaembed` (tests/test_layout.py checks it).
"""

_MODEL_NAMES = (
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
)


def __getattr__(name: str):
    # imported on first use: importing one bundle file (the config, say) does not load the model classes and
    # transformers' modeling and processing machinery with it
    if name == "MetaEmbedConfig":
        from .configuration_metaembed import MetaEmbedConfig as value
    elif name == "MetaEmbedProcessor":
        from .processing_metaembed import MetaEmbedProcessor as value
    elif name in _MODEL_NAMES:
        from . import modeling_metaembed

        value = getattr(modeling_metaembed, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "MetaEmbedConfig",
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedProcessor",
]
