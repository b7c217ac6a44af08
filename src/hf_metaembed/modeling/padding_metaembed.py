"""Padding per-sample features into one batch (`MetaEmbedProcessor.pad`, a `Trainer` data collator): token ids,
masks and token-to-unit indices `(segments, backbones, tokens)`, the unit mask, the segment indices of pair
architectures, and the labels.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

from collections.abc import Mapping, Sequence

import torch
from transformers import BatchEncoding

from .feature_rows import collate_labels, feature_rows, label_of, sample_segments
from .processing_options import RETURN_TENSORS, check_options, padding_strategy, round_up


def pad_features(
    processor,
    features: Sequence[Mapping] | Mapping,
    padding: bool | str,
    max_length: int | None,
    pad_to_multiple_of: int | None,
    return_tensors: str | None,
    architecture: str | None,
    per_unit_labels: bool | None,
) -> BatchEncoding:
    """`MetaEmbedProcessor.pad` (see there): per-sample features of `processor` padded into one batch."""
    check_options(architecture=architecture, per_unit_labels=per_unit_labels)
    architecture = architecture or processor.architecture
    per_unit_labels = processor.per_unit_labels if per_unit_labels is None else per_unit_labels
    padding = padding_strategy(padding, return_tensors)
    if return_tensors not in RETURN_TENSORS:
        raise ValueError(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}")
    rows = feature_rows(features)
    if not rows:
        raise ValueError("cannot pad an empty list of features")
    samples = [sample_segments(row, index, len(processor.backbones)) for index, row in enumerate(rows)]
    segments = [segment for sample in samples for segment in sample]
    tokens = max(len(ids) for segment in segments for ids in segment["input_ids"])
    units = max(segment["num_units"] for segment in segments)
    # backbones share the token axis, so only lengths that differ between segments need padding
    lengths = {tuple(len(ids) for ids in segment["input_ids"]) + (segment["num_units"],) for segment in segments}
    if padding is False and len(lengths) > 1:
        raise ValueError(
            "these samples have different lengths, so padding=False cannot make one tensor of them: pass "
            "padding=True, or return_tensors=None for one unpadded row per sample"
        )
    if padding == "max_length":
        target = max_length or max((limit for limit in processor.max_lengths if limit is not None), default=tokens)
        tokens, units = max(tokens, target), max(units, target)
    if pad_to_multiple_of:
        tokens, units = round_up(tokens, pad_to_multiple_of), round_up(units, pad_to_multiple_of)
    count = len(processor.backbones)
    input_ids = torch.empty(len(segments), count, tokens, dtype=torch.long)
    for index, backbone in enumerate(processor.backbones):
        input_ids[:, index] = backbone.pad_id
    attention_mask = torch.zeros(len(segments), count, tokens, dtype=torch.long)
    token_unit_index = torch.full((len(segments), count, tokens), -1, dtype=torch.long)
    unit_mask = torch.zeros(len(segments), units, dtype=torch.long)
    for row, segment in enumerate(segments):
        for index, (ids, unit_index) in enumerate(zip(segment["input_ids"], segment["token_unit_index"])):
            input_ids[row, index, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, index, : len(ids)] = 1
            token_unit_index[row, index, : len(ids)] = torch.tensor(unit_index, dtype=torch.long)
        unit_mask[row, : segment["num_units"]] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_unit_index": token_unit_index,
        "unit_mask": unit_mask,
    }
    if architecture != "single":
        batch["segment_sample_index"] = torch.tensor(
            [i for i, sample in enumerate(samples) for _ in sample], dtype=torch.long
        )
        batch["segment_side_index"] = torch.tensor([s["segment_side"] for s in segments], dtype=torch.long)
    labels = [label_of(row) for row in rows]
    if any(label is not None for label in labels):
        unit_counts = [sum(segment["num_units"] for segment in sample) for sample in samples]
        batch["labels"] = collate_labels(labels, unit_counts, units, per_unit_labels)
    if return_tensors == "np":
        return BatchEncoding({key: value.numpy() for key, value in batch.items()})
    if return_tensors is None:
        return BatchEncoding({key: value.tolist() for key, value in batch.items()})
    return BatchEncoding(batch)


__all__ = ["pad_features"]
