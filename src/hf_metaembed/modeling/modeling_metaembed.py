"""MetaEmbed models: several (frozen) pretrained backbones whose states are aligned on shared units, fused, optionally
paired across the sides of a complex, and read by a task head.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its sibling files.
"""

import warnings

import torch
from torch import nn
from transformers import PreTrainedModel

from .auto_classes import AUTO_CLASSES
from .backbones import build_stored_backbone
from .configuration_metaembed import MetaEmbedConfig, backbone_num_layers
from .fusion import build_fusion
from .heads import build_head
from .input_checks import as_tensor, check_label_count, infer_problem_type, sequence_labels, token_labels
from .losses import regression_loss
from .outputs_metaembed import MetaEmbedModelOutput, MetaEmbedSequenceClassifierOutput, MetaEmbedTokenClassifierOutput
from .pairing import build_pairing
from .pretrained_metaembed import MetaEmbedPreTrainedModel
from .reading import BackboneReader, Backbones
from .unit_encoders import build_unit_encoder


def compact_embedding(pooled: torch.Tensor, truncate_dim: int | None, normalize: bool) -> torch.Tensor:
    """`(samples, dim)` pooled vectors cut to their first `truncate_dim` coordinates (all when None), then
    L2-normalised when `normalize` (so a truncated embedding of a normalising model is re-normalised)."""
    if truncate_dim is not None:
        if not 1 <= truncate_dim <= pooled.shape[-1]:
            raise ValueError(f"truncate_dim must be from 1 to the pooled width {pooled.shape[-1]}, got {truncate_dim}")
        pooled = pooled[..., :truncate_dim]
    return nn.functional.normalize(pooled, dim=-1) if normalize else pooled


class MetaEmbedModel(MetaEmbedPreTrainedModel):
    """Backbones, then one stage each: reading (reading.py) -> fusion -> unit encoder -> pair architecture.

    Backbones are direct attributes `backbone_0`, `backbone_1`, ... so Accelerate places each one whole; every other
    stage is one child module (`reader`, `fusion`, `unit_encoder`, `pairing`), built from the config alone, that
    takes the previous stage's output and nothing else.
    """

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        if backbones is None:
            backbones = [build_stored_backbone(config, i) for i in range(config.num_backbones)]
        if len(backbones) != config.num_backbones:
            raise ValueError(f"config lists {config.num_backbones} backbones but {len(backbones)} were given")
        for index, backbone in enumerate(backbones):
            self.add_module(f"backbone_{index}", backbone)
        num_layers = [backbone_num_layers(config.get_backbone_config(i)) + 1 for i in range(config.num_backbones)]
        self.reader = BackboneReader(config, num_layers)
        self.fusion = build_fusion(config, config.backbone_read_sizes)
        self.unit_encoder = build_unit_encoder(config, self.fusion.output_dim)
        self.pairing = build_pairing(config, self.fusion.output_dim)
        # device_map places every backbone whole on one device (post_init adds the backbones' own no-split blocks)
        self._no_split_modules = sorted({type(backbone).__name__ for backbone in backbones})
        self.post_init()
        self._tie_backbone_weights()
        if config.freeze_backbones:
            self._freeze(True)

    def _tie_backbone_weights(self) -> None:
        """Tie each backbone's shared weights at construction (T5's `encoder.embed_tokens` is its `shared`), which a
        checkpoint stores once, so a model built under accelerate's `init_empty_weights` loads with
        `load_checkpoint_and_dispatch` as it is. The parameter is placed in its module's `_parameters` directly:
        `init_empty_weights` re-wraps every parameter registered through `setattr`, which would untie it again."""
        for target, source in self.all_tied_weights_keys.items():
            module_path, _, name = target.rpartition(".")
            module = self.get_submodule(module_path)
            if name in module._parameters:
                module._parameters[name] = self.get_parameter(source)

    @property
    def backbones(self) -> list[PreTrainedModel]:
        return [getattr(self, f"backbone_{i}") for i in range(self.config.num_backbones)]

    def freeze_backbones(self) -> None:
        """Stop gradients into every backbone and keep them in eval mode (their dropout off) even while training."""
        self.config.freeze_backbones = True
        self._freeze(True)

    def unfreeze_backbones(self) -> None:
        """Let every backbone train with the rest of the model."""
        self.config.freeze_backbones = False
        self._freeze(False)

    def _freeze(self, frozen: bool) -> None:
        for backbone in self.backbones:
            backbone.requires_grad_(not frozen)
            backbone.train(self.training and not frozen)

    def train(self, mode: bool = True) -> "MetaEmbedModel":
        super().train(mode)
        if self.config.freeze_backbones:
            for backbone in self.backbones:
                backbone.eval()
        return self

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
        output_layer_weights: bool = False,
        truncate_dim: int | None = None,
        return_dict: bool | None = None,
        inputs_embeds: None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MetaEmbedModelOutput | tuple:
        r"""
        Args:
            input_ids: `(segments, backbones, tokens)` token ids of every backbone, from `MetaEmbedProcessor`.
            attention_mask: `(segments, backbones, tokens)`.
            token_unit_index: `(segments, backbones, tokens)` unit of each token, -1 for special tokens and padding.
            unit_mask: `(segments, units)` 1 for real units.
            segment_sample_index, segment_side_index: `(segments,)` sample and side (0 ligand, 1 receptor) of each
                segment, for pair architectures.
            backbone_states: instead of token ids, precomputed per-backbone states `(segments, units, d_i)` (as
                `reader.read_backbones` or a feature cache returns them) with their `unit_mask`: tensors, numpy
                arrays or nested lists, checked per backbone (count, shape, width) and cast to the dtype and device
                the fusion computes in (docs/RELIABILITY.md).
            output_backbone_states: also return the states as read (before a layer mix: what the cache stores).
            output_layer_weights: also return, per `"mix"` or `"attention"` backbone, each unit's layer weights.
            truncate_dim: keep the first this many coordinates of `pooler_output` (default: `config.truncate_dim`);
                re-normalised when `config.normalize_embeddings`.
            return_dict: `False` returns a tuple, as every `transformers` model does.
            inputs_embeds, output_attentions, output_hidden_states: accepted because PEFT's task wrappers and
                pipelines pass them (as None); a MetaEmbed model has no single embedding matrix, attention map or
                hidden-state stack, so any other value is an error.

        An unknown keyword raises `TypeError` naming it, as any PyTorch module does.
        """
        check_unsupported(inputs_embeds, output_attentions, output_hidden_states)
        if (input_ids is None) == (backbone_states is None):
            raise ValueError(
                "pass exactly one of `input_ids` (token ids from MetaEmbedProcessor) or `backbone_states` "
                f"(precomputed backbone states); got {'both' if input_ids is not None else 'neither'}"
            )
        if unit_mask is None:
            raise ValueError("`unit_mask` is required: pass the full output of MetaEmbedProcessor")
        if input_ids is not None:
            reading = self.reader(Backbones(self.backbones), input_ids, attention_mask, token_unit_index, unit_mask)
        else:
            device, dtype = self._stage_device_and_dtype()
            reading = self.reader.from_states(backbone_states, unit_mask, device, dtype)
        fused, fusion_weights = self.fusion(reading.states, reading.unit_mask)  # (segments, units, dim), (.., n)
        unit_states = self.unit_encoder(fused, reading.unit_mask, segment_sample_index, segment_side_index)
        pooled = self.pairing(unit_states, reading.unit_mask, segment_sample_index, segment_side_index)
        pooled = compact_embedding(pooled, truncate_dim or self.config.truncate_dim, self.config.normalize_embeddings)
        if reading.per_sequence:
            fusion_weights = fusion_weights.squeeze(1)  # (segments, backbones): one vector per segment
        outputs = MetaEmbedModelOutput(
            last_hidden_state=unit_states,
            pooler_output=pooled,
            fusion_weights=fusion_weights,
            unit_mask=reading.unit_mask,
            backbone_states=tuple(reading.read_states) if output_backbone_states else None,
            layer_weights=tuple(self.reader.layer_weights(reading)) if output_layer_weights else None,
        )
        return outputs if return_dict is not False else outputs.to_tuple()

    def _stage_device_and_dtype(self) -> tuple[torch.device | None, torch.dtype | None]:
        """Where, and in what floating-point dtype, the stages after reading compute (for hand-made states)."""
        for module in (self.fusion, self.unit_encoder, self.pairing):
            parameter = next((p for p in module.parameters() if p.is_floating_point() and not p.is_meta), None)
            if parameter is not None:
                return parameter.device, parameter.dtype
        return None, None

    # release 0.1's names of the reading stage's parts, kept for one release

    def compute_backbone_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_unit_index: torch.Tensor, num_units: int
    ) -> list[torch.Tensor]:
        """Deprecated: `model.reader.read_backbones(model.backbones, ...)`."""
        _moved("MetaEmbedModel.compute_backbone_states", "MetaEmbedModel.reader.read_backbones(model.backbones, ...)")
        return self.reader.read_backbones(self.backbones, input_ids, attention_mask, token_unit_index, num_units)

    def finish_reading(self, backbone_states, unit_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Deprecated: `model.reader.finish(states, unit_mask)` (a `BackboneReading`)."""
        _moved("MetaEmbedModel.finish_reading", "MetaEmbedModel.reader.finish")
        reading = self.reader.finish(backbone_states, unit_mask)
        return reading.states, reading.unit_mask

    def mix_layers(self, index: int, states: torch.Tensor) -> torch.Tensor:
        """Deprecated: `model.reader.mix(index, states)`."""
        _moved("MetaEmbedModel.mix_layers", "MetaEmbedModel.reader.mix")
        return self.reader.mix(index, states)

    @property
    def layer_mixes(self) -> nn.ModuleDict:
        """Deprecated: `model.reader.layer_mixes`."""
        _moved("MetaEmbedModel.layer_mixes", "MetaEmbedModel.reader.layer_mixes")
        return self.reader.layer_mixes


def _moved(old: str, new: str) -> None:
    warnings.warn(f"{old} moved in hf_metaembed 0.2: use {new}", DeprecationWarning, stacklevel=3)


def check_unsupported(inputs_embeds=None, output_attentions=None, output_hidden_states=None) -> None:
    """Raise for the `transformers` keywords a MetaEmbed model accepts (PEFT and pipelines pass them) but cannot
    honour; None and False are fine."""
    if inputs_embeds is not None:
        raise ValueError(
            "MetaEmbed models read several backbones, each with its own embeddings: pass input_ids (or "
            "backbone_states), not inputs_embeds"
        )
    if output_attentions or output_hidden_states:
        raise ValueError(
            "MetaEmbed models return fused unit states, not attention maps or a hidden-state stack: drop "
            "output_attentions/output_hidden_states (pass output_backbone_states=True for the read states)"
        )


def sequence_loss(config: MetaEmbedConfig, problem_type: str | None, logits: torch.Tensor, labels):
    """Loss chosen by `problem_type`, for `labels` given as a tensor, numpy array or list (one per sample).

    Without a `problem_type` (the config's, or one the model settled earlier), the labels fix it
    (`infer_problem_type`: regression for one label, multi-label for `(samples, num_labels)` rows, single-label for
    one class id per sample) once they passed every check; a later batch that contradicts it is an error, never a
    silent switch (input_checks.py).

    Returns:
        `(loss, problem_type)`: the model keeps the problem type (its config is never written during `forward`).
    """
    labels = as_tensor(labels, "labels").to(logits.device)
    check_label_count(labels, logits.shape[0])
    problem_type = problem_type or infer_problem_type(config.num_labels, labels, logits.shape[0])
    labels = sequence_labels(problem_type, config.num_labels, labels, logits)
    if problem_type == "regression":
        return regression_loss(config, logits.squeeze(-1), labels), problem_type
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, config.num_labels), labels), problem_type
    return nn.functional.binary_cross_entropy_with_logits(logits, labels), problem_type


class MetaEmbedWithHead(MetaEmbedPreTrainedModel):
    """What both task models share: a `MetaEmbedModel` (`metaembed`) and a head (`classifier`, the name peft picks
    up for `modules_to_save`) on its pooled vector or on its unit states."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.metaembed = MetaEmbedModel(config, backbones=backbones)

    def _base_outputs(
        self, return_dict, inputs_embeds, output_attentions, output_hidden_states, **inputs
    ) -> MetaEmbedModelOutput:
        check_unsupported(inputs_embeds, output_attentions, output_hidden_states)
        return self.metaembed(**inputs)


class MetaEmbedForSequenceClassification(MetaEmbedWithHead):
    """MetaEmbed model with a head on the pooled vector: regression, single- or multi-label classification."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config, backbones)
        self.classifier = build_head(config, self.metaembed.pairing.output_dim, config.num_labels)
        # the problem type in use: the config's, or the one the first labelled batch settled (saved with the model)
        self.problem_type = config.problem_type
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
        truncate_dim: int | None = None,
        return_dict: bool | None = None,
        inputs_embeds: None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MetaEmbedSequenceClassifierOutput | tuple:
        """Inputs as `MetaEmbedModel.forward`; `labels` (a tensor, numpy array or list): `(samples,)` class ids or
        numbers, or `(samples, num_labels)` rows; checked against `problem_type` (`sequence_loss`). With a
        `truncate_dim` (here or in the config) the head reads the truncated vector zero-padded to its width."""
        outputs = self._base_outputs(
            return_dict,
            inputs_embeds,
            output_attentions,
            output_hidden_states,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_unit_index=token_unit_index,
            unit_mask=unit_mask,
            segment_sample_index=segment_sample_index,
            segment_side_index=segment_side_index,
            backbone_states=backbone_states,
            truncate_dim=truncate_dim,
        )
        pooled = outputs.pooler_output
        logits = self.classifier(nn.functional.pad(pooled, (0, self.metaembed.pairing.output_dim - pooled.shape[-1])))
        loss = None
        if labels is not None:
            loss, self.problem_type = sequence_loss(self.config, self.problem_type, logits, labels)
        result = MetaEmbedSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            fusion_weights=outputs.fusion_weights,
            pooler_output=outputs.pooler_output,
            unit_mask=outputs.unit_mask,
        )
        return result if return_dict is not False else result.to_tuple()


class MetaEmbedForTokenClassification(MetaEmbedWithHead):
    """MetaEmbed model with a head on every unit (residue or word)."""

    def __init__(self, config: MetaEmbedConfig, backbones: list[PreTrainedModel] | None = None) -> None:
        super().__init__(config, backbones)
        reader = self.metaembed.reader
        if reader.per_sequence or reader.special_units or self.metaembed.pairing.is_pair:
            raise ValueError(
                "token classification labels every unit of one sequence: it needs level='unit', "
                "architecture='single' and pool_special_tokens=False (got level="
                f"{config.level!r}, architecture={config.architecture!r}, "
                f"pool_special_tokens={config.pool_special_tokens})"
            )
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
        return_dict: bool | None = None,
        inputs_embeds: None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MetaEmbedTokenClassifierOutput | tuple:
        """Inputs as `MetaEmbedModel.forward`; `labels (segments, units)` class ids (a tensor, numpy array or list),
        -100 where no label applies."""
        outputs = self._base_outputs(
            return_dict,
            inputs_embeds,
            output_attentions,
            output_hidden_states,
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
        result = MetaEmbedTokenClassifierOutput(
            loss=loss, logits=logits, fusion_weights=outputs.fusion_weights, unit_mask=outputs.unit_mask
        )
        return result if return_dict is not False else result.to_tuple()


MetaEmbedConfig.register_for_auto_class()
for _model_class in (MetaEmbedModel, MetaEmbedForSequenceClassification, MetaEmbedForTokenClassification):
    _model_class.register_for_auto_class(AUTO_CLASSES[_model_class.__name__])

__all__ = [
    "MetaEmbedForSequenceClassification",
    "MetaEmbedForTokenClassification",
    "MetaEmbedModel",
    "MetaEmbedModelOutput",
    "MetaEmbedPreTrainedModel",
    "MetaEmbedSequenceClassifierOutput",
    "MetaEmbedTokenClassifierOutput",
]
