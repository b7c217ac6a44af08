"""One run of a comparison: one cell, one seed, every fold, trained on cached backbone states only.

A cell's model is a `MetaEmbedForSequenceClassification` over the cell's backbones, built from the comparison's
reading config with the cell's fusion, layer, pooling and architecture. Its backbones are built on the meta device:
they hold no weights and cannot run, so a cell can only ever read the feature cache. Every cell gets the same budget
(`Budget`): AdamW for at most `epochs` epochs in batches of `batch_size`, the validation loss checked after every
epoch, training stopped after `patience` epochs without improvement and the best epoch's weights restored; then the
test items are predicted once. The model's initialisation, dropout and batch order depend on the seed and the fold
only, never on the cell.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ..cache import CachedFeatureCollator, CachedFeatureDataset, FeatureCache
from ..fitting import fit_fusion
from ..modeling.configuration_metaembed import MetaEmbedConfig
from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel
from .grid import Cell, is_fitted_fusion
from .splits import Splits

# config entries that belong to the saved reading model, not to a cell's classifier
_NOT_CELL_SETTINGS = (
    "auto_map",
    "architectures",
    "transformers_version",
    "model_type",
    "_name_or_path",
    "id2label",
    "label2id",
    "problem_type",
    "num_labels",
    "pooling",
)


@dataclass
class Budget:
    """What every cell gets: the same optimiser, epochs, early-stopping patience and batch size."""

    epochs: int = 30
    patience: int = 5
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    batch_size: int = 32

    def check(self) -> "Budget":
        for name in ("epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(
                f"learning_rate must be positive and weight_decay 0 or more, got {self.learning_rate!r} and "
                f"{self.weight_decay!r}"
            )
        return self


class CellSkipped(Exception):
    """A cell that cannot run in this installation (e.g. a fitted fusion with no way to fit it); says why."""


@dataclass
class RunContext:
    """Everything a run needs, picklable for worker processes."""

    cache_dir: str
    reader_settings: dict
    hidden_states: list[int]
    stacked_layers: bool
    inputs: dict
    labels: list
    task: str
    class_names: list[str] | None
    splits: Splits
    budget: Budget
    fixed_settings: dict = field(default_factory=dict)
    threads: int = 1
    protocol: str = ""
    # the read's copy of the code of backbones that ship their own (`reading.save_own_code`), None when none does
    code_dir: str | None = None


class CellFeatures(Dataset):
    """Cached items of some samples, holding only a cell's backbones, each at the cell's layer.

    Args:
        base: the comparison's `CachedFeatureDataset` (every backbone, every sample).
        items: the samples to hold, in order.
        backbones: the cell's backbone indices.
        layer_index: per cell backbone, the hidden state to take from a stacked cache entry `(units, layers, d)`,
            or None to keep the entry as it is.
    """

    def __init__(self, base: CachedFeatureDataset, items, backbones, layer_index: list[int | None]) -> None:
        self.base, self.items = base, [int(i) for i in items]
        self.backbones, self.layer_index = list(backbones), layer_index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[self.items[index]])
        item["backbone_states"] = [
            [
                segment[b] if layer is None else segment[b][:, layer]
                for b, layer in zip(self.backbones, self.layer_index)
            ]
            for segment in item["backbone_states"]
        ]
        return item


def cell_layers(cell: Cell, context: RunContext) -> tuple[list, list[int | None]]:
    """Per cell backbone, the layer its config names and the index to take from a stacked cache entry.

    With one layer choice (`"last"`) the cache holds the states as they are. With several, the cache holds every
    hidden state (`"mix"` reading, `(units, layers, d)`) and each cell takes its own: `"last"` is the final hidden
    state (what `last_hidden_state` is for transformers encoders), an index picks that hidden state, `"mix"` keeps
    them all for the cell's learned scalar mix. A backbone with one hidden state (a static table) always reads it.
    """
    config_layers, indices = [], []
    for backbone in cell.backbones:
        single = context.hidden_states[backbone] == 1
        config_layers.append("last" if single else cell.layer)
        if not context.stacked_layers or (cell.layer == "mix" and not single):
            indices.append(None)
        else:
            indices.append(-1 if single or cell.layer == "last" else int(cell.layer))
    return config_layers, indices


def cell_config(cell: Cell, context: RunContext) -> MetaEmbedConfig:
    """The classifier config of `cell`: the reading config restricted to the cell's backbones and layers, with the
    cell's fusion, pooling and architecture and the comparison's task and fixed settings."""
    settings = {k: v for k, v in context.reader_settings.items() if k not in _NOT_CELL_SETTINGS}
    layers, _ = cell_layers(cell, context)
    settings["backbones"] = [
        {**context.reader_settings["backbones"][b], "layer": layer} for b, layer in zip(cell.backbones, layers)
    ]
    settings.update(context.fixed_settings)
    settings.update(fusion=cell.fusion, architecture=cell.architecture)
    if cell.pooling is not None:
        settings["pooling"] = cell.pooling
    if context.task == "classification":
        names = context.class_names
        settings.update(
            num_labels=len(names),
            problem_type="single_label_classification",
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )
    else:
        settings.update(num_labels=1, problem_type="regression")
    return MetaEmbedConfig(**settings)


class _Worker:
    """Per process: the weightless backbones and the cached dataset of each architecture, built once (a backbone
    with its own code from the code the read copied, `RunContext.code_dir`)."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        config = MetaEmbedConfig(**{k: v for k, v in context.reader_settings.items() if k in _KEEP_FOR_READER})
        if context.code_dir is not None:  # a backbone with its own code is rebuilt from the read's copy of it
            config.name_or_path = context.code_dir
        with torch.device("meta"):
            self.backbones = MetaEmbedModel(config).backbones
        self.forward_calls = 0
        for backbone in self.backbones:
            backbone.register_forward_pre_hook(self._count)
        self.cache = FeatureCache(context.cache_dir)
        self.datasets: dict[str, CachedFeatureDataset] = {}

    def _count(self, module, args) -> None:
        self.forward_calls += 1

    def dataset(self, architecture: str) -> CachedFeatureDataset:
        if architecture not in self.datasets:
            self.datasets[architecture] = CachedFeatureDataset(
                self.cache, **self.context.inputs, labels=self.context.labels, architecture=architecture
            )
        return self.datasets[architecture]


_KEEP_FOR_READER = ("backbones", "level", "subword_pooling", "window_size", "window_overlap", "window_combine")
_WORKERS: dict[str, _Worker] = {}


def worker_for(context: RunContext) -> _Worker:
    """This process's `_Worker` for `context` (kept between runs)."""
    key = f"{context.cache_dir}|{context.protocol}"
    worker = _WORKERS.get(key)
    if worker is None:
        _WORKERS.clear()
        worker = _WORKERS[key] = _Worker(context)
    return worker


def _batches(order, size: int):
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _collate(features: CellFeatures, rows, collator: CachedFeatureCollator) -> dict:
    return collator([features[int(row)] for row in rows])


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def _validation_loss(model, features: CellFeatures, batch_size: int, collator) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for rows in _batches(np.arange(len(features)), batch_size):
            total += float(model(**_collate(features, rows, collator)).loss) * len(rows)
    return total / len(features)


def predict(model, features: CellFeatures, batch_size: int) -> np.ndarray:
    """Logits `(items, classes)` or regression values `(items,)` of every item, in order."""
    collator = CachedFeatureCollator()
    model.eval()
    outputs = []
    with torch.no_grad():
        for rows in _batches(np.arange(len(features)), batch_size):
            batch = _collate(features, rows, collator)
            batch.pop("labels", None)
            outputs.append(model(**batch).logits.float())
    logits = torch.cat(outputs).numpy()
    return logits[:, 0] if model.config.problem_type == "regression" else logits


def train_fold(model, train: CellFeatures, validation: CellFeatures, budget: Budget, seed: int) -> tuple[int, int]:
    """Train with early stopping on the validation loss; the best epoch's weights are restored.

    Returns:
        `(epochs run, best epoch)` (epochs counted from 1).
    """
    collator = CachedFeatureCollator()
    parameters = _trainable(model)
    optimizer = torch.optim.AdamW(parameters.values(), lr=budget.learning_rate, weight_decay=budget.weight_decay)
    rng = np.random.default_rng(seed)
    best_loss, best_epoch, best_state, epoch = float("inf"), 0, None, 0
    for epoch in range(1, budget.epochs + 1):
        model.train()
        for rows in _batches(rng.permutation(len(train)), budget.batch_size):
            loss = model(**_collate(train, rows, collator)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss = _validation_loss(model, validation, budget.batch_size, collator)
        if loss < best_loss:
            best_loss, best_epoch = loss, epoch
            best_state = {name: parameter.detach().clone() for name, parameter in parameters.items()}
        elif epoch - best_epoch >= budget.patience:
            break
    if best_state is not None:
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(best_state[name])
    return epoch, best_epoch


def _fit_fusion(model, features: CellFeatures, fusion: str) -> None:
    """Fit a fitted fusion on the training features of this fold only, through `hf_metaembed.fitting.fit_fusion` on
    every real unit vector of the fold, one `(vectors, d_i)` array per backbone (a fusion it cannot fit was skipped
    before any run)."""
    per_backbone = [[] for _ in features.backbones]
    for index in range(len(features)):
        for segment in features[index]["backbone_states"]:
            for position, states in enumerate(segment):
                per_backbone[position].append(torch.as_tensor(states, dtype=torch.float32))
    try:
        fit_fusion(model, [torch.cat(states).numpy() for states in per_backbone], seed=0)
    except ValueError as error:  # e.g. a fold with fewer training vectors than the fusion's width
        reason = f"fusion {fusion!r} could not be fitted on this fold's training features: {error}"
        raise CellSkipped(reason) from error


def run_cell(context: RunContext, cell: Cell, seed: int) -> dict:
    """Train and test `cell` with `seed` on every fold; returns the run's record (predictions in the order of
    `context.splits.test_items`)."""
    started = time.perf_counter()
    torch.set_num_threads(context.threads)
    worker = worker_for(context)
    calls_before = worker.forward_calls
    base = worker.dataset(cell.architecture)
    _, layer_index = cell_layers(cell, context)
    config = cell_config(cell, context)
    predictions, epochs, best_epochs = [], [], []
    for fold, (train, validation, test) in enumerate(context.splits.folds):
        run_seed = 1000 * seed + fold
        torch.manual_seed(run_seed)
        model = MetaEmbedForSequenceClassification(config, backbones=[worker.backbones[b] for b in cell.backbones])
        train_set, validation_set, test_set = (
            CellFeatures(base, part, cell.backbones, layer_index) for part in (train, validation, test)
        )
        if is_fitted_fusion(cell.fusion):
            _fit_fusion(model, train_set, cell.fusion)
        ran, best = train_fold(model, train_set, validation_set, context.budget, run_seed)
        epochs.append(ran)
        best_epochs.append(best)
        predictions.append(predict(model, test_set, context.budget.batch_size))
    return {
        "cell": cell.to_json(),
        "seed": seed,
        "split_digest": context.splits.digest,
        "predictions": np.concatenate(predictions).tolist(),
        "epochs": epochs,
        "best_epochs": best_epochs,
        "seconds": round(time.perf_counter() - started, 3),
        "backbone_forward_calls": worker.forward_calls - calls_before,
    }


__all__ = [
    "Budget",
    "CellFeatures",
    "CellSkipped",
    "RunContext",
    "cell_config",
    "cell_layers",
    "predict",
    "run_cell",
    "train_fold",
]
