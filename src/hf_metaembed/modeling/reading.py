"""The reading stage: from a processor batch to per-backbone unit states (or one vector per segment).

`BackboneReader` alone owns everything between token ids and fusion: running each backbone (sliding windows past
its length limit; LoRA adapters are part of the backbone module), choosing or mixing its layers, dropping special
tokens (or turning them into units of their own, `pool_special_tokens` at unit level), and aligning sub-word tokens
onto units, or pooling them into one vector per segment at `level="sequence"`. A batch may be padded on either
side. Decoder backbones (family records with `causal=True`) read with position ids counted over their real tokens,
and are causal: at `level="unit"` a unit's state has seen only the units to its left. It is the only place that reads
`level`; what it produces is a `BackboneReading`, and `describe()` says what decides it (the feature cache's
fingerprint and builder ask it instead of re-deriving).

The output of `read_backbones` (before the layer mix) is what the frozen-feature cache stores; `finish` turns it, or
states read back from a cache, into the `BackboneReading` fusion consumes.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

import torch
from torch import nn
from transformers import PreTrainedModel

from .backbone_families import backbone_family
from .input_checks import check_backbone_states
from .layer_menu import LayerAttention, LayerCombine, ScalarMix, layer_combiner, select_layer
from .outputs_metaembed import BackboneReading
from .pooling import SENTENCE_POOLING_MODES, SentencePooler, build_pooler, pool_sentence
from .special_units import with_special_units
from .tokenization_metaembed import PROMPT_TOKEN
from .unit_alignment import align_to_units
from .windowing import backbone_window, check_backbone_inputs, position_limit, windowed_token_states

# bump whenever token-to-unit alignment or layer selection changes what `read_backbones` returns (cache fingerprint)
READING_VERSION = 1
LEVELS = ("unit", "sequence")


class Backbones:
    """The model's backbones handed to the reader as a plain sequence: device-placement hooks (Accelerate's, which move
    a module's inputs to its device) pass it through untouched, where they would try to move a list of modules, and
    a backbone offloaded to disk with them."""

    def __init__(self, backbones) -> None:
        self._backbones = list(backbones)

    def __iter__(self):
        return iter(self._backbones)

    def __len__(self) -> int:
        return len(self._backbones)

    def __getitem__(self, index: int) -> PreTrainedModel:
        return self._backbones[index]


class BackboneReader(nn.Module):
    """The reading stage of a MetaEmbed model (see the module docstring).

    The backbones themselves stay direct children of the model (so Accelerate places each one whole and `post_init`
    sees their no-split blocks); the reader holds what reading learns (layer mixes, token poolers at sequence level)
    and is handed the backbones to run.

    Args:
        config: the model's `MetaEmbedConfig`; read once here.
        num_layers: per backbone, its hidden states count (layers + embeddings), for the `"mix"` layers.
    """

    # its layer mixes and token poolers are listed one by one as trainable blocks (trainable_blocks.py)
    holds_blocks = True

    def __init__(self, config, num_layers: list[int]) -> None:
        super().__init__()
        self.config = config
        # per backbone: a decoder read as an encoder (its family record's `causal`): each token sees only its left
        # context, so at level="unit" a unit's state knows the units before it and none after
        self.causal = [backbone_family(record["config"].get("model_type")).causal for record in config.backbones]
        # per backbone reading several layers, what combines them (state-dict name kept from the scalar mix)
        combiners = {str(i): layer_combiner(config, i, num_layers[i]) for i in range(config.num_backbones)}
        self.layer_mixes = nn.ModuleDict({key: module for key, module in combiners.items() if module is not None})
        if self.per_sequence:
            dims = config.backbone_read_sizes
            self.token_poolers = nn.ModuleList(
                self._token_pooler(record, dim) for record, dim in zip(config.backbones, dims)
            )

    def _token_pooler(self, record: dict, dim: int) -> nn.Module:
        """How one backbone pools its tokens at level="sequence": the pooling the user chose for it
        (`backbone_poolings`), else a sentence-transformers backbone's own, else `pooling`."""
        if record.get("pooling"):
            return build_pooler(record["pooling"], dim)
        if record.get("sentence_pooling"):
            return SentencePooler(record["sentence_pooling"], dim)
        return build_pooler(self.config.pooling, dim)

    @property
    def per_sequence(self) -> bool:
        """Each segment is read into one vector (`level="sequence"`) rather than one state per unit."""
        return self.config.level == "sequence"

    @property
    def special_units(self) -> bool:
        """Special tokens become units of their own (`pool_special_tokens` at unit level, special_units.py)."""
        return self.config.pool_special_tokens and not self.per_sequence

    # ------------------------------------------------------------------------------------------------- reading

    def forward(
        self,
        backbones: Backbones,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_unit_index: torch.Tensor,
        unit_mask: torch.Tensor,
    ) -> BackboneReading:
        """Read a processor batch: `(segments, backbones, tokens)` ids, mask and token-to-unit index, `unit_mask
        (segments, units)`; `backbones` is the model's backbones as a `Backbones` sequence."""
        self.check_token_inputs(input_ids, attention_mask, token_unit_index)
        token_unit_index, unit_mask = self.unit_layout(token_unit_index, attention_mask, unit_mask)
        states = self.read_backbones(backbones, input_ids, attention_mask, token_unit_index, unit_mask.shape[1])
        return self.finish(states, unit_mask)

    def unit_layout(
        self, token_unit_index: torch.Tensor, attention_mask: torch.Tensor, unit_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The units a batch's tokens are read onto: the processor's `token_unit_index (segments, backbones, tokens)`
        and `unit_mask (segments, units)` as they are, or with special units (`special_units`) each special token
        made a unit of its own (more units per segment)."""
        if not self.special_units:
            return token_unit_index, unit_mask
        return with_special_units(token_unit_index, attention_mask, unit_mask)

    def from_states(
        self,
        backbone_states,
        unit_mask,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> BackboneReading:
        """Precomputed states (as `read_backbones` or a feature cache gives them; tensors, numpy arrays or lists)
        checked per backbone (count, shape, width) and cast to `device`/`dtype`, then finished like read ones."""
        mix_layers = {int(index): mix.num_layers for index, mix in self.layer_mixes.items()}
        states, unit_mask = check_backbone_states(self.config, backbone_states, unit_mask, mix_layers, device, dtype)
        return self.finish(states, unit_mask)

    def read_backbones(
        self,
        backbones: list[PreTrainedModel],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_unit_index: torch.Tensor,
        num_units: int,
    ) -> list[torch.Tensor]:
        """Run every backbone and bring its states onto units (or pool them, per sequence): what the cache stores.

        Args:
            input_ids, attention_mask, token_unit_index: `(segments, backbones, tokens)` as `MetaEmbedProcessor`
                returns them.
            num_units: unit slots per segment.

        Returns:
            Per backbone `(segments, units, d_i)` (`(segments, units, layers, d_i)` for a `"mix"` backbone at unit
            level; `(segments, 1, d_i)` per sequence).

        With a window policy (`config.window_size`), each backbone reads segments longer than its window in sliding
        windows of units, all windows of the batch in one backbone call, and its token states are stitched back.
        """
        if input_ids.shape[0] == 0:
            raise ValueError("the batch holds no segments: pass at least one sequence")
        states = []
        for index, backbone in enumerate(backbones):
            # the columns holding any real token of this backbone (padding may sit on either side)
            used = attention_mask[:, index].bool().any(dim=0).nonzero()
            start, stop = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 1)
            window = slice(start, stop)
            ids, mask = input_ids[:, index, window], attention_mask[:, index, window]
            unit_index = token_unit_index[:, index, window]
            if int(unit_index.max()) >= num_units:
                raise ValueError(
                    f"token_unit_index of backbone {index} points at unit {int(unit_index.max())} but unit_mask has "
                    f"{num_units} units; pass the processor's outputs together"
                )
            states.append(self.read_backbone(index, backbone, ids, mask, unit_index, num_units))
        return states

    def read_backbone(
        self,
        index: int,
        backbone: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_unit_index: torch.Tensor,
        num_units: int,
    ) -> torch.Tensor:
        """Backbone `index`'s states over the token columns it is given, brought onto units (or pooled per sequence).

        `read_backbones` hands it each backbone's columns cut to those holding a real token; a traced graph (the
        ONNX export) hands it the whole padded width, which gives the same states, padding being masked.

        Args:
            input_ids, attention_mask, token_unit_index: `(segments, tokens)`, this backbone's slice of the
                processor's tensors.
            num_units: unit slots per segment.

        Returns:
            `(segments, units, d_i)` (`(segments, units, layers, d_i)` for a `"mix"` backbone at unit level;
            `(segments, 1, d_i)` per sequence).
        """
        token_states = self.token_states(index, backbone, input_ids, attention_mask, token_unit_index)
        token_unit_index = token_unit_index.to(token_states.device)
        if self.per_sequence:
            return self.pool_tokens(index, token_states, attention_mask.to(token_states.device), token_unit_index)
        return align_to_units(token_states, token_unit_index, num_units, self.config.subword_pooling)

    def token_states(
        self,
        index: int,
        backbone: PreTrainedModel,
        ids: torch.Tensor,
        mask: torch.Tensor,
        unit_index: torch.Tensor,
    ) -> torch.Tensor:
        """Backbone `index`'s token states of its chosen layer: `ids`, `mask`, `unit_index (segments, tokens)` ->
        `(segments, tokens, d_i)` (`(segments, tokens, layers, d_i)` for `"mix"` or a layer list); windows past its
        length limit are read and stitched back (`config.window_size`)."""
        config = self.config
        layer = config.backbone_layers[index]
        window = backbone_window(config, index)
        name = config.backbone_names[index]
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in backbone.parameters())
        causal = self.causal[index]

        def run(run_ids, run_mask):
            extra = {}
            if causal:  # positions counted over real tokens, so a left-padded row reads as an unpadded one
                extra["position_ids"] = (run_mask.long().cumsum(dim=1) - 1).clamp(min=0)
            outputs = backbone(
                input_ids=run_ids,
                attention_mask=run_mask,
                output_hidden_states=layer != "last",
                return_dict=True,
                **extra,
            )
            return select_layer(outputs, layer)

        with torch.set_grad_enabled(needs_grad):
            check_backbone_inputs(backbone, ids, mask, index, name, windowed=window is not None)
            if window is None:
                return run(ids, mask)
            return windowed_token_states(
                run,
                ids,
                mask,
                unit_index,
                *window,
                combine=config.window_combine,
                pad_token_id=backbone.config.pad_token_id or 0,
                token_limit=position_limit(backbone),
                backbone_label=f"backbone {index} ({name})",
            )

    def pool_tokens(
        self, index: int, token_states: torch.Tensor, mask: torch.Tensor, unit_index: torch.Tensor
    ) -> torch.Tensor:
        """One vector per segment at `level="sequence"`: backbone `index`'s `token_states (segments, tokens, d_i)`
        (with a layers axis before `d_i` for a layer mix, mixed here), `mask` and `unit_index (segments, tokens)` ->
        `(segments, 1, d_i)`, pooled by its token pooler over its real tokens (prompts never; special tokens only
        with `pool_special_tokens` or for a decoder)."""
        token_states = self.mix(index, token_states)
        pooler = self.token_poolers[index]
        keep = mask.bool() & (unit_index != PROMPT_TOKEN)  # a prompt's tokens are never pooled
        if isinstance(pooler, SentencePooler):  # a sentence-transformers backbone: its own pooling of all tokens
            return pooler(token_states, keep).unsqueeze(1)
        # a decoder pools its special tokens too: its EOS state is the one that has read the whole segment
        if not self.config.pool_special_tokens and not self.causal[index]:
            keep = keep & (unit_index >= 0)
        pooled, _ = pooler(token_states, keep)
        return pooled.unsqueeze(1)

    def mix(self, index: int, states: torch.Tensor) -> torch.Tensor:
        """Backbone `index`'s learned scalar mix over its layers axis `(..., layers, d)` -> `(..., d)`; states of a
        backbone that reads one layer are returned as they are. The one place the layer mix is applied."""
        if str(index) not in self.layer_mixes or states.dim() < 4:
            return states
        return self.layer_mixes[str(index)](states)

    def layer_weights(self, reading: BackboneReading) -> list[torch.Tensor | None]:
        """Per backbone the learned weight each unit gives each layer, `(segments, units, layers)` (zero on padded
        units), for `"mix"` (the same at every unit) and `"attention"` backbones read per unit; None otherwise."""
        weights = []
        real = reading.unit_mask.unsqueeze(-1)
        for index, states in enumerate(reading.read_states):
            combiner = self.layer_mixes[str(index)] if str(index) in self.layer_mixes else None
            if combiner is None or not combiner.learned or states.dim() < 4:
                weights.append(None)
            elif isinstance(combiner, ScalarMix):
                shares = torch.softmax(combiner.layer_scores, dim=0).to(states.dtype)
                weights.append(shares.expand(*states.shape[:3]) * real.to(states.dtype))
            else:
                weights.append(combiner.layer_weights(states) * real.to(states.dtype))
        return weights

    def finish(self, backbone_states, unit_mask: torch.Tensor) -> BackboneReading:
        """The end of reading, for states read here or from a feature cache: the layer mix applied, and per sequence
        every segment one unit (mask `(segments, 1)` ones), so no later stage asks how the states were read."""
        states = [self.mix(index, backbone) for index, backbone in enumerate(backbone_states)]
        if self.per_sequence:
            unit_mask = unit_mask.new_ones(unit_mask.shape[0], 1)
        return BackboneReading(
            states=states, unit_mask=unit_mask, per_sequence=self.per_sequence, read_states=list(backbone_states)
        )

    def check_token_inputs(self, input_ids, attention_mask, token_unit_index) -> None:
        """Raise a `ValueError` unless the three token tensors are `(segments, backbones, tokens)` alike."""
        count = self.config.num_backbones
        if input_ids.dim() != 3 or input_ids.shape[1] != count:
            raise ValueError(
                f"input_ids must be (segments, backbones={count}, tokens) as MetaEmbedProcessor returns; "
                f"got shape {tuple(input_ids.shape)}"
            )
        for name, tensor in (("attention_mask", attention_mask), ("token_unit_index", token_unit_index)):
            if tensor is None or tensor.shape != input_ids.shape:
                raise ValueError(f"`{name}` must accompany input_ids with the same shape {tuple(input_ids.shape)}")

    # ------------------------------------------------------------------------- what reading produces (the cache)

    def describe(self) -> dict:
        """What decides the states `read_backbones` returns beyond the backbones and tokenizers themselves (the
        feature cache fingerprints it): the reading version, the level, the alignment and window settings, and per
        sequence the token pooling."""
        config = self.config
        description = {
            "alignment_version": READING_VERSION,
            "level": config.level,
            "subword_pooling": config.subword_pooling,
            "window_size": config.window_size,
            "window_overlap": config.window_overlap,
            "window_combine": config.window_combine,
        }
        if self.per_sequence:
            description.update(pooling=config.pooling, pool_special_tokens=config.pool_special_tokens)
            readings = [record.get("sentence_pooling") for record in config.backbones]
            if any(readings):  # sentence-transformers backbones pool as their own config says
                description["sentence_pooling"] = readings
            if any(config.backbone_poolings):  # poolings chosen per backbone
                description["backbone_poolings"] = config.backbone_poolings
        return description

    def cache_problem(self) -> str | None:
        """Why `read_backbones`' output cannot be cached and reused exactly (a learned part inside reading, or
        units the cache does not store), with the fix; None when it can."""
        config = self.config
        if self.special_units:
            return (
                "pool_special_tokens=True at level='unit' turns special tokens into units, which the cache does not "
                "store; train online, or use pool_special_tokens=False"
            )
        if not self.per_sequence:
            return None
        learned = [i for i, pooler in enumerate(self.token_poolers) if any(True for _ in pooler.parameters())]
        if learned:
            return (
                f"level='sequence' with pooling={config.pooling!r} pools each backbone's tokens with learned weights "
                "before fusion, so the cached vectors would go stale; use pooling='mean' or 'max', or level='unit'"
            )
        mixed = [int(i) for i, combiner in self.layer_mixes.items() if combiner.learned]
        if mixed:
            kinds = " or ".join(sorted({repr(config.backbone_layers[i]) for i in mixed}))
            return (
                f"level='sequence' with a {kinds} layer (backbones {mixed}) mixes layers with learned weights before "
                "pooling, so the cached vectors would go stale; pick one layer or a list per backbone, or use "
                "level='unit'"
            )
        return None

    def stored_units(self, num_units: int) -> int:
        """Units `read_backbones` returns for a segment of `num_units` units."""
        return 1 if self.per_sequence else num_units

    def stored_layers(self, index: int) -> int:
        """Layers axis length of backbone `index`'s stored states (1 unless a `"mix"` backbone at unit level)."""
        mix = self.layer_mixes[str(index)] if str(index) in self.layer_mixes else None
        return mix.num_layers if mix is not None and not self.per_sequence else 1


__all__ = [
    "BackboneReader",
    "Backbones",
    "LEVELS",
    "READING_VERSION",
    "SENTENCE_POOLING_MODES",
    "LayerAttention",
    "LayerCombine",
    "ScalarMix",
    "SentencePooler",
    "align_to_units",
    "pool_sentence",
    "select_layer",
]
