"""The splits every cell of a comparison trains and tests on: k-fold cross-validation, a split column, or the
library's identity-clustered splits (`hf_metaembed.data.identity_split`).

A `Splits` is a list of folds, each `(train, validation, test)` index arrays over the data set. Early stopping reads
the validation part only and the test part is scored once, after training. In k-fold cross-validation fold `f`
tests on part `f`, stops early on part `f + 1` and trains on the rest, so every item is tested exactly once per seed;
the parts are stratified by class for classification. `Splits.digest` fingerprints the folds: every cell records it,
and a resumed comparison refuses results made on other splits.

Every check here runs before any backbone does.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# names a split column may use for each part (compared lower-cased)
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}


class SplitError(ValueError):
    """A split that cannot give a fair comparison (no test items, too few items for the folds, a one-class label)."""


@dataclass
class Splits:
    """Folds of `(train, validation, test)` item indices, and how they were made (`method`, for reports)."""

    folds: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    method: str

    @property
    def digest(self) -> str:
        """sha256 (first 16 hex digits) of every fold's sorted indices."""
        payload = [[sorted(int(i) for i in part) for part in fold] for fold in self.folds]
        return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()[:16]

    @property
    def test_items(self) -> np.ndarray:
        """Every tested item, in the order predictions are stored (fold by fold)."""
        return np.concatenate([test for _, _, test in self.folds])

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "digest": self.digest,
            "folds": [
                {name: [int(i) for i in part] for name, part in zip(("train", "validation", "test"), fold)}
                for fold in self.folds
            ],
        }


def _parts(labels: Sequence, folds: int, seed: int, stratify: bool) -> np.ndarray:
    """Part (0 .. folds-1) of each item; dealt round-robin within each class after a seeded shuffle, so every part
    holds each class in about its share."""
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), dtype=np.int64)
    groups = [np.arange(len(labels))]
    if stratify:
        values = np.asarray(labels)
        groups = [np.flatnonzero(values == value) for value in np.unique(values)]
    offset = 0
    for members in groups:
        members = rng.permutation(members)
        part[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return part


def kfold_splits(labels: Sequence, folds: int, seed: int = 0, stratify: bool = True) -> Splits:
    """k-fold cross-validation: fold `f` tests on part `f`, validates on part `f + 1 (mod folds)`, trains on the
    rest (see the module docstring). `stratify`: deal each class over the parts (classification)."""
    if not isinstance(folds, int) or folds < 3:
        raise SplitError(
            f"--folds is {folds!r}; k-fold comparison needs at least 3 folds (one to test, one to stop early on, "
            "the rest to train)"
        )
    if stratify:
        values, counts = np.unique(np.asarray(labels), return_counts=True)
        if counts.min() < folds:
            rare = values[counts.argmin()].item()
            raise SplitError(
                f"class {rare!r} has {counts.min()} items, fewer than the {folds} folds: every fold's test part "
                f"needs one; use --folds {max(3, int(counts.min()))} or fewer, or add items of that class"
            )
    elif len(labels) < 2 * folds:
        raise SplitError(f"{len(labels)} items are too few for {folds} folds; use fewer folds")
    part = _parts(labels, folds, seed, stratify)
    result = []
    for fold in range(folds):
        test = np.flatnonzero(part == fold)
        validation = np.flatnonzero(part == (fold + 1) % folds)
        train = np.flatnonzero((part != fold) & (part != (fold + 1) % folds))
        result.append((train, validation, test))
    return Splits(result, f"{folds}-fold cross-validation" + (" (stratified)" if stratify else ""))


def _validation_from_train(train: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `share` of the training items (at least one) for early stopping."""
    shuffled = np.random.default_rng(seed).permutation(train)
    count = max(1, int(round(share * len(train))))
    return np.sort(shuffled[count:]), np.sort(shuffled[:count])


def column_splits(values: Sequence, column: str, seed: int = 0, validation_share: float = 0.1) -> Splits:
    """One fold from a split column naming each item's part (`train`, `validation`/`valid`/`val`/`dev`, `test`).
    Without validation items, `validation_share` of the training items (seeded) are held out for early stopping."""
    names = {}
    for name, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            names[alias] = name
    assigned = []
    for index, value in enumerate(values):
        name = names.get(str(value).strip().lower())
        if name is None:
            raise SplitError(
                f"item {index}: split column {column!r} holds {value!r}; use train, validation (or valid, val, dev) "
                "or test"
            )
        assigned.append(name)
    assigned = np.array(assigned)
    train, validation, test = (np.flatnonzero(assigned == name) for name in ("train", "validation", "test"))
    return _checked_fold(train, validation, test, seed, validation_share, f"split column {column!r}")


def _checked_fold(train, validation, test, seed: int, validation_share: float, source: str) -> Splits:
    if len(test) == 0:
        raise SplitError(f"{source} gives no test items; a comparison needs some to score every cell on")
    if len(train) < 2:
        raise SplitError(f"{source} gives {len(train)} training items; at least 2 are needed")
    if len(validation) == 0:
        train, validation = _validation_from_train(train, validation_share, seed)
    return Splits([(train, validation, test)], source)


def identity_splits(records: Sequence, identity: float = 0.3, seed: int = 0, method: str = "auto") -> Splits:
    """One fold from `hf_metaembed.data.identity_split` (80/10/10, similar sequences or complexes kept in one part).

    Args:
        records: sequence strings, or objects with `ligand` and `receptor` chain lists (and optionally `pdb`).
    """
    from ..data.splits import identity_split

    split = identity_split(records, identity=identity, seed=seed, method=method)
    return _checked_fold(
        np.array(split.train, dtype=np.int64),
        np.array(split.validation, dtype=np.int64),
        np.array(split.test, dtype=np.int64),
        seed,
        0.1,
        f"identity split at {identity:.0%} ({split.method})",
    )


def check_labels_in_splits(splits: Splits, labels: Sequence, task: str) -> None:
    """A classification comparison needs two classes in every training part (a one-class model learns nothing)."""
    if task != "classification":
        return
    values = np.asarray(labels)
    for number, (train, _, _) in enumerate(splits.folds):
        present = np.unique(values[train])
        if len(present) < 2:
            raise SplitError(
                f"fold {number}: every training label is {present[0].item()!r}; classification needs two or more "
                "classes in each training part"
            )


__all__ = [
    "SPLIT_ALIASES",
    "SplitError",
    "Splits",
    "check_labels_in_splits",
    "column_splits",
    "identity_splits",
    "kfold_splits",
]
