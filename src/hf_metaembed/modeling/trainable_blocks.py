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

# ModuleDict/ModuleList containers are indexed by the model; peft's wrapper cannot be, so their entries are listed (as
# are the parts of a stage module that declares `holds_blocks`, such as the reading stage)
_CONTAINERS = (nn.ModuleDict, nn.ModuleList)


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _blocks_in(name: str, module: nn.Module) -> dict[str, nn.Module]:
    """`module` by its name, or, for a container, its entries that hold parameters (recursively)."""
    if not _has_parameters(module):
        return {}
    if not isinstance(module, _CONTAINERS) and not getattr(module, "holds_blocks", False):
        return {name: module}
    blocks = {}
    for key, child in module.named_children():
        blocks.update(_blocks_in(f"{name}.{key}", child))
    return blocks


def trainable_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The MetaEmbed blocks of a `MetaEmbedModel` or `MetaEmbedFor*` model that hold parameters, by their full name in
    `model.named_modules()`: every stage module of the base model but the backbones (layer mixes, token poolers,
    fusion, unit encoder, pair architecture), then the head (`classifier`)."""
    base = model.base_model
    prefix = "" if base is model else f"{model.base_model_prefix}."
    blocks = {}
    for name, module in base.named_children():
        if not name.startswith("backbone_"):
            blocks.update(_blocks_in(f"{prefix}{name}", module))
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


__all__ = ["trainable_blocks", "warn_frozen_blocks"]
