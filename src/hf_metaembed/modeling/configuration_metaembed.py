"""MetaEmbed configuration: the single source of truth from which every layer of a MetaEmbed model is built."""

import dataclasses
import difflib
import json
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from .fusion import FUSIONS
from .heads import HEADS
from .pairing import PAIRINGS
from .pooling import POOLERS
from .static_vectors import StaticVectorsConfig
from .windowing import check_window_policy

UNIT_TYPES = ("residue", "word")
LEVELS = ("unit", "sequence")
GATINGS = ("softmax", "sigmoid")
SUBWORD_POOLINGS = ("mean", "first")
SIDE_COMBINES = ("concat", "add", "mean")
EC_MODES = ("token", "pooled")


def _check_choice(value: Any, choices: tuple, field: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {field} {value!r}; choose one of: {', '.join(map(str, choices))}")


def backbone_config_from_dict(config_dict: dict) -> PreTrainedConfig:
    """Rebuild one backbone's config from the dict stored in `MetaEmbedConfig.backbone_configs`."""
    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise ValueError("a stored backbone config has no `model_type`; re-create the model with `from_backbones`")
    if model_type == StaticVectorsConfig.model_type:
        return StaticVectorsConfig(**config_dict)
    return AutoConfig.for_model(model_type, **config_dict)


def backbone_hidden_size(config: PreTrainedConfig) -> int:
    """Width of a backbone's hidden states (`d_model` for T5-family encoders)."""
    for name in ("hidden_size", "d_model", "dim"):
        size = getattr(config, name, None)
        if isinstance(size, int):
            return size
    raise ValueError(f"cannot tell the hidden size of a {config.model_type!r} backbone from its config")


def backbone_num_layers(config: PreTrainedConfig) -> int:
    """Number of transformer layers; the backbone gives this many hidden states plus its embedding output."""
    for name in ("num_hidden_layers", "num_layers", "n_layers"):
        layers = getattr(config, name, None)
        if isinstance(layers, int):
            return layers
    return 0


def _storable(config: PreTrainedConfig | dict) -> dict:
    """A backbone config as the JSON-safe dict that is saved (labels and versions do not describe a backbone)."""
    config_dict = config.to_dict() if isinstance(config, PreTrainedConfig) else dict(config)
    for key in ("id2label", "label2id", "transformers_version"):
        config_dict.pop(key, None)
    return json.loads(json.dumps(config_dict))


class MetaEmbedConfig(PreTrainedConfig):
    r"""Configuration of a MetaEmbed model: which backbones it holds and how their states are fused and used.

    Backbones:
        backbone_configs (`list[dict]`): each backbone's own config as a dict with its `model_type` (rebuilt with
            `AutoConfig.for_model`). Filled by `from_backbones`.
        backbone_names (`list[str]`): Hub id or local path of each backbone, used to fetch backbone weights when the
            model was saved without them (`save_backbone_weights=False`).
        backbone_revisions (`list[str | None]`): revision of each backbone on the Hub.
        backbone_unit_types (`list[str]`): `"residue"` (protein backbones) or `"word"` (text backbones) per backbone.
        backbone_layers (`list[str | int]`): which hidden layer of each backbone feeds fusion: `"last"`, an index
            into the backbone's hidden states (0 = embeddings, negative counts from the end), or `"mix"`, a learned
            softmax-weighted scalar mix of all layers.
        freeze_backbones (`bool`, defaults to `True`): backbones get no gradients and stay in eval mode.
        save_backbone_weights (`bool`, defaults to `True`): `False` saves only fusion and head weights plus the
            backbone references (a small checkpoint); loading then fetches the backbones from their names.

    Fusion:
        fusion (`str`, defaults to `"dme"`): one of `list_fusions()`: concat, mean, dme, cdme, attention.
        fusion_dim (`int`, *optional*): common projection size; defaults to the smallest backbone hidden size.
        gating (`str`, defaults to `"softmax"`): `"softmax"` over backbones or an independent `"sigmoid"` each.
        fusion_activation (`str`, *optional*): `"relu"` after fusion, or None.
        fusion_dropout (`float`, defaults to 0.0): dropout after fusion.
        fusion_num_heads (`int`, defaults to 1): heads of the `attention` fusion.
        cdme_hidden_size (`int`, defaults to 2): BiLSTM size per direction of `cdme`.
        level (`str`, defaults to `"unit"`): `"unit"` fuses per residue/word then pools; `"sequence"` pools each
            backbone's tokens then fuses the vectors (backbones with different unit types may only mix here).
        subword_pooling (`str`, defaults to `"mean"`): how a unit's tokens make its state: `"mean"` or `"first"`.
        pooling (`str`, defaults to `"mean"`): one of `list_poolings()`: mean, max, attention.
        pool_special_tokens (`bool`, defaults to `False`): at `level="sequence"`, include special tokens such as
            [CLS]/[SEP] in each backbone's pooling (as sentence-transformers' mean pooling does).

    Pairs of sides (multi-chain complexes):
        architecture (`str`, defaults to `"single"`): one of `list_architectures()`: single, sc, ec, hp, pad.
        chain_pooling (`str`, defaults to `"attention"`): `hp` pooling of chains within a side.
        side_combine (`str`, defaults to `"concat"`): `hp` combination of the two sides: concat, add or mean.
        ec_mode (`str`, defaults to `"token"`): `ec` joins unit sequences (`"token"`) or pooled vectors (`"pooled"`).
        pad_shared_attention (`bool`, defaults to `True`): `pad` uses one cross-attention for both directions.
        pad_num_heads (`int`, defaults to 4): heads of `pad`'s cross-attention.

    Long sequences (see docs/RELIABILITY.md):
        window_size (`int` or `list[int | None]`, *optional*): read segments longer than this many units (residues or
            words) in sliding windows of this many units, each with the backbone's own special tokens, and stitch the
            states back to one per token; a list gives one size per backbone (None: that backbone reads whole
            segments). None (default): no windows; the processor rejects inputs longer than a backbone accepts.
        window_overlap (`int`, *optional*): units shared by consecutive windows; defaults to `window_size // 4`.
        window_combine (`str`, defaults to `"center"`): state of a unit seen by several windows: `"center"` from the
            window where it is farthest from a cut edge, `"mean"` over those windows, or `"first"` window's.

    Head:
        head (`str`, defaults to `"linear"`): one of `list_heads()`: linear, mlp, convbert.
        head_hidden_size (`int`, *optional*): hidden size of the `mlp` head (defaults to the pooled size).
        head_dropout (`float`, defaults to 0.1): dropout before the output layer.
        convbert_num_heads, convbert_kernel_size, convbert_dropout, convbert_attention_dropout: ConvBERT head settings
            (8 heads, kernel 7, dropout 0.2, attention dropout 0.1; intermediate size is half the unit size).
        num_labels, problem_type: as in every `transformers` config.
    """

    model_type = "metaembed"
    # outputs `Trainer` leaves out of predictions (it reads this from the config), so `compute_metrics` gets logits
    keys_to_ignore_at_inference = ["fusion_weights", "pooler_output", "unit_mask", "backbone_states"]

    backbone_configs: list | None = None
    backbone_names: list | None = None
    backbone_revisions: list | None = None
    backbone_unit_types: list | None = None
    backbone_layers: list | None = None
    freeze_backbones: bool = True
    save_backbone_weights: bool = True
    fusion: str = "dme"
    fusion_dim: int | None = None
    gating: str = "softmax"
    fusion_activation: str | None = None
    fusion_dropout: float = 0.0
    fusion_num_heads: int = 1
    cdme_hidden_size: int = 2
    level: str = "unit"
    subword_pooling: str = "mean"
    pooling: str = "mean"
    pool_special_tokens: bool = False
    architecture: str = "single"
    chain_pooling: str = "attention"
    side_combine: str = "concat"
    ec_mode: str = "token"
    pad_shared_attention: bool = True
    pad_num_heads: int = 4
    window_size: int | list | None = None
    window_overlap: int | None = None
    window_combine: str = "center"
    head: str = "linear"
    head_hidden_size: int | None = None
    head_dropout: float = 0.1
    convbert_num_heads: int = 8
    convbert_kernel_size: int = 7
    convbert_dropout: float = 0.2
    convbert_attention_dropout: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs) -> None:
        self.backbone_configs = [_storable(config) for config in (self.backbone_configs or [])]
        count = len(self.backbone_configs)
        self.backbone_names = list(self.backbone_names or [None] * count)
        self.backbone_revisions = list(self.backbone_revisions or [None] * count)
        self.backbone_unit_types = list(self.backbone_unit_types or ["word"] * count)
        self.backbone_layers = list(self.backbone_layers or ["last"] * count)
        super().__post_init__(**kwargs)
        self.check_settings()

    def check_settings(self) -> None:
        """Raise a `ValueError` naming the field and the valid choices for any impossible setting."""
        count = len(self.backbone_configs)
        for field in ("backbone_names", "backbone_revisions", "backbone_unit_types", "backbone_layers"):
            if len(getattr(self, field)) != count:
                raise ValueError(f"{field} has {len(getattr(self, field))} entries for {count} backbone configs")
        FUSIONS.check(self.fusion, "fusion")
        POOLERS.check(self.pooling, "pooling")
        POOLERS.check(self.chain_pooling, "chain_pooling")
        PAIRINGS.check(self.architecture, "architecture")
        HEADS.check(self.head, "head")
        _check_choice(self.level, LEVELS, "level")
        _check_choice(self.gating, GATINGS, "gating")
        _check_choice(self.subword_pooling, SUBWORD_POOLINGS, "subword_pooling")
        _check_choice(self.side_combine, SIDE_COMBINES, "side_combine")
        _check_choice(self.ec_mode, EC_MODES, "ec_mode")
        _check_choice(self.fusion_activation, (None, "relu"), "fusion_activation")
        for index, unit_type in enumerate(self.backbone_unit_types):
            _check_choice(unit_type, UNIT_TYPES, f"backbone_unit_types[{index}]")
        for index, layer in enumerate(self.backbone_layers):
            if not (layer in ("last", "mix") or (isinstance(layer, int) and not isinstance(layer, bool))):
                raise ValueError(
                    f"unknown layer {layer!r} for backbone {index}; choose 'last', 'mix' or an integer index"
                )
        if self.level == "unit" and len(set(self.backbone_unit_types)) > 1:
            kinds = ", ".join(f"{i} ({self.backbone_names[i]}): {t}" for i, t in enumerate(self.backbone_unit_types))
            raise ValueError(
                f"backbones align on different units ({kinds}): protein and text backbones cannot be fused per "
                "unit; use level='sequence' to fuse their pooled vectors instead"
            )
        if self.architecture == "pad" and self.level != "unit":
            raise ValueError("architecture 'pad' attends between residues and needs level='unit'")
        if self.fusion_dim is not None and self.fusion_dim < 1:
            raise ValueError(f"fusion_dim must be a positive integer, got {self.fusion_dim}")
        if isinstance(self.window_size, tuple):
            self.window_size = list(self.window_size)
        check_window_policy(self.window_size, self.window_overlap, self.window_combine, count)
        if count:
            self._check_head_counts()

    def _check_head_counts(self) -> None:
        """Attention heads must divide the size they split, checked here so a bad config fails before any layer
        (or backbone tensor) is built."""
        dims = self.backbone_hidden_sizes
        fusion_size = self.fusion_dim or min(dims)
        unit_size = sum(dims) if self.fusion == "concat" else fusion_size
        for used, field, size, what in (
            (self.fusion == "attention", "fusion_num_heads", fusion_size, "fusion size (fusion_dim)"),
            (self.architecture == "pad", "pad_num_heads", unit_size, "unit size"),
            (self.head == "convbert", "convbert_num_heads", unit_size, "unit size"),
        ):
            heads = getattr(self, field)
            if used and (not isinstance(heads, int) or heads < 1 or size % heads):
                divisors = ", ".join(str(h) for h in range(1, min(size, 32) + 1) if size % h == 0)
                raise ValueError(f"{field}={heads} must divide the {what} {size}; choose one of: {divisors}")

    @property
    def num_backbones(self) -> int:
        return len(self.backbone_configs)

    def get_backbone_config(self, index: int) -> PreTrainedConfig:
        """The config of backbone `index`, rebuilt from its stored dict."""
        return backbone_config_from_dict(self.backbone_configs[index])

    @property
    def backbone_hidden_sizes(self) -> list[int]:
        return [backbone_hidden_size(self.get_backbone_config(i)) for i in range(self.num_backbones)]


def check_setting_names(names, where: str) -> None:
    """Raise a `TypeError` for names that are not `MetaEmbedConfig` settings (a typo such as `fusoin="cdme"` would
    otherwise be stored as a stray attribute while the default fusion is used), suggesting the closest ones."""
    known = {field.name for field in dataclasses.fields(MetaEmbedConfig)} | {"num_labels", "pad_token_id"}
    unknown = sorted(name for name in names if name not in known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{where} got unknown setting(s) {', '.join(hints)}; the settings are MetaEmbedConfig's fields "
            "(see help(MetaEmbedConfig))"
        )


__all__ = [
    "MetaEmbedConfig",
    "check_setting_names",
    "backbone_config_from_dict",
    "backbone_hidden_size",
    "backbone_num_layers",
]
