"""Small helpers the tools outside the bundle share (cache, PEFT, CLI); not model code."""

from torch import nn

from .modeling.modeling_metaembed import MetaEmbedModel, MetaEmbedPreTrainedModel


def metaembed_of(model: nn.Module, unwrap_peft: bool = True) -> MetaEmbedModel:
    """The `MetaEmbedModel` inside a MetaEmbed model: the model itself, or the `metaembed` of a `MetaEmbedFor*` head.

    With `unwrap_peft`, a `peft` wrapper of either is looked through (`get_base_model()`); without it, one is refused
    (module names inside a wrapper carry its prefixes, so LoRA targets must be read off the unwrapped model).
    """
    if unwrap_peft and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    if isinstance(model, MetaEmbedModel):
        return model
    inner = getattr(model, "metaembed", None)
    if isinstance(model, MetaEmbedPreTrainedModel) and isinstance(inner, MetaEmbedModel):
        return inner
    hint = "" if unwrap_peft else "; pass the model before wrapping it with peft"
    raise TypeError(f"expected a MetaEmbed model (MetaEmbedModel or MetaEmbedFor*), got {type(model).__name__}{hint}")
