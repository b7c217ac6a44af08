"""Backbones: one record per backbone family, building backbones from stored configs, loading them once from a name,
reading their layers, and aligning their token states onto shared units.

Everything that differs between backbone families (the class a backbone loads with, its unit type, the token between
joined chains, whether its config bounds the tokens it reads, its LoRA targets, its tiny test builders) is one
`BackboneFamily` record, looked up by the `model_type` of the backbone's config with `backbone_family`. A model type
without a record gets `GENERIC_FAMILY`: `AutoModel`'s class, a unit type guessed from the tokenizer, peft's LoRA table.
A new family is one `register_backbone_family(BackboneFamily(...))` call, from any module.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and transformers only.
"""

import inspect
import json
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForTextEncoding,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import cached_file

from .static_vectors import StaticVectorsConfig, StaticVectorsModel

UNIT_TYPES = ("residue", "word")


@dataclass(frozen=True)
class BackboneFamily:
    """What the library needs to know about one family of backbones.

    Attributes:
        name: short name used in messages and listings (`"esm"`, `"t5"`).
        model_types: the `config.model_type` values this record serves (T5, mT5 and UMT5 encoders share one).
        model_class: the class a backbone is built and loaded with: a model class, or an Auto class whose mapping
            picks the class for the config (`AutoModelForTextEncoding` gives T5-family checkpoints, which hold an
            encoder-decoder, their encoder alone).
        config_class: the config class that rebuilds a stored backbone config; None uses `AutoConfig.for_model`.
        unit_type: `"residue"` or `"word"` when every backbone of the family reads that unit; None guesses it from
            the tokenizer's vocabulary (`infer_unit_type`): a T5 encoder may be ProtT5 or a text T5.
        chain_separator: tokenizer attributes tried in order for the token id put between the chains of one segment
            (the chains of a side, or of a whole `sc` complex); the first one set is used, none: no separator.
        absolute_positions: the config's `max_position_embeddings` bounds the tokens a backbone reads (the processor
            and the window checks enforce it); False for relative-position encoders (T5), whose only bound is their
            tokenizer's `model_max_length`.
        lora_targets: leaf names of the linear layers LoRA adapts by default; None asks peft's table for the model
            type; empty when the family holds nothing LoRA can adapt (a static vector table).
        tiny_builders: tiny random backbones of this family for tests, each `(seed, max_length) -> (model,
            tokenizer)`: the name of a function in `hf_metaembed.testing` (a name, since model code never imports
            the testing module), or the function itself. `hf_metaembed.testing.tiny_builders_for` resolves them.
    """

    name: str
    model_types: tuple[str, ...]
    model_class: type = AutoModel
    config_class: type[PreTrainedConfig] | None = None
    unit_type: str | None = None
    chain_separator: tuple[str, ...] = ("sep_token_id", "eos_token_id")
    absolute_positions: bool = True
    lora_targets: tuple[str, ...] | None = None
    tiny_builders: tuple[str | Callable, ...] = ()

    def __post_init__(self) -> None:
        # lists are accepted for convenience and stored as tuples, so a record stays immutable
        for field in ("model_types", "chain_separator", "lora_targets", "tiny_builders"):
            value = getattr(self, field)
            if isinstance(value, str):
                raise TypeError(
                    f"BackboneFamily {self.name!r}: {field} must be a tuple of names, got the string {value!r}"
                )
            if value is not None:
                object.__setattr__(self, field, tuple(value))
        if self.unit_type not in (None, *UNIT_TYPES):
            raise ValueError(
                f"BackboneFamily {self.name!r}: unknown unit_type {self.unit_type!r}; choose one of: "
                f"{', '.join(UNIT_TYPES)}, or None to guess it from the tokenizer"
            )

    def model_class_for(self, config: PreTrainedConfig) -> type[PreTrainedModel]:
        """The class a backbone with this config is built and loaded with."""
        mapping = getattr(self.model_class, "_model_mapping", None)
        if mapping is None:
            return self.model_class
        try:
            return mapping[type(config)]
        except KeyError:
            raise ValueError(
                f"{self.model_class.__name__} knows no model class for a {config.model_type!r} backbone; register its "
                f"family: register_backbone_family(BackboneFamily(name=..., model_types=({config.model_type!r},), "
                "model_class=YourModel))"
            ) from None

    def config_from_dict(self, model_type: str, config_dict: dict) -> PreTrainedConfig:
        """Rebuild a backbone config of this family from its stored dict (without `model_type`)."""
        if self.config_class is not None:
            return self.config_class(**config_dict)
        return AutoConfig.for_model(model_type, **config_dict)

    def separator_ids(self, tokenizer) -> list[int]:
        """The token ids put between two chains of one segment (`chain_separator`), possibly none."""
        for attribute in self.chain_separator:
            token_id = getattr(tokenizer, attribute, None)
            if token_id is not None:
                return [token_id]
        return []


# a model type without a record: AutoModel's class, unit type guessed, LoRA targets from peft's table
GENERIC_FAMILY = BackboneFamily(name="generic", model_types=())
_FAMILIES: dict[str, BackboneFamily] = {}


def register_backbone_family(family: BackboneFamily) -> BackboneFamily:
    """Make `family` the record of each of its model types; a model type or name that already has a record raises
    (remove nothing silently: register the new family under model types of its own)."""
    if not isinstance(family, BackboneFamily):
        raise TypeError(f"register_backbone_family takes a BackboneFamily, got {type(family).__name__}")
    if not family.model_types:
        raise ValueError(f"backbone family {family.name!r} lists no model types; give the config.model_type it serves")
    taken = [model_type for model_type in family.model_types if model_type in _FAMILIES]
    if taken:
        owner = _FAMILIES[taken[0]].name
        raise ValueError(
            f"model type {taken[0]!r} already belongs to backbone family {owner!r}; registered families: "
            f"{', '.join(list_backbone_families())}"
        )
    if family.name in list_backbone_families() or family.name == GENERIC_FAMILY.name:
        raise ValueError(
            f"a backbone family named {family.name!r} is already registered; choose another name (registered: "
            f"{', '.join(list_backbone_families())})"
        )
    for model_type in family.model_types:
        _FAMILIES[model_type] = family
    return family


def backbone_family(model_type: str | None) -> BackboneFamily:
    """The record of the family a backbone's `config.model_type` belongs to (`GENERIC_FAMILY` if none)."""
    return _FAMILIES.get(model_type, GENERIC_FAMILY)


def backbone_families() -> list[BackboneFamily]:
    """The registered backbone family records, in registration order."""
    return list({id(family): family for family in _FAMILIES.values()}.values())


def list_backbone_families() -> list[str]:
    """Names of the registered backbone families, in registration order."""
    return [family.name for family in backbone_families()]


# BERT's family includes MiniLM and other BERT-shaped sentence encoders (model_type "bert")
register_backbone_family(
    BackboneFamily(
        name="bert", model_types=("bert",), lora_targets=("query", "value"), tiny_builders=("build_tiny_bert",)
    )
)
register_backbone_family(
    BackboneFamily(
        name="roberta",
        model_types=("roberta",),
        lora_targets=("query", "value"),
        tiny_builders=("build_tiny_roberta",),
    )
)
register_backbone_family(
    BackboneFamily(
        name="esm",
        model_types=("esm",),
        unit_type="residue",
        lora_targets=("query", "value"),
        tiny_builders=("build_tiny_esm",),
    )
)
# ProtT5 and Ankh are T5 encoders; T5 checkpoints hold an encoder-decoder and only the encoder is wanted
register_backbone_family(
    BackboneFamily(
        name="t5",
        model_types=("t5", "mt5", "umt5"),
        model_class=AutoModelForTextEncoding,
        absolute_positions=False,
        lora_targets=("q", "v"),
        tiny_builders=("build_tiny_prott5", "build_tiny_ankh"),
    )
)
# the bundle's own config class, so a model loaded as remote code rebuilds its table with the classes beside it
register_backbone_family(
    BackboneFamily(
        name="static_vectors",
        model_types=(StaticVectorsConfig.model_type,),
        model_class=StaticVectorsModel,
        config_class=StaticVectorsConfig,
        unit_type="word",
        lora_targets=(),
        tiny_builders=("build_tiny_static_vectors",),
    )
)


def backbone_class(config: PreTrainedConfig) -> type[PreTrainedModel]:
    """The encoder class used for a backbone config, as its family record says (`T5EncoderModel` for T5-family,
    `AutoModel`'s choice for a model type without a record)."""
    return backbone_family(config.model_type).model_class_for(config)


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


# checkpoint keys a backbone encoder never builds: the pooler of BERT-style models (skipped, see `_pooler_free_kwargs`)
# and the pretraining heads of masked-language-model checkpoints (ESM-2's and BERT's); transformers would list them
# in a load report on every load
UNUSED_CHECKPOINT_KEYS = (r"(^|\.)pooler\.", r"(^|\.)lm_head\.", r"(^|\.)cls\.(predictions|seq_relationship)\.")


@contextmanager
def _quiet_unused_keys(model_class: type[PreTrainedModel]) -> Iterator[None]:
    """While loading, count `UNUSED_CHECKPOINT_KEYS` as expected (`_keys_to_ignore_on_load_unexpected`, read when the
    model is built): any other unexpected or missing key is still reported."""
    had_own = "_keys_to_ignore_on_load_unexpected" in model_class.__dict__
    before = model_class.__dict__.get("_keys_to_ignore_on_load_unexpected")
    inherited = getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or []
    model_class._keys_to_ignore_on_load_unexpected = [*inherited, *UNUSED_CHECKPOINT_KEYS]
    try:
        yield
    finally:
        if had_own:
            model_class._keys_to_ignore_on_load_unexpected = before
        else:
            del model_class._keys_to_ignore_on_load_unexpected


def load_backbone(name: str, revision: str | None = None, index: int = 0, **kwargs) -> PreTrainedModel:
    """Load one backbone with its own class's `from_pretrained` (weights read once).

    Checkpoint keys every encoder leaves unused (`UNUSED_CHECKPOINT_KEYS`: poolers, pretraining heads) are not
    reported; missing weights or other unexpected keys are, as transformers reports them.
    """
    config = load_backbone_config(name, revision, index)
    model_class = backbone_class(config)
    with _quiet_unused_keys(model_class):
        return model_class.from_pretrained(
            name, revision=revision, config=config, **_pooler_free_kwargs(model_class), **kwargs
        )


# ------------------------------------------------------------------------------------ sentence-transformers backbones

# sentence-transformers' pooling modes this library reproduces (its `Pooling` module's `pooling_mode`)
SENTENCE_POOLING_MODES = ("mean", "max", "cls", "lasttoken", "mean_sqrt_len_tokens", "weightedmean")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _json_file(name: str, filename: str, revision: str | None) -> dict | list | None:
    """A JSON file of a model folder or Hub repo, None if it has none (nothing is downloaded but that file)."""
    folder = os.path.expanduser(name)
    if os.path.isdir(folder):
        path = os.path.join(folder, filename)
        path = path if os.path.isfile(path) else None
    else:
        path = cached_file(
            name,
            filename,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sentence_transformers_settings(name: str | None, revision: str | None = None, warn: bool = True) -> dict | None:
    """How a sentence-transformers model makes its sentence vectors, read from its own files; None for a backbone that
    is not one (no `modules.json`).

    Returns:
        `{"pooling": mode or None, "normalize": bool, "max_seq_length": int or None}`: the mode of its `Pooling`
        module (one of `SENTENCE_POOLING_MODES`; None, with a warning, when it concatenates several modes or uses one
        this library does not reproduce), whether a `Normalize` module follows, and its `sentence_bert_config.json`
        `max_seq_length`. Modules after pooling other than `Normalize` (e.g. `Dense`) are not reproduced; a warning
        names them (unless `warn=False`).
    """
    if name is None:
        return None
    modules = _json_file(str(name), "modules.json", revision)
    if not isinstance(modules, list):
        return None
    settings = {"pooling": None, "normalize": False, "max_seq_length": None}
    skipped = []
    for module in modules:
        kind, path = str(module.get("type", "")).rsplit(".", 1)[-1], module.get("path", "")
        if kind == "Transformer":
            transformer = _json_file(str(name), os.path.join(path, "sentence_bert_config.json"), revision) or {}
            settings["max_seq_length"] = transformer.get("max_seq_length")
        elif kind == "Pooling":
            settings["pooling"] = _pooling_mode(_json_file(str(name), os.path.join(path, "config.json"), revision))
            if settings["pooling"] is None:
                skipped.append(f"{kind} ({path})")
        elif kind == "Normalize":
            settings["normalize"] = True
        else:
            skipped.append(f"{kind} ({path or 'root'})")
    if skipped and warn:
        warnings.warn(
            f"{name} is a sentence-transformers model whose modules {skipped} this library does not reproduce: its "
            "sentence vectors will differ from SentenceTransformer.encode (read: the pooling modes "
            f"{', '.join(SENTENCE_POOLING_MODES)}, Normalize and max_seq_length)",
            stacklevel=2,
        )
    return settings


def _pooling_mode(config: dict | None) -> str | None:
    """The one pooling mode of a sentence-transformers `Pooling` config (new `pooling_mode` or legacy booleans)."""
    config = config or {}
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)]
        mode = modes[0] if len(modes) == 1 else modes
    if isinstance(mode, list | tuple):
        mode = mode[0] if len(mode) == 1 else None
    return mode if mode in SENTENCE_POOLING_MODES else None


def sentence_pooling(name: str | None, revision: str | None = None) -> dict | None:
    """A backbone record's `sentence_pooling` (`{"mode", "normalize"}`) for a sentence-transformers backbone whose
    pooling this library reproduces, else None."""
    settings = sentence_transformers_settings(name, revision)
    if settings is None or settings["pooling"] is None:
        return None
    return {"mode": settings["pooling"], "normalize": settings["normalize"]}


def pool_sentence(token_states: torch.Tensor, attention_mask: torch.Tensor, pooling: dict) -> torch.Tensor:
    """One vector per segment as a sentence-transformers model makes it: its pooling mode over every token its
    attention mask keeps ([CLS]/[SEP] included), then L2 normalisation if the model normalises.

    Args:
        token_states: `(segments, tokens, dim)` a backbone's token states.
        attention_mask: `(segments, tokens)` 1 for real tokens (padding at the end).
        pooling: `{"mode": one of SENTENCE_POOLING_MODES, "normalize": bool}` (a backbone record's `sentence_pooling`).

    Returns:
        `(segments, dim)`.
    """
    mode = pooling["mode"]
    mask = attention_mask.to(token_states.dtype).unsqueeze(-1)  # (segments, tokens, 1)
    lengths = attention_mask.sum(dim=1)  # (segments,)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = (token_states * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1e-9)
        pooled = total / (count if mode == "mean" else count.sqrt())
    elif mode == "max":
        pooled = token_states.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    elif mode == "cls":
        pooled = token_states[:, 0]
    elif mode == "lasttoken":
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, token_states.shape[-1])
        pooled = token_states.gather(1, last).squeeze(1)
    elif mode == "weightedmean":
        weights = torch.arange(1, token_states.shape[1] + 1, device=token_states.device, dtype=token_states.dtype)
        weighted = mask * weights.view(1, -1, 1)
        pooled = (token_states * weighted).sum(dim=1) / weighted.sum(dim=1).clamp(min=1e-9)
    else:
        raise ValueError(f"unknown sentence pooling mode {mode!r}; choose one of: {', '.join(SENTENCE_POOLING_MODES)}")
    if pooling.get("normalize"):
        pooled = nn.functional.normalize(pooled, p=2, dim=-1)
    return pooled


def infer_unit_type(tokenizer=None, config: PreTrainedConfig | None = None) -> str:
    """Whether a backbone reads proteins (`"residue"`) or text (`"word"`): its family's unit type when the record
    states one (ESM-2, static word vectors), else guessed from the tokenizer.

    A protein tokenizer's ordinary tokens are single letters (possibly with a word-start marker), so a vocabulary
    with no multi-letter ordinary token is a residue vocabulary.
    """
    known = backbone_family(config.model_type if config is not None else None).unit_type
    if known is not None:
        return known
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

    def init_block_weights(self) -> None:
        """Equal layer weights and unit scale (skipped for weights a checkpoint loaded)."""
        init.zeros_(self.layer_scores)
        init.ones_(self.scale)

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
