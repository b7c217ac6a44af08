"""The MetaEmbed blocks that train beside the backbones, and the warning when an adapter library froze them.

`peft` freezes every parameter outside its adapters and its `modules_to_save`. A custom model has no default
`modules_to_save` (peft adds only a module named `classifier` or `score`, and only with `task_type="SEQ_CLS"`), so a
LoRA config written as the peft docs show leaves the fusion (and without `task_type` the head too) at its initial
weights, and the saved adapter without them. `warn_frozen_blocks` runs when such a model is put in training mode and
says, once, exactly what to add.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and the standard library only.
"""

import warnings

from torch import nn

# children of MetaEmbedModel that hold MetaEmbed layers (everything but the backbones)
METAEMBED_BLOCKS = ("layer_mixes", "token_poolers", "fusion", "unit_encoder", "pairing")
# ModuleDict/ModuleList containers are indexed by the model; peft's wrapper cannot be, so their entries are listed
_CONTAINERS = (nn.ModuleDict, nn.ModuleList)


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def trainable_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The MetaEmbed blocks of a `MetaEmbedModel` or `MetaEmbedFor*` model that hold parameters, by their full name in
    `model.named_modules()` (fusion, layer mixes, token poolers, unit encoder, pair architecture, `classifier`)."""
    base = model.base_model
    prefix = "" if base is model else f"{model.base_model_prefix}."
    blocks = {}
    for name in METAEMBED_BLOCKS:
        module = getattr(base, name, None)
        if module is None or not _has_parameters(module):
            continue
        if isinstance(module, _CONTAINERS):
            blocks.update(
                {f"{prefix}{name}.{key}": entry for key, entry in module.named_children() if _has_parameters(entry)}
            )
        else:
            blocks[f"{prefix}{name}"] = module
    classifier = getattr(model, "classifier", None)
    if classifier is not None and _has_parameters(classifier):
        blocks["classifier"] = classifier
    return blocks


def _is_adapter_layer(module: nn.Module) -> bool:
    return type(module).__module__.startswith("peft.")


def warn_frozen_blocks(model: nn.Module) -> None:
    """Warn once when adapter layers (peft's) sit in `model` but left MetaEmbed blocks frozen, naming the
    `modules_to_save` to add. Called by `MetaEmbedPreTrainedModel.train()`; does nothing without adapters."""
    if model.__dict__.get("_frozen_blocks_checked") or not any(_is_adapter_layer(m) for m in model.modules()):
        return
    for module in model.modules():  # the inner MetaEmbedModel is checked as part of this model
        if getattr(module, "base_model_prefix", None) == model.base_model_prefix:
            module.__dict__["_frozen_blocks_checked"] = True
    blocks = trainable_blocks(model)
    frozen = [
        name
        for name, module in blocks.items()
        if not _is_adapter_layer(module) and not any(p.requires_grad for p in module.parameters())
    ]
    if frozen:
        warnings.warn(
            f"the adapters left these MetaEmbed blocks frozen at their initial weights: {', '.join(frozen)}. They "
            "will not train and the saved adapter will not hold them. Add them to the LoRA config: "
            f"LoraConfig(..., modules_to_save={list(blocks)}), or build the config with "
            "hf_metaembed.integrations.peft.lora_config(model), which adds them",
            UserWarning,
            stacklevel=3,
        )


__all__ = ["METAEMBED_BLOCKS", "trainable_blocks", "warn_frozen_blocks"]
