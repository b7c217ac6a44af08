"""Backbones: building them from stored configs, loading them once from a name, reading their layers, and
aligning their token states onto shared units.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and transformers only.
"""

import inspect
import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from .static_vectors import StaticVectorsConfig, StaticVectorsModel

# T5-family checkpoints hold an encoder-decoder; protein users (ProtT5, Ankh) only want the encoder
_ENCODER_ONLY_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
}


def backbone_class(config: PreTrainedConfig) -> type[PreTrainedModel]:
    """The encoder class used for a backbone config (`T5EncoderModel` for T5-family, `AutoModel`'s choice else)."""
    if isinstance(config, StaticVectorsConfig):
        return StaticVectorsModel
    encoder_name = _ENCODER_ONLY_CLASSES.get(config.model_type)
    if encoder_name is not None:
        import transformers

        return getattr(transformers, encoder_name)
    return AutoModel._model_mapping[type(config)]


def _pooler_free_kwargs(model_class: type[PreTrainedModel]) -> dict:
    # the pooler of BERT/ESM-style models is never used for fusion; skipping it avoids random weights and compute
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


def build_backbone(config: PreTrainedConfig) -> PreTrainedModel:
    """An empty backbone from its config (weights come from the checkpoint; never calls `from_pretrained`)."""
    model_class = backbone_class(config)
    return model_class(config, **_pooler_free_kwargs(model_class))


class BackboneNotFoundError(OSError):
    """A backbone name or path that cannot be found locally or reached on the Hub."""


def load_backbone_config(name: str, revision: str | None = None, index: int = 0, **kwargs) -> PreTrainedConfig:
    """Load one backbone's config, turning "not found" into an error that names the backbone and the fix."""
    # a Hub id is "name" or "owner/name"; anything else is a folder, and a missing folder needs no network check
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(name)):
        raise BackboneNotFoundError(f"backbone {index} {name!r}: no such folder; pass an existing local folder")
    try:
        return AutoConfig.from_pretrained(name, revision=revision, **kwargs)
    except (OSError, ValueError) as error:
        if os.path.isdir(os.path.expanduser(name)):
            raise BackboneNotFoundError(
                f"backbone {index} {name!r}: the folder holds no loadable model config ({error}); pass a folder "
                "written by save_pretrained"
            ) from error
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "the Hub cannot be reached offline (HF_HUB_OFFLINE=1): download it once, or pass a local folder"
            if offline
            else "check the name and revision, or pass a local folder"
        )
        raise BackboneNotFoundError(f"backbone {index} {name!r} could not be loaded: {hint} ({error})") from error


def load_backbone(name: str, revision: str | None = None, index: int = 0, **kwargs) -> PreTrainedModel:
    """Load one backbone with its own class's `from_pretrained` (weights read once)."""
    config = load_backbone_config(name, revision, index)
    model_class = backbone_class(config)
    return model_class.from_pretrained(
        name, revision=revision, config=config, **_pooler_free_kwargs(model_class), **kwargs
    )


def infer_unit_type(tokenizer=None, config: PreTrainedConfig | None = None) -> str:
    """Guess whether a backbone reads proteins (`"residue"`) or text (`"word"`).

    A protein tokenizer's ordinary tokens are single letters (possibly with a word-start marker), so a vocabulary
    with no multi-letter ordinary token is a residue vocabulary.
    """
    if config is not None and config.model_type == "esm":
        return "residue"
    if config is not None and config.model_type == StaticVectorsConfig.model_type:
        return "word"
    if tokenizer is None:
        return "word"
    special = set(tokenizer.all_special_tokens)
    for token in tokenizer.get_vocab():
        if token in special or token.startswith(("<", "[")):
            continue
        letters = token.replace("\u2581", "").replace("\u0120", "").replace("##", "")
        if len(letters) > 1:
            return "word"
    return "residue"


class ScalarMix(nn.Module):
    """Learned softmax-weighted sum of a backbone's layers, times a learned scale (ELMo's scalar mix)."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.layer_scores = nn.Parameter(torch.zeros(num_layers))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        # layers: (..., num_layers, dim) -> (..., dim)
        weights = torch.softmax(self.layer_scores, dim=0).to(layers.dtype)
        return self.scale * torch.einsum("l,...ld->...d", weights, layers)


def select_layer(outputs, layer: str | int) -> torch.Tensor:
    """Token states of the chosen layer; for `"mix"` all layers stacked as `(batch, tokens, layers, dim)`."""
    if layer == "last":
        return outputs.last_hidden_state
    if layer == "mix":
        return torch.stack(outputs.hidden_states, dim=2)
    hidden_states = outputs.hidden_states
    if not -len(hidden_states) <= layer < len(hidden_states):
        raise ValueError(f"layer {layer} is out of range: this backbone has {len(hidden_states)} hidden states")
    return hidden_states[layer]


def align_to_units(
    token_states: torch.Tensor, token_unit_index: torch.Tensor, num_units: int, mode: str = "mean"
) -> torch.Tensor:
    """Pool token states onto units.

    Args:
        token_states: `(segments, tokens, *feature)` states of one backbone.
        token_unit_index: `(segments, tokens)` unit of each token, -1 for special tokens and padding.
        num_units: number of unit slots in the output.
        mode: `"mean"` of a unit's tokens, or its `"first"` token.

    Returns:
        `(segments, num_units, *feature)`; a unit with no token is zero.
    """
    segments, tokens = token_unit_index.shape
    feature_shape = token_states.shape[2:]
    # route special tokens and padding to an extra slot that is dropped at the end
    slots = torch.where(token_unit_index < 0, num_units, token_unit_index)
    if mode == "first":
        positions = torch.arange(tokens, device=slots.device).expand(segments, tokens)
        first = torch.full((segments, num_units + 1), tokens, device=slots.device, dtype=torch.long)
        first = first.scatter_reduce(1, slots, positions, reduce="amin")[:, :num_units]
        covered = first < tokens
        gather_index = first.clamp(max=tokens - 1)
        gather_index = gather_index.view(segments, num_units, *([1] * len(feature_shape))).expand(
            segments, num_units, *feature_shape
        )
        picked = token_states.gather(1, gather_index)
        return picked * covered.view(segments, num_units, *([1] * len(feature_shape))).to(picked.dtype)
    flat = token_states.reshape(segments, tokens, -1)
    sums = flat.new_zeros(segments, num_units + 1, flat.shape[-1])
    sums.scatter_add_(1, slots.unsqueeze(-1).expand_as(flat), flat)
    counts = flat.new_zeros(segments, num_units + 1)
    counts.scatter_add_(1, slots, torch.ones_like(slots, dtype=flat.dtype))
    means = sums[:, :num_units] / counts[:, :num_units].clamp(min=1).unsqueeze(-1)
    return means.reshape(segments, num_units, *feature_shape)
