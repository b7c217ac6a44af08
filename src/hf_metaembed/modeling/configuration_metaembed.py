"""MetaEmbed configuration: the single source of truth from which every layer of a MetaEmbed model is built."""

import dataclasses
import difflib
import re
from typing import Any

from transformers import PreTrainedConfig

from .backbone_families import UNIT_TYPES
from .backbone_records import (
    LAYER_COMBINES,
    LEGACY_BACKBONE_LISTS,
    backbone_config_from_dict,
    backbone_hidden_size,
    backbone_num_layers,
    backbone_records,
    check_layer,
    read_size,
    record_field,
)
from .fitted_autoencoded import AutoencodedFusion  # noqa: F401  (registers the fitted fusions wherever a config loads)
from .fitted_fusion import FittedFusion  # noqa: F401
from .fitted_lle import LocallyLinearFusion  # noqa: F401
from .fusion import FUSIONS
from .heads import HEADS
from .losses import LOSSES
from .pairing import PAIRINGS
from .pairing_perceiver import PerceiverPairing  # noqa: F401  (registers architecture "perceiver")
from .pooling import POOLERS, check_token_pooling
from .presets import REFERENCE_PRESETS
from .registry import block_config_aliases, block_config_fields, resolve_config_aliases
from .registry import check_choice as _check_choice
from .unit_encoders import UNIT_ENCODERS
from .windowing import check_window_policy

LEVELS = ("unit", "sequence")
SUBWORD_POOLINGS = ("mean", "first")
# the version of the config layout; a stored config without it was written by release 0.1 (see `from_dict`); 3 is
# release 0.2 (`backbone_weights_saved`, the reading stage's weights under `reader.`)
CONFIG_FORMAT = 3
# release 0.1's checkpoint keys of the reading stage's weights, and where 0.2 keeps them
LEGACY_KEYS = {
    r"(?<!reader\.)layer_mixes\.": "reader.layer_mixes.",
    r"(?<!reader\.)token_poolers\.": "reader.token_poolers.",
}
# one line each for the study's reference settings (presets.py, docs/PAPER.md) and for release 0.1's modules
PRESETS = {**REFERENCE_PRESETS, "v0.1": {"pooling": "mean", **block_config_fields(legacy=True)}}


class MetaEmbedConfig(PreTrainedConfig):
    r"""Configuration of a MetaEmbed model: which backbones it holds and how their states are fused and used.

    Backbones:
        backbones (`list[dict]`): one record per backbone, in order (filled by `from_backbones`), with the keys
            - `name` (`str`, *optional*): Hub id or local path, used to fetch the backbone's weights when the model
              was saved without them (`save_backbone_weights=False`);
            - `revision` (`str`, *optional*): its revision on the Hub;
            - `unit_type` (`str`, defaults to `"word"`): `"residue"` (protein) or `"word"` (text); `from_backbones`
              takes it from the backbone's family record (`backbone_family`) or guesses it from the tokenizer;
            - `layer` (`str | int | list[int]`, defaults to `"last"`): the hidden layer(s) that feed fusion: `"last"`,
              an index into the backbone's hidden states (0 = embeddings, negative counts from the end), a list of
              indices combined by `layer_combine`, `"mix"` (a learned softmax-weighted scalar mix of all layers,
              each layer-normalised first with `layer_mix_norm`), or `"attention"` (each unit weighs all layers
              with its own softmax scores, w . h_l + b);
            - `window_size` (`int`, *optional*): the window this backbone reads long segments in; it mirrors the
              top-level `window_size` (see Long sequences), which wins when both are given;
            - `config` (`dict`): the backbone's own config with its `model_type`, rebuilt by its family record
              (`AutoConfig.for_model` by default);
            - `fingerprint` (`dict`, *optional*): written by a save without backbone weights: `{"sha256", "dtype"}` of
              the backbone's tensors, which `from_pretrained` checks against the weights it finds (None otherwise,
              and in configs saved before fingerprints existed);
            - `sentence_pooling` (`dict`, *optional*): for a sentence-transformers backbone, `{"mode", "normalize"}`
              read from its own files by `from_backbones` (unless `pooling` or `pool_special_tokens` is given): at
              `level="sequence"` the backbone's vector is then made as `SentenceTransformer.encode` makes it (that
              mode over every real token, L2-normalised if the model normalises) instead of by `pooling`.
        backbone_configs, backbone_names, backbone_revisions, backbone_unit_types, backbone_layers (`list`): release
            0.1's parallel lists, one field of the records each. Accepted as keyword arguments and in stored configs
            (a list given beside `backbones` overrides that field of every record), readable and assignable as
            attributes; a saved config stores `backbones` only.
        backbone_poolings (`list`, *optional*): at `level="sequence"`, one pooling per backbone (a name from
            `list_poolings()`, or None for the default: a sentence-transformers backbone's own pooling, a decoder's
            last token, else `pooling`), e.g. `["cls", "mean"]`; stored in each backbone record as `pooling`.
        layer_combine (`str`, defaults to `"mean"`): how a backbone reading a list of layers combines them: `"mean"`
            or `"concat"` (that backbone's width becomes the hidden size times the layers).
        layer_mix_norm (`bool`, defaults to `False`): `"mix"` layer-normalises each layer (per unit, no affine
            weights; AllenNLP's `do_layer_norm` normalises over the whole batch instead) before mixing.
        freeze_backbones (`bool`, defaults to `True`): backbones get no gradients and stay in eval mode.
        backbone_weights_saved (`bool`, *optional*): in a saved config, whether that folder holds the backbone
            weights (None in a config that was not read from a folder).
        save_backbone_weights (`bool`, defaults to `True`): how this model saves when `save_pretrained` is not told
            (`save_pretrained(d, save_backbone_weights=False)` decides for that one call and changes nothing here):
            `False` saves only fusion and head weights plus the backbone references (a small checkpoint), e.g. every
            `Trainer` checkpoint. In a saved config it says whether that folder holds the backbone weights; a model
            loaded from it saves in full again unless told otherwise.

    Stages (each a registry: the field names a block, and the block declares its own settings, listed below):
        read backbones -> `fusion` -> `unit_encoder` -> `architecture` (pooling, pairing) -> `head` (`loss`).

    Fusion:
        fusion (`str`, defaults to `"dme"`): one of `list_fusions()`: concat, mean, average, dme, cdme, attention, and
            the fitted svd, pca, 1ton, gcca, daeme, caeme, aaeme, lle (fitted_fusion.py, fitted_autoencoded.py,
            fitted_lle.py; fit with `fit_fusion`).
        fusion_dim (`int`, *optional*): common projection size; defaults to the smallest backbone hidden size.
        gating (`str`, defaults to `"softmax"`): dme/cdme: `"softmax"` over backbones or an independent `"sigmoid"`.
        fusion_activation (`str`, *optional*, defaults to `"relu"`): `"relu"` after a projecting fusion (DME's
            reference), or None (release 0.1's configs, which lack the field, load with None).
        fusion_dropout (`float`, defaults to 0.0): dropout after a projecting fusion.
        fusion_num_heads (`int`, defaults to 1): heads of the `attention` fusion.
        cdme_hidden_size (`int`, defaults to 2): BiLSTM size per direction of `cdme`.
        level (`str`, defaults to `"unit"`): `"unit"` fuses per residue/word then pools; `"sequence"` pools each
            backbone's tokens then fuses the vectors (backbones with different unit types may only mix here).
        subword_pooling (`str`, defaults to `"mean"`): how a unit's tokens make its state: `"mean"` or `"first"`.
        pooling (`str`, *optional*): one of `list_poolings()`: mean, max, attention; how units (residues, words) are
            pooled. Defaults to the architecture's choice: `"mean"` for `single` (as sentence-transformers pools),
            `"attention"` for the pair architectures.
        pool_special_tokens (`bool`, defaults to `False`): pool special tokens with the units, as the study's
            reference and sentence-transformers' mean pooling do: at `level="sequence"` each backbone's pooling
            includes its [CLS]/[SEP]; at `level="unit"` each segment's special tokens and chain separators become
            units of their own (before the first residue, between chains, after the last; special_units.py), which
            then run through fusion, the unit encoder and pooling with the residues.

    Unit encoder (refines fused unit states before pooling):
        unit_encoder (`str`, defaults to `"none"`): one of `list_unit_encoders()`: none, convbert.
        convbert_num_heads, convbert_kernel_size, convbert_dropout, convbert_attention_dropout: ConvBERT settings
            (8 heads, kernel 7, dropout 0.2, attention dropout 0.1; intermediate size is half the unit size).
        shared_unit_encoder (`bool`, defaults to `True`): one unit encoder for both sides; `False` gives the ligand's
            and the receptor's segments their own weights (the reference's `shared_convbert: false`, accepted under
            that name too), for architectures that encode each side's segments alone (hp, pad, perceiver).

    Pairs of sides (multi-chain complexes; defaults follow the study's reference code, docs/PAPER.md):
        architecture (`str`, defaults to `"single"`): one of `list_architectures()`: single, sc, ec, hp, pad.
        chain_pooling (`str`, defaults to `"attention"`): `hp` pooling of chains within a side.
        side_combine (`str`, defaults to `"concat"`): `hp` combination of the two sides: concat, add or mean (also
            accepted as `aggregation_method`, the reference's name; stored as `side_combine`).
        hp_ffn (`str`, defaults to `"silu"`): `hp` block after the sides are combined: Linear-SiLU-Linear, or "none".
        hp_ffn_bias (`bool`, defaults to `False`), hp_separate_side_poolers (`bool`, defaults to `True`).
        ec_mode (`str`, defaults to `"token"`): `ec` joins unit sequences (`"token"`) or pooled vectors (`"pooled"`).
        ec_encode_joined (`bool`, defaults to `True`): `ec` runs the unit encoder over the two sides joined.
        ec_ffn (`str`, defaults to `"silu"`): `ec` Linear-SiLU block before the output layer, or "none".
        pad_num_heads (`int`, defaults to 8), pad_shared_attention (`bool`, defaults to `True`), pad_attention_bias
            (`bool`, defaults to `False`): `pad`'s cross-attention.
        pad_ffn (`str`, defaults to `"silu"`): `pad` block on the added side vectors: "silu", "residual" (release
            0.1's GELU residual block with LayerNorm) or "none"; pad_ffn_multiplier (`int`, defaults to 1).
        preset (`str`, *optional*): `"paper"` (the reference's current training config: attention pooling, poolers
            shared by the sides, no ConvBERT), `"paper-2025-03-09"` (its earlier config: ConvBERT, mean pooling,
            poolers per side) or `"v0.1"` (release 0.1's modules); explicit arguments override the preset's values.

    Long sequences (see docs/RELIABILITY.md):
        window_size (`int` or `list[int | None]`, *optional*): read segments longer than this many units (residues or
            words) in sliding windows of this many units, each with the backbone's own special tokens, and stitch the
            states back to one per token; a list gives one size per backbone (None: that backbone reads whole
            segments). None (default): no windows; the processor rejects inputs longer than a backbone accepts.
        window_overlap (`int`, *optional*): units shared by consecutive windows; defaults to `window_size // 4`.
        window_combine (`str`, defaults to `"center"`): state of a unit seen by several windows: `"center"` from the
            window where it is farthest from a cut edge, `"mean"` over those windows, or `"first"` window's.

    Embeddings:
        truncate_dim (`int`, *optional*): keep the first this many coordinates of the pooled vector (a model trained
            with `hf_metaembed.compact.MatryoshkaLoss` keeps most of its quality); also per call, `forward(...,
            truncate_dim=64)`, and at loading, `from_pretrained(folder, truncate_dim=64)`. A head reads the truncated
            vector zero-padded back to its width (the tied-weight Matryoshka form).
        normalize_embeddings (`bool`, defaults to `False`): L2-normalise the pooled vector (after truncation, so a
            truncated embedding is re-normalised).

    Head:
        head (`str`, defaults to `"linear"`): one of `list_heads()`: linear, mlp (`"convbert"`, release 0.1's name,
            means `head="linear", unit_encoder="convbert"`).
        head_hidden_size (`int`, *optional*): hidden size of the `mlp` head (defaults to the pooled size).
        head_dropout (`float`, defaults to 0.1): dropout before the output layer.
        loss (`str`, defaults to `"mse"`): regression loss, one of `list_losses()`: mse, list_mle, margin_ranking
            (ranking_margin, defaults to 0.5).
        num_labels, problem_type: as in every `transformers` config.

    Any other setting a registered block declares (`config_fields`) is accepted, saved and reloaded the same way.
    """

    model_type = "metaembed"
    # outputs `Trainer` leaves out of predictions (it reads this from the config), so `compute_metrics` gets logits
    keys_to_ignore_at_inference = ["fusion_weights", "pooler_output", "unit_mask", "backbone_states"]

    backbones: list | None = None
    freeze_backbones: bool = True
    save_backbone_weights: bool = True
    backbone_weights_saved: bool | None = None
    fusion: str = "dme"
    fusion_dim: int | None = None
    level: str = "unit"
    subword_pooling: str = "mean"
    pooling: str | None = None
    pool_special_tokens: bool = False
    unit_encoder: str = "none"
    architecture: str = "single"
    window_size: int | list | None = None
    window_overlap: int | None = None
    window_combine: str = "center"
    head: str = "linear"
    loss: str = "mse"
    layer_combine: str = "mean"
    layer_mix_norm: bool = False
    truncate_dim: int | None = None
    normalize_embeddings: bool = False
    initializer_range: float = 0.02
    metaembed_config_format: int = CONFIG_FORMAT

    def __post_init__(self, **kwargs) -> None:
        legacy = {field: kwargs.pop(field) for field in LEGACY_BACKBONE_LISTS if field in kwargs}
        self.backbones = backbone_records(self.backbones, legacy)
        if self.window_size is None and any(record["window_size"] is not None for record in self.backbones):
            self.window_size = [record["window_size"] for record in self.backbones]
        self._mirror_windows()
        self._settle_blocks(kwargs)
        super().__post_init__(**kwargs)
        self.check_settings()

    def _settle_blocks(self, kwargs: dict) -> None:
        """Fill in the settings every registered block declares, apply the preset, and resolve release 0.1's names.

        Called with the keyword arguments not declared above (block settings arrive there), before they are stored.
        """
        resolve_config_aliases(kwargs)  # `aggregation_method=` (the reference's name) is stored as `side_combine`
        preset = kwargs.pop("preset", None)  # applied once, never stored: the settings it chose are
        if preset is not None:
            _check_choice(preset, tuple(PRESETS), "preset")
            declared = type(self).__dataclass_fields__
            for field, value in PRESETS[preset].items():
                if field not in declared:  # a block's setting: arrives in kwargs when given explicitly
                    kwargs.setdefault(field, value)
                elif getattr(self, field) == declared[field].default:  # a declared field left at its default
                    setattr(self, field, value)
        if self.head == "convbert":  # release 0.1's name for a linear head over ConvBERT-refined units
            self.head = "linear"
            self.unit_encoder = "convbert"
        for field, default in block_config_fields().items():
            kwargs.setdefault(field, default)
        if self.pooling is None:
            self.pooling = PAIRINGS.get_class(self.architecture).default_pooling

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "MetaEmbedConfig":
        """`PreTrainedConfig.from_dict`; a config saved by release 0.1 (no `metaembed_config_format`) gets release
        0.1's values for the settings added since, so old checkpoints compute exactly what they computed."""
        stored_format = config_dict.get("metaembed_config_format")
        if stored_format is None:
            config_dict = {**block_config_fields(legacy=True), **config_dict}
            if config_dict.get("level", "unit") == "unit":  # 0.1 read pool_special_tokens at sequence level only
                config_dict["pool_special_tokens"] = False
        # a saved folder's `save_backbone_weights` says what the folder holds; the model loaded from it saves in full
        # unless told otherwise (release 0.1's behaviour), and `backbone_weights_saved` keeps what the folder held
        held = config_dict.get("backbone_weights_saved")
        if held is None and (stored_format or 0) < 3:
            held = config_dict.get("save_backbone_weights", True)
        if held is not None:
            config_dict = {**config_dict, "backbone_weights_saved": bool(held), "save_backbone_weights": True}
        config_dict = {**config_dict, "metaembed_config_format": CONFIG_FORMAT}
        return super().from_dict(config_dict, **kwargs)

    def check_settings(self) -> None:
        """Raise a `ValueError` naming the field and the valid choices for any impossible setting."""
        count = len(self.backbones)
        for index, record in enumerate(self.backbones):
            if not isinstance(record.get("config"), dict) or "model_type" not in record["config"]:
                raise ValueError(
                    f"backbones[{index}] ({record.get('name')}) has no config with a model_type; re-create the model "
                    "with from_backbones"
                )
        _check_choice(self.level, LEVELS, "level")
        if self.truncate_dim is not None and (
            not isinstance(self.truncate_dim, int) or isinstance(self.truncate_dim, bool) or self.truncate_dim < 1
        ):
            raise ValueError(f"truncate_dim must be a positive integer or None, got {self.truncate_dim!r}")
        _check_choice(self.subword_pooling, SUBWORD_POOLINGS, "subword_pooling")
        blocks = self.blocks()
        for index, unit_type in enumerate(self.backbone_unit_types):
            _check_choice(unit_type, UNIT_TYPES, f"backbone_unit_types[{index}]")
        for index, layer in enumerate(self.backbone_layers):
            check_layer(layer, index)
        _check_choice(self.layer_combine, LAYER_COMBINES, "layer_combine")
        for index, pooling in enumerate(self.backbone_poolings):
            if pooling is not None:
                check_token_pooling(pooling, index, self.level)
        if self.level == "unit" and len(set(self.backbone_unit_types)) > 1:
            kinds = ", ".join(f"{i} ({self.backbone_names[i]}): {t}" for i, t in enumerate(self.backbone_unit_types))
            raise ValueError(
                f"backbones align on different units ({kinds}): protein and text backbones cannot be fused per "
                "unit; use level='sequence' to fuse their pooled vectors instead"
            )
        if self.fusion_dim is not None and self.fusion_dim < 1:
            raise ValueError(f"fusion_dim must be a positive integer, got {self.fusion_dim}")
        if isinstance(self.window_size, tuple):
            self.window_size = list(self.window_size)
        check_window_policy(self.window_size, self.window_overlap, self.window_combine, count)
        # every selected block checks its own settings, before any layer (or backbone tensor) is built
        dims = self.backbone_read_sizes if count else []
        for block in blocks.values():
            block.check_config(self, dims)

    def blocks(self) -> dict[str, type]:
        """The block class selected by each stage's config field (`fusion`, `pooling`, ...), checked by name."""
        return {
            "fusion": FUSIONS.get_class(self.fusion),
            "unit_encoder": UNIT_ENCODERS.get_class(self.unit_encoder),
            "pooling": POOLERS.get_class(self.pooling),
            "architecture": PAIRINGS.get_class(self.architecture),
            "head": HEADS.get_class(self.head),
            "loss": LOSSES.get_class(self.loss),
        }

    backbone_configs = record_field("config")
    backbone_names = record_field("name")
    backbone_revisions = record_field("revision")
    backbone_unit_types = record_field("unit_type")
    backbone_layers = record_field("layer")
    backbone_poolings = record_field("pooling")

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        if key == "window_size" and self.__dict__.get("_post_init_done"):
            self._mirror_windows()

    def _mirror_windows(self) -> None:
        """Copy each backbone's resolved window (from the top-level `window_size`) into its record."""
        sizes = self.window_size
        if not isinstance(sizes, list | tuple):
            sizes = [sizes] * len(self.backbones)
        for record, size in zip(self.backbones, sizes):
            record["window_size"] = size

    @property
    def num_backbones(self) -> int:
        return len(self.backbones)

    def get_backbone_config(self, index: int) -> PreTrainedConfig:
        """The config of backbone `index`, rebuilt from its stored dict."""
        return backbone_config_from_dict(self.backbones[index]["config"])

    @property
    def backbone_hidden_sizes(self) -> list[int]:
        return [backbone_hidden_size(self.get_backbone_config(i)) for i in range(self.num_backbones)]

    @property
    def backbone_read_sizes(self) -> list[int]:
        """Width of each backbone's states as fusion receives them: its hidden size, times the layers a list of
        layers concatenates (`layer_combine="concat"`)."""
        return [
            read_size(layer, size, self.layer_combine)
            for layer, size in zip(self.backbone_layers, self.backbone_hidden_sizes)
        ]


def legacy_key_mapping() -> dict[str, str]:
    """`from_pretrained(key_mapping=...)` for checkpoints saved before release 0.2 (keys already in 0.2's layout
    match none of the patterns, so it applies to every checkpoint)."""
    return dict(LEGACY_KEYS)


def rename_legacy_keys(state_dict: dict) -> dict:
    """`state_dict` with release 0.1's keys of the reading stage renamed to 0.2's (`LEGACY_KEYS`)."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in LEGACY_KEYS.items():
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def check_setting_names(names, where: str) -> None:
    """Raise a `TypeError` for names that are not `MetaEmbedConfig` settings (a typo such as `fusoin="cdme"` would
    otherwise be stored as a stray attribute while the default fusion is used), suggesting the closest ones."""
    known = {field.name for field in dataclasses.fields(MetaEmbedConfig)} | {"num_labels", "pad_token_id", "preset"}
    known |= set(block_config_fields()) | set(block_config_aliases()) | set(LEGACY_BACKBONE_LISTS)
    unknown = sorted(name for name in names if name not in known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{where} got unknown setting(s) {', '.join(hints)}; the settings are MetaEmbedConfig's fields and "
            "those its registered blocks declare (see help(MetaEmbedConfig))"
        )


__all__ = [
    "MetaEmbedConfig",
    "check_setting_names",
    "legacy_key_mapping",
    "rename_legacy_keys",
    "backbone_config_from_dict",
    "backbone_hidden_size",
    "backbone_num_layers",
]
