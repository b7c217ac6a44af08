"""The per-sample forms of `MetaEmbedProcessor` output, and how the labels of a batch of them are collated.

One sample is one row whose keys are `forward` arguments, so `datasets` stores it and `Trainer` keeps it:

    input_ids, token_unit_index   per segment, per backbone: a list of token ids / unit indices (unpadded)
    unit_mask                     per segment: one 1 per unit
    segment_side_index            per segment: 0 ligand, 1 receptor (0 for `single`)
    labels                        a number, a list of numbers (multi-label / several targets) or per-unit labels

A row depends on its own sample only, so `Dataset.map` gives the same rows whatever its `batch_size`. `pad` also
reads the rows of an already padded `single` batch (what `Dataset.map` stores from `processor(texts)` with its default
`return_tensors="pt"`: the padding is read off `attention_mask` and `unit_mask` and dropped) and release 0.1's
`{"segments": [...]}` form.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and the standard library only.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch

LABEL_KEYS = ("labels", "label", "label_ids")
ROW_KEYS = ("input_ids", "token_unit_index", "unit_mask", "segment_side_index")


def _to_list(value: Any) -> Any:
    """Nested Python lists from tensors, arrays or lists of them (`datasets` gives ragged rows as lists of tensors)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_to_list(item) for item in value]
    return value


def sample_row(segments: list[dict], label: Any = None) -> dict:
    """The row of one sample from its encoded segments (`{"input_ids", "token_unit_index", "num_units",
    "segment_side"}` each, as `MetaEmbedProcessor.encode_segment` returns them plus the side)."""
    row = {
        "input_ids": [segment["input_ids"] for segment in segments],
        "token_unit_index": [segment["token_unit_index"] for segment in segments],
        "unit_mask": [[1] * segment["num_units"] for segment in segments],
        "segment_side_index": [segment.get("segment_side", 0) for segment in segments],
    }
    if label is not None:
        row["labels"] = _to_list(label)
    return row


def feature_rows(features: Sequence[Mapping] | Mapping) -> list[Mapping]:
    """One mapping per sample, from a list of rows or a mapping of columns (one entry per sample)."""
    if isinstance(features, Mapping):
        columns = {key: _to_list(value) for key, value in features.items()}
        lengths = {key: len(value) for key, value in columns.items() if isinstance(value, list)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the columns hold different numbers of samples: {lengths}; give one entry per sample")
        count = next(iter(lengths.values()), 0)
        return [{key: value[index] for key, value in columns.items()} for index in range(count)]
    return list(features)


def sample_segments(row: Mapping, index: int, backbones: int | None = None) -> list[dict]:
    """The encoded segments of one row, in any form the processor writes (see the module docs); `backbones`, when
    given, is checked against the number of backbones each segment holds token ids for."""
    if "segments" in row:
        return [
            {
                "input_ids": _to_list(segment["input_ids"]),
                "token_unit_index": _to_list(segment["token_unit_index"]),
                "num_units": int(segment["num_units"]),
                "segment_side": int(segment.get("segment_side", 0)),
            }
            for segment in row["segments"]
        ]
    missing = [key for key in ROW_KEYS[:3] if key not in row]
    if missing:
        raise ValueError(
            f"sample {index} lacks {missing} (keys: {sorted(row)}). Build samples with the processor "
            "(processor(..., return_tensors=None), or MetaEmbedDataset): Trainer drops keys that are not forward() "
            "arguments, such as the 'segments' key of release 0.1's per-sample form"
        )
    input_ids, token_unit_index = _to_list(row["input_ids"]), _to_list(row["token_unit_index"])
    unit_mask = _to_list(row["unit_mask"])
    if unit_mask and not isinstance(unit_mask[0], list):
        return [_padded_row_segment(row, index, input_ids, token_unit_index, unit_mask, backbones)]
    sides = _to_list(row.get("segment_side_index"))
    sides = [0] * len(input_ids) if sides is None else sides
    if not len(input_ids) == len(token_unit_index) == len(unit_mask) == len(sides):
        raise ValueError(
            f"sample {index}: input_ids, token_unit_index, unit_mask and segment_side_index must list the same "
            f"segments; got {len(input_ids)}, {len(token_unit_index)}, {len(unit_mask)} and {len(sides)}"
        )
    for ids in input_ids:
        if backbones is not None and len(ids) != backbones:
            raise ValueError(
                f"sample {index}: a segment holds token ids for {len(ids)} backbones but this processor has "
                f"{backbones}; encode the samples with this model's processor"
            )
    return [
        {"input_ids": ids, "token_unit_index": units, "num_units": int(sum(mask)), "segment_side": int(side)}
        for ids, units, mask, side in zip(input_ids, token_unit_index, unit_mask, sides)
    ]


def _padded_row_segment(row: Mapping, index: int, input_ids, token_unit_index, unit_mask, backbones: int) -> dict:
    """The one segment of a row cut from a padded `single` batch (`(backbones, tokens)` ids), its padding dropped."""
    attention_mask = _to_list(row.get("attention_mask"))
    if attention_mask is None or not isinstance(input_ids[0], list) or len(input_ids) != (backbones or len(input_ids)):
        raise ValueError(
            f"sample {index}: input_ids {_shape(input_ids)} and unit_mask {_shape(unit_mask)} are neither one row "
            "of a padded batch (with its attention_mask) nor the unpadded per-sample form; encode the samples with "
            "processor(..., return_tensors=None), or keep the padded batch's attention_mask"
        )
    lengths = [int(sum(mask)) for mask in attention_mask]
    return {
        "input_ids": [ids[:length] for ids, length in zip(input_ids, lengths)],
        "token_unit_index": [units[:length] for units, length in zip(token_unit_index, lengths)],
        "num_units": int(sum(unit_mask)),
        "segment_side": 0,
    }


def _shape(nested) -> str:
    shape = []
    while isinstance(nested, list):
        shape.append(len(nested))
        nested = nested[0] if nested else None
    return str(tuple(shape))


def label_of(row: Mapping) -> Any:
    """The label of a row (`labels`, `label` or `label_ids`), None if it has none."""
    for key in LABEL_KEYS:
        if row.get(key) is not None:
            return _to_list(row[key])
    return None


def check_labels(labels: list, unit_counts: list[int], per_unit_labels: bool, where: str = "") -> bool:
    """Check the labels of several samples; True when they are per-unit labels.

    Per-unit labels (`per_unit_labels=True`, or lists whose lengths differ between samples) must hold one label per
    unit of their sample; scalars and lists of one length are one label (or one row of targets) per sample. A sample
    without a label among labelled ones, a label that is a string (a class name, not its id), a mix of scalars and
    lists, or a per-unit list of the wrong length is a `ValueError` naming the sample (`where` follows its index,
    e.g. " of this batch").
    """
    unlabelled = [index for index, label in enumerate(labels) if label is None]
    if unlabelled:
        raise ValueError(f"samples {unlabelled}{where} have no label while others do; label every sample or none")
    for index, label in enumerate(labels):
        values = label if isinstance(label, list | tuple) else [label]
        text = next((value for value in values if isinstance(value, str)), None)
        if text is not None:
            raise ValueError(
                f"sample {index}{where} has the label {text!r:.40}, a string; labels are numbers: class ids 0 to "
                "num_labels - 1 (map class names with the model's config, e.g. [config.label2id[name] for name in "
                "names], or build the model with id2label/label2id), or floats for regression"
            )
    is_list = [isinstance(label, list | tuple) for label in labels]
    if not any(is_list) and not per_unit_labels:
        return False
    if not all(is_list):
        index = is_list.index(False) if any(is_list) else 0
        need = "per_unit_labels=True needs a list of one label per unit" if per_unit_labels else "others have lists"
        raise ValueError(
            f"sample {index}{where} has the label {labels[index]!r:.40} but {need}; give every sample the same "
            "kind of label"
        )
    lengths = [len(label) for label in labels]
    if not per_unit_labels and len(set(lengths)) == 1:
        return False
    for index, (length, count) in enumerate(zip(lengths, unit_counts)):
        if length != count:
            why = "" if per_unit_labels else " (lists of different lengths are read as per-unit labels)"
            raise ValueError(
                f"sample {index}{where} has {length} labels for {count} units{why}; give one label per unit, in unit "
                "order, -100 where none applies (after truncation, only for the units kept)"
            )
    return True


def collate_labels(labels: list, unit_counts: list[int], units: int, per_unit_labels: bool) -> torch.Tensor:
    """The labels of a batch as one tensor (checked by `check_labels`): per-unit labels padded with -100 (ignored by
    the loss) to `(samples, units)`, other labels stacked."""
    if not check_labels(labels, unit_counts, per_unit_labels, where=" of this batch"):
        return torch.as_tensor(labels)
    dtype = torch.as_tensor([value for label in labels for value in label]).dtype
    padded = torch.full((len(labels), units), -100, dtype=dtype)
    for row, values in enumerate(labels):
        padded[row, : len(values)] = torch.as_tensor(values, dtype=dtype)
    return padded


__all__ = ["LABEL_KEYS", "check_labels", "collate_labels", "feature_rows", "label_of", "sample_row", "sample_segments"]
