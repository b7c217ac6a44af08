"""`Trainer` support: per-sample rows whose keys are `forward` arguments, and the collator that pads them.

`Trainer` keeps only the dataset columns that the model's `forward` accepts (`remove_unused_columns=True`, the
default), so every sample is stored under `forward`'s own names, as `MetaEmbedProcessor(..., return_tensors=None)`
writes it (one row per sample, independent of the other samples):

    input_ids, token_unit_index   per segment, per backbone: a list of token ids / unit indices
    unit_mask                     per segment: one 1 per unit
    segment_side_index            per segment: 0 ligand, 1 receptor (0 for `single`)
    labels                        a number, a list of numbers (multi-label / several targets) or per-unit labels

and `MetaEmbedDataCollator` (or `transformers.DataCollatorWithPadding(processor)`) pads a list of such rows with
`MetaEmbedProcessor.pad`. `MetaEmbedTrainer` is a `Trainer` that evaluates and predicts in token-budget batches.

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

import numpy as np
from torch.utils.data import DataLoader, Dataset, IterableDataset
from transformers import BatchEncoding, Trainer
from transformers.trainer_pt_utils import find_batch_size
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize
from transformers.utils import is_datasets_available

from ..batching import DEFAULT_MAX_TOKENS, TokenBudgetBatchSampler
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


class MetaEmbedTrainer(Trainer):
    """`transformers.Trainer` that evaluates and predicts longest first in token-budget batches
    (`hf_metaembed.batching`): at most `eval_max_tokens` padded tokens per backbone pass and
    `per_device_eval_batch_size` samples per batch, so evaluation sets of mixed lengths waste little on padding.
    Predictions, labels and metrics come out in dataset order, as from `Trainer`; the loss is the mean over samples.
    Training batches are `Trainer`'s own. In a multi-process run, for datasets of cached backbone states and with
    `include_for_metrics` or `batch_eval_metrics`, evaluation batches as `Trainer` does.

    Args:
        eval_max_tokens: the token budget, one number or one per backbone; every other argument is `Trainer`'s.
    """

    def __init__(self, *args, eval_max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eval_max_tokens = eval_max_tokens
        self._batch_losses: list[tuple[float, int]] | None = None

    def _token_budget_loader(self, dataset, description: str) -> DataLoader | None:
        """A prepared DataLoader over token-budget batches of `dataset`, or None where `Trainer`'s own batching
        applies (several processes, an iterable or empty dataset, samples without token ids, per-batch metrics)."""
        if self.args.world_size > 1 or self.args.include_for_metrics or self.args.batch_eval_metrics:
            return None
        if dataset is None or isinstance(dataset, IterableDataset):
            return None
        collator = self._get_collator_with_removed_columns(self.data_collator, description=description)
        if is_datasets_available():
            import datasets

            if isinstance(dataset, datasets.Dataset):  # as Trainer does: drop the columns forward() does not take
                dataset, collator = self._remove_unused_columns(dataset, description=description), self.data_collator
        rows = [dataset[index] for index in range(len(dataset))]
        if not rows or not all(isinstance(row, Mapping) and ("input_ids" in row or "segments" in row) for row in rows):
            return None
        sampler = TokenBudgetBatchSampler.from_features(
            rows, max_tokens=self.eval_max_tokens, max_batch_size=self.args.eval_batch_size
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        loader = self.accelerator.prepare(loader)
        # read by `evaluation_loop`, which puts the results back in dataset order
        loader.token_budget_order = [position for batch in sampler for position in batch]
        return loader

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else eval_dataset
        loader = self._token_budget_loader(dataset if dataset is not None else self.eval_dataset, "Evaluation")
        return loader if loader is not None else super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        loader = self._token_budget_loader(test_dataset, "test")
        return loader if loader is not None else super().get_test_dataloader(test_dataset)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if loss is not None and self._batch_losses is not None:
            self._batch_losses.append((float(loss), find_batch_size(inputs)))
        return loss, logits, labels

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> EvalLoopOutput:
        """`Trainer.evaluation_loop`; over token-budget batches, predictions and labels are put back in dataset order
        before the metrics are computed (order-dependent ones, such as a bootstrap interval, match `Trainer`'s), and
        the loss is the mean over samples (`Trainer` weights every batch as a full one)."""
        order = getattr(dataloader, "token_budget_order", None)
        if order is None:
            return super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        compute_metrics, self.compute_metrics, self._batch_losses = self.compute_metrics, None, []
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            batch_losses = self._batch_losses
        finally:
            self.compute_metrics, self._batch_losses = compute_metrics, None
        inverse = np.argsort(order)

        def in_dataset_order(value):
            if value is None:
                return None
            if isinstance(value, tuple | list):
                return type(value)(in_dataset_order(item) for item in value)
            return value[inverse]

        predictions, labels = in_dataset_order(output.predictions), in_dataset_order(output.label_ids)
        metrics = dict(output.metrics)
        if batch_losses:
            samples = sum(count for _, count in batch_losses)
            metrics[f"{metric_key_prefix}_loss"] = sum(loss * count for loss, count in batch_losses) / samples
        if compute_metrics is not None and predictions is not None and labels is not None:
            computed = denumpify_detensorize(
                compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
            )
            metrics.update({f"{metric_key_prefix}_{key}": value for key, value in computed.items()})
        return EvalLoopOutput(
            predictions=predictions, label_ids=labels, metrics=metrics, num_samples=output.num_samples
        )


__all__ = [
    "FEATURE_KEYS",
    "LABEL_KEYS",
    "MetaEmbedDataCollator",
    "MetaEmbedDataset",
    "MetaEmbedTrainer",
    "from_trainer_feature",
    "to_trainer_features",
]
