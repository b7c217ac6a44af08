"""LoRA for MetaEmbed models: which backbone layers get adapters, and which MetaEmbed blocks train in full.

A custom model has no default LoRA targets in `peft`, so `lora_target_modules` reads them off the model: for every
backbone (or the chosen ones) the attention projections its family is usually adapted on (`query`/`value` for BERT,
RoBERTa, MiniLM and ESM-2; `q`/`v` for T5-family encoders such as ProtT5 and Ankh; `q_proj`/`k_proj`/`v_proj`/
`o_proj` for decoders such as Qwen, Llama and Mistral; `c_attn` for GPT-2; `Wqkv`/`Wo` for ModernBERT), and as
`modules_to_save` the MetaEmbed blocks outside the backbones (fusion, layer mixes, token poolers, unit encoder, pair
architecture, head).

```python
from peft import get_peft_model
from hf_metaembed.integrations.peft import lora_config

peft_model = get_peft_model(model, lora_config(model, r=8, backbones=[0]))
```

Frozen backbones stay in eval mode while training (`config.freeze_backbones`), so `lora_dropout` inside them is
inactive; the adapters still receive gradients.

A `LoraConfig` written by hand (`LoraConfig(target_modules=["query", "value"], task_type="SEQ_CLS")`, as the peft
docs show) adapts the backbones but freezes the fusion (and, without `task_type`, the head): the model warns once,
when training starts, with the `modules_to_save` to add (`lora_modules_to_save(model)`).
"""

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from peft import LoraConfig
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers.pytorch_utils import Conv1D

from .._utils import metaembed_of
from ..modeling.backbone_families import backbone_family
from ..modeling.modeling_metaembed import MetaEmbedPreTrainedModel
from ..modeling.trainable_blocks import trainable_blocks


class LoraTargets(NamedTuple):
    """`target_modules` (a regex `peft` matches against full module names) and `modules_to_save` (full names)."""

    target_modules: str
    modules_to_save: list[str]


def backbone_lora_names(model_type: str) -> list[str]:
    """Leaf names of the layers LoRA adapts in one backbone family (e.g. `["query", "value"]` for `"bert"`): its
    family record's `lora_targets`, else peft's table for the model type."""
    names = backbone_family(model_type).lora_targets
    if names is None:
        names = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if names is None:
        raise ValueError(
            f"no default LoRA targets are known for {model_type!r} backbones; pass `target_modules` to "
            "`peft.LoraConfig` yourself (for example a regex over this model's module names)"
        )
    return list(names)


def lora_target_modules(model: MetaEmbedPreTrainedModel, backbones: Sequence[int] | None = None) -> LoraTargets:
    """LoRA targets inside the backbones of a MetaEmbed model, and the MetaEmbed blocks to train in full.

    Args:
        model: a `MetaEmbedModel` or `MetaEmbedFor*` model (not yet wrapped by peft).
        backbones: indices of the backbones that get adapters; all that have attention layers when omitted.

    Returns:
        `LoraTargets(target_modules, modules_to_save)`: `target_modules` is one regex (peft full-matches it
        against module names) such as `(?:.*\\.)?(?:backbone_0\\..*\\.(?:query|value)|backbone_1\\..*\\.(?:q|v))`,
        which matches the same modules on a `MetaEmbedModel` and on any `MetaEmbedFor*` head;
        `modules_to_save` lists the full names of the fusion, layer mixes, token poolers, unit encoder, pair
        architecture and `classifier` (those holding parameters).
    """
    metaembed = metaembed_of(model, unwrap_peft=False)
    count = metaembed.config.num_backbones
    if backbones is None:
        model_types = [metaembed.config.get_backbone_config(i).model_type for i in range(count)]
        chosen = [i for i, model_type in enumerate(model_types) if backbone_family(model_type).lora_targets != ()]
    else:
        chosen = sorted(set(backbones))
        for index in chosen:
            if not isinstance(index, int) or not 0 <= index < count:
                raise ValueError(f"backbone index {index!r} is out of range; this model has backbones 0..{count - 1}")
    patterns = []
    for index in chosen:
        model_type = metaembed.config.get_backbone_config(index).model_type
        names = backbone_lora_names(model_type)
        if not names:
            raise ValueError(
                f"backbone {index} ({metaembed.config.backbone_names[index]}) is a {model_type!r} backbone with "
                "no layers LoRA can adapt; leave it out of `backbones`"
            )
        backbone = getattr(metaembed, f"backbone_{index}")
        # GPT-2's projections are transformers' Conv1D (a linear layer with transposed weights), which peft adapts
        adaptable = (nn.Linear, Conv1D)
        found = {name.rsplit(".", 1)[-1] for name, module in backbone.named_modules() if isinstance(module, adaptable)}
        missing = [name for name in names if name not in found]
        if missing:
            raise ValueError(
                f"backbone {index} ({model_type}) has no linear layers named {missing}; pass `target_modules` to "
                "`peft.LoraConfig` yourself"
            )
        leaves = "|".join(re.escape(name) for name in names)
        patterns.append(rf"backbone_{index}\..*\.(?:{leaves})")
    if not patterns:
        raise ValueError("no backbone of this model has layers LoRA can adapt; train the MetaEmbed blocks instead")
    target_modules = rf"(?:.*\.)?(?:{'|'.join(patterns)})"
    return LoraTargets(target_modules, lora_modules_to_save(model))


def lora_modules_to_save(model: MetaEmbedPreTrainedModel) -> list[str]:
    """Full names of the non-backbone modules with parameters, which train in full (and are saved) beside LoRA."""
    metaembed_of(model, unwrap_peft=False)  # a MetaEmbed model, not yet wrapped by peft
    return list(trainable_blocks(model))


def lora_config(
    model: MetaEmbedPreTrainedModel,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    backbones: Sequence[int] | None = None,
    use_dora: bool = False,
    **kwargs: Any,
) -> LoraConfig:
    """A `peft.LoraConfig` for `model`: adapters on the backbones' attention projections (see
    `lora_target_modules`), fusion and head in `modules_to_save`. Extra keyword arguments go to `LoraConfig`.

    `use_dora=True`: DoRA (Liu et al., 2024; the study's training config names it): each adapted weight is split into
    a magnitude vector and a direction, LoRA adapts the direction and the magnitude trains too."""
    targets = lora_target_modules(model, backbones)
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=targets.target_modules,
        modules_to_save=targets.modules_to_save,
        use_dora=use_dora,
        **kwargs,
    )


__all__ = ["LoraTargets", "backbone_lora_names", "lora_config", "lora_modules_to_save", "lora_target_modules"]
