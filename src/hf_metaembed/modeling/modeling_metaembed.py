"""MetaEmbed models: several (frozen) pretrained backbones whose states are aligned on shared units, fused, optionally
paired across the sides of a complex, and read by a task head.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its sibling files.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging

from .backbones import ScalarMix, align_to_units, build_backbone, pool_sentence, select_layer
from .configuration_metaembed import MetaEmbedConfig, backbone_num_layers
from .fusion import build_fusion
from .heads import build_head
from .input_checks import (
    as_tensor,
    check_backbone_states,
    check_label_count,
    infer_problem_type,
    sequence_labels,
    token_labels,
)
from .losses import regression_loss
from .outputs_metaembed import MetaEmbedModelOutput, MetaEmbedSequenceClassifierOutput, MetaEmbedTokenClassifierOutput
from .pairing import build_pairing
from .pooling import build_pooler
from .pretrained_metaembed import MetaEmbedPreTrainedModel
from .special_units import with_special_units
from .unit_encoders import build_unit_encoder
from .windowing import backbone_window, check_backbone_inputs, position_limit, windowed_token_states

logger = logging.get_logger(__name__)


class MetaEmbedModel(MetaEmbedPreTrainedModel):
    """Backbones -> layer selection -> token-to-unit alignment -> fusion -> (unit encoder) -> pair architecture.

    Backbones are direct attributes `backbone_0`, `backbone_1`, ... so Accelerate places each one whole.
    """

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        if backbones is None:
            backbones = [build_backbone(config.get_backbone_config(i)) for i in range(config.num_backbones)]
        if len(backbones) != config.num_backbones:
            raise ValueError(f"config lists {config.num_backbones} backbones but {len(backbones)} were given")
        for index, backbone in enumerate(backbones):
            self.add_module(f"backbone_{index}", backbone)
        dims = config.backbone_hidden_sizes
        self.layer_mixes = nn.ModuleDict(
            {
                str(i): ScalarMix(backbone_num_layers(config.get_backbone_config(i)) + 1)
                for i, layer in enumerate(config.backbone_layers)
                if layer == "mix"
            }
        )
        if config.level == "sequence":
            self.token_poolers = nn.ModuleList(build_pooler(config.pooling, d) for d in dims)
        self.fusion = build_fusion(config, dims)
        self.unit_encoder = build_unit_encoder(config, self.fusion.output_dim)
        self.pairing = build_pairing(config, self.fusion.output_dim)
        # device_map places every backbone whole on one device (post_init adds the backbones' own no-split blocks)
        self._no_split_modules = sorted({type(backbone).__name__ for backbone in backbones})
        self.post_init()
        if config.freeze_backbones:
            self.freeze_backbones()

    @property
    def backbones(self) -> list[PreTrainedModel]:
        return [getattr(self, f"backbone_{i}") for i in range(self.config.num_backbones)]

    def freeze_backbones(self) -> None:
        """Stop gradients into every backbone and keep them in eval mode (their dropout off) even while training."""
        self.config.freeze_backbones = True
        for backbone in self.backbones:
            backbone.requires_grad_(False)
            backbone.eval()

    def unfreeze_backbones(self) -> None:
        """Let every backbone train with the rest of the model."""
        self.config.freeze_backbones = False
        for backbone in self.backbones:
            backbone.requires_grad_(True)
            backbone.train(self.training)

    def train(self, mode: bool = True) -> "MetaEmbedModel":
        super().train(mode)
        if self.config.freeze_backbones:
            for backbone in self.backbones:
                backbone.eval()
        return self

    def compute_backbone_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_unit_index: torch.Tensor, num_units: int
    ) -> list[torch.Tensor]:
        """Run every backbone and bring its states onto units (or pool them, at `level="sequence"`).

        Args:
            input_ids, attention_mask, token_unit_index: `(segments, backbones, tokens)` as `MetaEmbedProcessor`
                returns them.
            num_units: unit slots per segment.

        Returns:
            Per backbone `(segments, units, d_i)` (`(segments, units, layers, d_i)` for a `"mix"` backbone at unit
            level; `(segments, 1, d_i)` at sequence level).

        With a window policy (`config.window_size`), each backbone reads segments longer than its window in sliding
        windows of units, all windows of the batch in one backbone call, and its token states are stitched back.
        """
        if input_ids.shape[0] == 0:
            raise ValueError("the batch holds no segments: pass at least one sequence")
        states = []
        for index, backbone in enumerate(self.backbones):
            mask = attention_mask[:, index]
            length = max(int(mask.sum(dim=1).max()), 1)
            ids, mask, unit_index = input_ids[:, index, :length], mask[:, :length], token_unit_index[:, index, :length]
            if int(unit_index.max()) >= num_units:
                raise ValueError(
                    f"token_unit_index of backbone {index} points at unit {int(unit_index.max())} but unit_mask has "
                    f"{num_units} units; pass the processor's outputs together"
                )
            layer = self.config.backbone_layers[index]
            window = backbone_window(self.config, index)
            name = self.config.backbone_names[index]
            needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in backbone.parameters())

            def run(run_ids, run_mask, backbone=backbone, layer=layer):
                outputs = backbone(
                    input_ids=run_ids, attention_mask=run_mask, output_hidden_states=layer != "last", return_dict=True
                )
                return select_layer(outputs, layer)

            with torch.set_grad_enabled(needs_grad):
                check_backbone_inputs(backbone, ids, mask, index, name, windowed=window is not None)
                if window is None:
                    token_states = run(ids, mask)
                else:
                    token_states = windowed_token_states(
                        run,
                        ids,
                        mask,
                        unit_index,
                        *window,
                        combine=self.config.window_combine,
                        pad_token_id=backbone.config.pad_token_id or 0,
                        token_limit=position_limit(backbone),
                        backbone_label=f"backbone {index} ({name})",
                    )
            unit_index = unit_index.to(token_states.device)
            if self.config.level == "sequence":
                token_states = self.mix_layers(index, token_states)
                keep = mask.to(token_states.device).bool()
                if not self.config.pool_special_tokens:
                    keep = keep & (unit_index >= 0)
                reading = self.config.backbones[index].get("sentence_pooling")
                if reading:  # a sentence-transformers backbone: its own pooling over all real tokens
                    pooled = pool_sentence(token_states, mask.to(token_states.device), reading)
                else:
                    pooled, _ = self.token_poolers[index](token_states, keep)
                states.append(pooled.unsqueeze(1))
            else:
                states.append(align_to_units(token_states, unit_index, num_units, self.config.subword_pooling))
        return states

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_unit_index: torch.LongTensor | None = None,
        unit_mask: torch.LongTensor | None = None,
        segment_sample_index: torch.LongTensor | None = None,
        segment_side_index: torch.LongTensor | None = None,
        backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        output_backbone_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MetaEmbedModelOutput:
        r"""
        Args:
            input_ids: `(segments, backbones, tokens)` token ids of every backbone, from `MetaEmbedProcessor`.
            attention_mask: `(segments, backbones, tokens)`.
            token_unit_index: `(segments, backbones, tokens)` unit of each token, -1 for special tokens and padding.
            unit_mask: `(segments, units)` 1 for real units.
            segment_sample_index, segment_side_index: `(segments,)` sample and side (0 ligand, 1 receptor) of each
                segment, for pair architectures.
            backbone_states: instead of token ids, precomputed per-backbone states `(segments, units, d_i)` (as
                `compute_backbone_states` or a feature cache returns them) with their `unit_mask`: tensors, numpy
                arrays or nested lists, checked per backbone (count, shape, width) and cast to the dtype and device
                the fusion computes in (docs/RELIABILITY.md).
        """
        if (input_ids is None) == (backbone_states is None):
            raise ValueError(
                "pass exactly one of `input_ids` (token ids from MetaEmbedProcessor) or `backbone_states` "
                f"(precomputed backbone states); got {'both' if input_ids is not None else 'neither'}"
            )
        if unit_mask is None:
            raise ValueError("`unit_mask` is required: pass the full output of MetaEmbedProcessor")
        if input_ids is not None:
            self._check_token_inputs(input_ids, attention_mask, token_unit_index)
            if self.config.pool_special_tokens and self.config.level == "unit":
                token_unit_index, unit_mask = with_special_units(token_unit_index, attention_mask, unit_mask)
            backbone_states = self.compute_backbone_states(
                input_ids, attention_mask, token_unit_index, unit_mask.shape[1]
            )
        else:
            backbone_states, unit_mask = self._check_backbone_states(backbone_states, unit_mask)
        unit_states, unit_mask = self.finish_reading(backbone_states, unit_mask)
        fused, fusion_weights = self.fusion(unit_states, unit_mask)  # (segments, units, dim), (.., backbones)
        # the architecture runs the unit encoder where the study's module does (per segment, or over joined sides)
        pooled, fused = self.pairing(
            fused, unit_mask, segment_sample_index, segment_side_index, unit_encoder=self.unit_encoder
        )
        if self.config.level == "sequence":
            fusion_weights = fusion_weights.squeeze(1)
        return MetaEmbedModelOutput(
            last_hidden_state=fused,
            pooler_output=pooled,
            fusion_weights=fusion_weights,
            unit_mask=unit_mask,
            backbone_states=tuple(backbone_states) if output_backbone_states else None,
        )

    def mix_layers(self, index: int, states: torch.Tensor) -> torch.Tensor:
        """Backbone `index`'s learned scalar mix over its layers axis `(..., layers, d)` -> `(..., d)`; states of a
        backbone that reads one layer are returned as they are. The one place the layer mix is applied."""
        if str(index) not in self.layer_mixes or states.dim() < 4:
            return states
        return self.layer_mixes[str(index)](states)

    def finish_reading(
        self, backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...], unit_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The end of the reading stage, for states computed here or read from a feature cache: each backbone's
        `(segments, units, d_i)` unit states (layer mix applied) and their unit mask. At `level="sequence"` every
        segment is one pooled unit, so the mask becomes `(segments, 1)` ones and nothing downstream branches on
        the level."""
        states = [self.mix_layers(index, backbone) for index, backbone in enumerate(backbone_states)]
        if self.config.level == "sequence":
            unit_mask = unit_mask.new_ones(unit_mask.shape[0], 1)
        return states, unit_mask

    def _check_token_inputs(self, input_ids, attention_mask, token_unit_index) -> None:
        count = self.config.num_backbones
        if input_ids.dim() != 3 or input_ids.shape[1] != count:
            raise ValueError(
                f"input_ids must be (segments, backbones={count}, tokens) as MetaEmbedProcessor returns; "
                f"got shape {tuple(input_ids.shape)}"
            )
        for name, tensor in (("attention_mask", attention_mask), ("token_unit_index", token_unit_index)):
            if tensor is None or tensor.shape != input_ids.shape:
                raise ValueError(f"`{name}` must accompany input_ids with the same shape {tuple(input_ids.shape)}")

    def _check_backbone_states(self, backbone_states, unit_mask) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hand-made `backbone_states` checked against this model's backbones (count, shapes, widths, units) and
        brought to the device and floating-point dtype its fusion computes in (input_checks.py)."""
        mix_layers = {int(index): mix.layer_scores.shape[0] for index, mix in self.layer_mixes.items()}
        device = dtype = None
        for module in (self.fusion, self.unit_encoder, self.pairing):
            parameter = next((p for p in module.parameters() if p.is_floating_point() and not p.is_meta), None)
            if parameter is not None:
                device, dtype = parameter.device, parameter.dtype
                break
        return check_backbone_states(self.config, backbone_states, unit_mask, mix_layers, device, dtype)


def sequence_loss(config: MetaEmbedConfig, logits: torch.Tensor, labels) -> torch.Tensor:
    """Loss chosen by `problem_type`, for `labels` given as a tensor, numpy array or list (one per sample).

    Without a `problem_type` in the config, the first batch of labels fixes it (`infer_problem_type`: regression for
    one label, multi-label for `(samples, num_labels)` rows, single-label for one class id per sample); it is stored
    only once that batch's labels passed every check, and a later batch that contradicts it is an error, never a
    silent switch (input_checks.py).
    """
    labels = as_tensor(labels, "labels").to(logits.device)
    check_label_count(labels, logits.shape[0])
    problem_type = config.problem_type or infer_problem_type(config.num_labels, labels, logits.shape[0])
    labels = sequence_labels(problem_type, config.num_labels, labels, logits)
    config.problem_type = problem_type
    if problem_type == "regression":
        return regression_loss(config, logits.squeeze(-1), labels)
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, config.num_labels), labels)
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


class MetaEmbedForSequenceClassification(MetaEmbedPreTrainedModel):
    """MetaEmbed model with a head on the pooled vector: regression, single- or multi-label classification."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.metaembed = MetaEmbedModel(config, backbones=backbones)
        self.classifier = build_head(config, self.metaembed.pairing.output_dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_unit_index: torch.LongTensor | None = None,
        unit_mask: torch.LongTensor | None = None,
        segment_sample_index: torch.LongTensor | None = None,
        segment_side_index: torch.LongTensor | None = None,
        backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MetaEmbedSequenceClassifierOutput:
        """Inputs as `MetaEmbedModel.forward`; `labels` (a tensor, numpy array or list): `(samples,)` class ids or
        numbers, or `(samples, num_labels)` rows; checked against `problem_type` (`sequence_loss`)."""
        outputs = self.metaembed(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_unit_index=token_unit_index,
            unit_mask=unit_mask,
            segment_sample_index=segment_sample_index,
            segment_side_index=segment_side_index,
            backbone_states=backbone_states,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = sequence_loss(self.config, logits, labels) if labels is not None else None
        return MetaEmbedSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            fusion_weights=outputs.fusion_weights,
            pooler_output=outputs.pooler_output,
            unit_mask=outputs.unit_mask,
        )


class MetaEmbedForTokenClassification(MetaEmbedPreTrainedModel):
    """MetaEmbed model with a head on every unit (residue or word)."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        if config.level != "unit" or config.architecture != "single" or config.pool_special_tokens:
            raise ValueError(
                "token classification labels every unit of one sequence: it needs level='unit', "
                "architecture='single' and pool_special_tokens=False (got level="
                f"{config.level!r}, architecture={config.architecture!r}, "
                f"pool_special_tokens={config.pool_special_tokens})"
            )
        self.num_labels = config.num_labels
        self.metaembed = MetaEmbedModel(config, backbones=backbones)
        self.classifier = build_head(config, self.metaembed.fusion.output_dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_unit_index: torch.LongTensor | None = None,
        unit_mask: torch.LongTensor | None = None,
        segment_sample_index: torch.LongTensor | None = None,
        segment_side_index: torch.LongTensor | None = None,
        backbone_states: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MetaEmbedTokenClassifierOutput:
        """Inputs as `MetaEmbedModel.forward`; `labels (segments, units)` class ids (a tensor, numpy array or list),
        -100 where no label applies."""
        outputs = self.metaembed(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_unit_index=token_unit_index,
            unit_mask=unit_mask,
            segment_sample_index=segment_sample_index,
            segment_side_index=segment_side_index,
            backbone_states=backbone_states,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            labels = token_labels(labels, logits, outputs.unit_mask, self.num_labels)
            loss = nn.functional.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return MetaEmbedTokenClassifierOutput(
            loss=loss, logits=logits, fusion_weights=outputs.fusion_weights, unit_mask=outputs.unit_mask
        )


MetaEmbedConfig.register_for_auto_class()
MetaEmbedModel.register_for_auto_class("AutoModel")
MetaEmbedForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
MetaEmbedForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = [
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedSequenceClassifierOutput",
    "MetaEmbedTokenClassifierOutput",
]
