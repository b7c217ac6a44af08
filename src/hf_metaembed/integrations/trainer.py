"""`Trainer` support: per-sample features whose keys are `forward` arguments, and the collator that pads them.

`Trainer` keeps only the dataset columns that the model's `forward` accepts (`remove_unused_columns=True`, the
default). `MetaEmbedProcessor(..., return_tensors=None)` keeps each sample under one `"segments"` key, which
`Trainer` would drop, so `MetaEmbedDataset` stores every sample under `forward`'s own names instead:

    input_ids, token_unit_index   per segment, per backbone: a list of token ids / unit indices
    unit_mask                     per segment: one 1 per unit
    segment_side_index            per segment: 0 ligand, 1 receptor (0 for `single`)
    labels                        a number, a list of numbers (multi-label / several targets) or per-unit labels

and `MetaEmbedDataCollator` turns a list of such samples back into a padded batch with `MetaEmbedProcessor.pad`.

```python
train = MetaEmbedDataset(processor, sequences, labels=affinities)
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                  data_collator=MetaEmbedDataCollator(processor), processing_class=processor,
                  compute_metrics=compute_metrics)
```

The column layout is plain nested lists, so the same samples also fill a `datasets.Dataset`
(`Dataset.from_list(list(train))`). Not a model file: the model files never import it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset
from transformers import BatchEncoding

from ..modeling.processing_metaembed import MetaEmbedProcessor

FEATURE_KEYS = ("input_ids", "token_unit_index", "unit_mask", "segment_side_index")
LABEL_KEYS = ("labels", "label", "label_ids")


def _to_list(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def to_trainer_features(features: Sequence[Mapping], labels: Sequence | None = None) -> list[dict]:
    """Rewrite per-sample features from `MetaEmbedProcessor(..., return_tensors=None)` under `forward`'s names.

    Args:
        features: one dict per sample holding `"segments"` (each with `input_ids`, `token_unit_index` per backbone,
            `num_units` and `segment_side`) and optionally `"labels"`.
        labels: one label per sample (a number, a list of numbers, or per-unit labels); overrides feature labels.

    Returns:
        One dict per sample with `input_ids` and `token_unit_index` (segments x backbones x tokens, nested lists),
        `unit_mask` (segments x units, ones), `segment_side_index` (segments,) and `labels` when known.
    """
    if labels is not None and len(labels) != len(features):
        raise ValueError(f"got {len(labels)} labels for {len(features)} samples; give exactly one label per sample")
    rows = []
    for index, feature in enumerate(features):
        if "segments" not in feature:
            raise ValueError(
                f"sample {index} has no 'segments' (keys: {sorted(feature)}); pass the output of "
                "MetaEmbedProcessor(..., return_tensors=None)"
            )
        segments = feature["segments"]
        row = {
            "input_ids": [segment["input_ids"] for segment in segments],
            "token_unit_index": [segment["token_unit_index"] for segment in segments],
            "unit_mask": [[1] * segment["num_units"] for segment in segments],
            "segment_side_index": [segment.get("segment_side", 0) for segment in segments],
        }
        label = labels[index] if labels is not None else feature.get("labels")
        if label is not None:
            row["labels"] = _to_list(label)
        rows.append(row)
    return rows


def from_trainer_feature(feature: Mapping, index: int = 0) -> dict:
    """The processor's per-sample form (`{"segments": [...], "labels": ...}`) of one `to_trainer_features` row."""
    if "segments" in feature:
        native = {"segments": feature["segments"]}
    else:
        missing = [key for key in FEATURE_KEYS[:3] if key not in feature]
        if missing:
            raise ValueError(
                f"sample {index} lacks {missing} (keys: {sorted(feature)}). Build samples with MetaEmbedDataset or "
                "to_trainer_features: Trainer drops keys that are not forward() arguments, such as the 'segments' "
                "key of MetaEmbedProcessor(..., return_tensors=None) output"
            )
        input_ids = feature["input_ids"]
        token_unit_index = feature["token_unit_index"]
        unit_mask = feature["unit_mask"]
        sides = feature.get("segment_side_index")
        if sides is None:
            sides = [0] * len(input_ids)
        if not len(input_ids) == len(token_unit_index) == len(unit_mask) == len(sides):
            raise ValueError(
                f"sample {index}: input_ids, token_unit_index, unit_mask and segment_side_index must list the same "
                f"segments; got {len(input_ids)}, {len(token_unit_index)}, {len(unit_mask)} and {len(sides)}"
            )
        native = {
            "segments": [
                {
                    "input_ids": _to_list(ids),
                    "token_unit_index": _to_list(units),
                    "num_units": int(sum(_to_list(mask))),
                    "segment_side": int(side),
                }
                for ids, units, mask, side in zip(input_ids, token_unit_index, unit_mask, sides)
            ]
        }
    for key in LABEL_KEYS:
        if feature.get(key) is not None:
            native["labels"] = _to_list(feature[key])
            break
    return native


class MetaEmbedDataset(Dataset):
    """Tokenized samples ready for `Trainer`: each item is a dict of `forward` argument names (see module docs).

    Args:
        processor: the model's `MetaEmbedProcessor`.
        sequences: texts or protein sequences (architecture `single`).
        ligand, receptor: per complex, the chains of each side (pair architectures).
        labels: one label per sample (number, list of numbers, or per-unit labels); omit for prediction.
        truncation: passed to the processor (cut inputs longer than a backbone accepts instead of raising).
        **columns: extra per-sample columns kept in each item (e.g. ids); `Trainer` drops them before collation.
    """

    def __init__(
        self,
        processor: MetaEmbedProcessor,
        sequences: Sequence[str] | None = None,
        *,
        ligand: Sequence[Sequence[str]] | None = None,
        receptor: Sequence[Sequence[str]] | None = None,
        labels: Sequence | None = None,
        truncation: bool | None = None,
        **columns: Sequence,
    ) -> None:
        features = processor(sequences, ligand=ligand, receptor=receptor, return_tensors=None, truncation=truncation)
        self.samples = to_trainer_features(features, labels)
        for name, values in columns.items():
            if len(values) != len(self.samples):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.samples)} samples")
            for sample, value in zip(self.samples, values):
                sample[name] = value

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


class MetaEmbedDataCollator:
    """Pads a list of samples into a model batch; the `data_collator` of a `Trainer` for MetaEmbed models.

    Accepts samples from `MetaEmbedDataset` / `to_trainer_features` (or `datasets` rows with those columns) and the
    processor's own per-sample form (`{"segments": ...}`, usable with `remove_unused_columns=False`). Labels may be
    named `labels`, `label` or `label_ids`; other keys are ignored.

    Returns:
        A `BatchEncoding` with `input_ids`, `attention_mask`, `token_unit_index` `(segments, backbones, tokens)`,
        `unit_mask (segments, units)`, for pair architectures `segment_sample_index`/`segment_side_index`
        `(segments,)`, and `labels` when the samples have them.
    """

    def __init__(self, processor: MetaEmbedProcessor) -> None:
        self.processor = processor

    def __call__(self, features: Sequence[Mapping]) -> BatchEncoding:
        native = [from_trainer_feature(feature, index) for index, feature in enumerate(features)]
        with_labels = ["labels" in feature for feature in native]
        if any(with_labels) and not all(with_labels):
            raise ValueError(
                f"samples {[i for i, has in enumerate(with_labels) if not has]} of this batch have no label while "
                "others do; label every sample or none"
            )
        return self.processor.pad(native)


__all__ = [
    "FEATURE_KEYS",
    "MetaEmbedDataCollator",
    "MetaEmbedDataset",
    "from_trainer_feature",
    "to_trainer_features",
]
