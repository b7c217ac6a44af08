"""Backbone families: one record per family of backbones, looked up by the `model_type` of a backbone's config.

Everything that differs between backbone families (the class a backbone loads with, its unit type, the token between
joined chains, whether its config bounds the tokens it reads, its LoRA targets, its tiny test builders) is one
`BackboneFamily` record, looked up with `backbone_family`. A model type without a record gets `GENERIC_FAMILY`:
`AutoModel`'s class, a unit type guessed from the tokenizer, peft's LoRA table. A new family is one
`register_backbone_family(BackboneFamily(...))` call, from any module.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and transformers only.
"""

from collections.abc import Callable
from dataclasses import dataclass

from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding, PreTrainedConfig, PreTrainedModel

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
        causal: a decoder read as an encoder (Qwen, Llama, Mistral, GPT-2): each token sees only the tokens before
            it, so at `level="unit"` a unit's state is built from its left context alone. The reader gives it
            position ids counted from its attention mask (so left and right padding read alike), and at
            `level="sequence"` pools every real token but the prompt's (the appended EOS included: `last_token`
            then gives the EOS state, the decoder embedders' recipe), whatever `pool_special_tokens` says.
        append_eos: the processor ends every segment with the tokenizer's EOS token when its own special-token frame
            does not (decoder embedders pool the EOS state; their tokenizers add no EOS by themselves).
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
    causal: bool = False
    append_eos: bool = False

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

# ModernBERT: an encoder with rotary positions and alternating local/global attention; transformers runs it unpadded
# (its tokens packed, padding dropped) only under flash attention, and the reader's attention mask serves both paths
register_backbone_family(
    BackboneFamily(
        name="modernbert",
        model_types=("modernbert",),
        lora_targets=("Wqkv", "Wo"),
        tiny_builders=("build_tiny_modernbert",),
    )
)
# decoder models read as encoders through AutoModel (the bare decoder, no LM head), as decoder embedding models are
# (Qwen3-Embedding, gte-Qwen2, E5-Mistral, SGPT); one record per family, the same recipe for each
DECODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
for _name, _lora, _builder in (
    ("qwen2", DECODER_LORA_TARGETS, "build_tiny_qwen2"),
    ("qwen3", DECODER_LORA_TARGETS, "build_tiny_qwen3"),
    ("llama", DECODER_LORA_TARGETS, "build_tiny_llama"),
    ("mistral", DECODER_LORA_TARGETS, "build_tiny_mistral"),
    # GPT-2 fuses its query, key and value projections into one Conv1D (`c_attn`), its output is `c_proj`
    ("gpt2", ("c_attn",), "build_tiny_gpt2"),
):
    register_backbone_family(
        BackboneFamily(
            name=_name,
            model_types=(_name,),
            unit_type="word",
            chain_separator=("eos_token_id",),
            lora_targets=_lora,
            tiny_builders=(_builder,),
            causal=True,
            append_eos=True,
        )
    )
