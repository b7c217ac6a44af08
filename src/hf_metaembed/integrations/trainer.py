"""`Trainer` support: per-sample rows whose keys are `forward` arguments, and the collator that pads them.

`Trainer` keeps only the dataset columns that the model's `forward` accepts (`remove_unused_columns=True`, the
default), so every sample is stored under `forward`'s own names, as `MetaEmbedProcessor(..., return_tensors=None)`
writes it (one row per sample, independent of the other samples):

    input_ids, token_unit_index   per segment, per backbone: a list of token ids / unit indices
    unit_mask                     per segment: one 1 per unit
    segment_side_index            per segment: 0 ligand, 1 receptor (0 for `single`)
    labels                        a number, a list of numbers (multi-label / several targets) or per-unit labels

and `MetaEmbedDataCollator` (or `transformers.DataCollatorWithPadding(processor)`) pads a list of such rows with
`MetaEmbedProcessor.pad`.

```python
train = MetaEmbedDataset(processor, sequences, labels=affinities)
# or, with datasets:  ds.map(lambda batch: processor(batch["sequence"]), batched=True)
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                  data_collator=MetaEmbedDataCollator(processor), processing_class=processor,
                  compute_metrics=compute_metrics)
```

Not a model file: the model files never import it.
"""

from collections.abc import Mapping, Sequence

from torch.utils.data import Dataset
from transformers import BatchEncoding

from ..modeling.feature_rows import LABEL_KEYS, check_labels, feature_rows, label_of, sample_row, sample_segments
from ..modeling.processing_metaembed import MetaEmbedProcessor

FEATURE_KEYS = ("input_ids", "token_unit_index", "unit_mask", "segment_side_index")


def to_trainer_features(features: Sequence[Mapping] | Mapping, labels: Sequence | None = None) -> list[dict]:
    """One row per sample under `forward`'s names, from any per-sample processor output.

    Args:
        features: `MetaEmbedProcessor(..., return_tensors=None)` output (a mapping of columns), a list of its rows,
            or release 0.1's per-sample dicts holding `"segments"`; each may carry its label.
        labels: one label per sample (a number, a list of numbers, or per-unit labels); overrides feature labels.

    Returns:
        One dict per sample with `input_ids` and `token_unit_index` (segments x backbones x tokens, nested lists),
        `unit_mask` (segments x units, ones), `segment_side_index` (segments,) and `labels` when known.
    """
    rows = feature_rows(features)
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"got {len(labels)} labels for {len(rows)} samples; give exactly one label per sample")
    return [
        sample_row(sample_segments(row, index), labels[index] if labels is not None else label_of(row))
        for index, row in enumerate(rows)
    ]


def from_trainer_feature(feature: Mapping, index: int = 0) -> dict:
    """Release 0.1's per-sample form (`{"segments": [...], "labels": ...}`) of one row."""
    native = {"segments": sample_segments(feature, index)}
    label = label_of(feature)
    if label is not None:
        native["labels"] = label
    return native


class MetaEmbedDataset(Dataset):
    """Tokenized samples ready for `Trainer`: each item is a dict of `forward` argument names (see module docs).

    Args:
        processor: the model's `MetaEmbedProcessor`.
        sequences: texts or protein sequences (architecture `single`).
        ligand, receptor: per complex, the chains of each side (pair architectures).
        labels: one label per sample (number, list of numbers, or per-unit labels); omit for prediction. Per-unit
            labels (lists of different lengths, or `per_unit_labels=True`) are checked here: a list that does not
            hold one label per unit of its sample is an error naming the sample.
        truncation, per_unit_labels: override the processor's settings.
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
        per_unit_labels: bool | None = None,
        **columns: Sequence,
    ) -> None:
        encoded = processor(
            sequences, ligand=ligand, receptor=receptor, labels=labels, return_tensors=None, truncation=truncation
        )
        self.samples = feature_rows(encoded)
        if labels is not None:
            per_unit = processor.per_unit_labels if per_unit_labels is None else per_unit_labels
            units = [sum(sum(mask) for mask in sample["unit_mask"]) for sample in self.samples]
            check_labels([sample["labels"] for sample in self.samples], units, per_unit)
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

    Accepts every per-sample form `MetaEmbedProcessor.pad` reads: rows from `MetaEmbedDataset` or
    `processor(..., return_tensors=None)` (also as `datasets` stores them), rows of a padded batch that
    `Dataset.map` split (architecture `single`), and release 0.1's `{"segments": ...}` form (with
    `remove_unused_columns=False`). Labels may be named `labels`, `label` or `label_ids`; other keys are ignored.

    Args:
        processor: the model's `MetaEmbedProcessor`.
        per_unit_labels: overrides the processor's setting (see `MetaEmbedProcessor`).

    Returns:
        A `BatchEncoding` with `input_ids`, `attention_mask`, `token_unit_index` `(segments, backbones, tokens)`,
        `unit_mask (segments, units)`, for pair architectures `segment_sample_index`/`segment_side_index`
        `(segments,)`, and `labels` when the samples have them.
    """

    def __init__(self, processor: MetaEmbedProcessor, per_unit_labels: bool | None = None) -> None:
        self.processor = processor
        self.per_unit_labels = per_unit_labels

    def __call__(self, features: Sequence[Mapping]) -> BatchEncoding:
        return self.processor.pad(features, per_unit_labels=self.per_unit_labels)


__all__ = [
    "FEATURE_KEYS",
    "LABEL_KEYS",
    "MetaEmbedDataCollator",
    "MetaEmbedDataset",
    "from_trainer_feature",
    "to_trainer_features",
]
