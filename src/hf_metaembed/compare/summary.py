"""From run records to the result table: per cell its value with a bootstrap interval and the spread over seeds, every
metric of the task, and the paired test of each fusion against the best single backbone of its context."""

import numpy as np

from .grid import Cell
from .statistics import LOWER_IS_BETTER, METRICS, bootstrap_interval, paired_test, per_seed_values, task_metrics


def _better(metric: str, a: float, b: float) -> bool:
    if not np.isfinite(b):
        return np.isfinite(a)
    return a < b if metric in LOWER_IS_BETTER else a > b


def cell_predictions(records: list[dict]) -> np.ndarray:
    """`(seeds, items)` or `(seeds, items, classes)`: the runs' test predictions, seeds in order."""
    return np.array([record["predictions"] for record in sorted(records, key=lambda record: record["seed"])])


def summarise(
    cells: list[Cell],
    records: dict[Cell, list[dict]],
    labels: np.ndarray,
    task: str,
    metric: str,
    names: list[str],
    resamples: int = 1000,
    permutations: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """One row per cell that ran (see the module docstring), in grid order.

    Args:
        cells: the grid; records: per cell its run records (one per seed; skipped cells have none).
        labels: `(items,)` the labels of the test items, in the order of the runs' predictions.
        metric: the metric of the interval, the paired test and the best cell.
    """
    rows, predictions = [], {}
    for cell in cells:
        ran = records.get(cell, [])
        if not ran:
            continue
        predictions[cell] = cell_predictions(ran)
        interval = bootstrap_interval(metric, predictions[cell], labels, resamples=resamples, seed=seed)
        row = {
            "cell": cell.label(names),
            "backbones": [names[i] for i in cell.backbones],
            "fusion": "alone" if cell.alone else cell.fusion,
            "layer": cell.layer,
            "pooling": cell.pooling or "default",
            "architecture": cell.architecture,
            "metric": metric,
            "value": interval.value,
            "ci_low": interval.low,
            "ci_high": interval.high,
            "seed_std": interval.seed_std,
            "seed_values": interval.seed_values,
            "seeds": len(ran),
            "test_items": int(len(labels)),
            "epochs_mean": float(np.mean([np.mean(record["epochs"]) for record in ran])),
            "seconds": float(sum(record["seconds"] for record in ran)),
            "split_digest": ran[0]["split_digest"],
            "settings": cell.to_json(),
        }
        for other in task_metrics(task):
            values = per_seed_values(other, predictions[cell], labels)
            row[f"{other}_mean"] = float(np.mean(values))
            row[f"{other}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    by_cell = dict(zip([cell for cell in cells if cell in predictions], rows))
    best_single: dict[tuple, Cell] = {}
    for cell, row in by_cell.items():
        if cell.alone:
            current = best_single.get(cell.context)
            if current is None or _better(metric, row["value"], by_cell[current]["value"]):
                best_single[cell.context] = cell
    for cell, row in by_cell.items():
        reference = best_single.get(cell.context)
        row.update(reference=None, effect=None, effect_low=None, effect_high=None, p_value=None)
        if cell.alone or reference is None:
            row["best_single"] = cell == reference
            continue
        row["best_single"] = False
        test = paired_test(
            metric, predictions[cell], predictions[reference], labels, resamples, permutations, seed=seed
        )
        row.update(
            reference=reference.label(names),
            effect=test.effect,
            effect_low=test.low,
            effect_high=test.high,
            p_value=test.p_value,
            exact_test=test.exact,
        )
    best = None
    for row in rows:
        if best is None or _better(metric, row["value"], best["value"]):
            best = row
    for row in rows:
        row["best"] = row is best
    return rows


def run_rows(records: dict[Cell, list[dict]], labels: np.ndarray, task: str, names: list[str]) -> list[dict]:
    """One row per (cell, seed) run: the cell's settings, every metric of the task on its test predictions, and the
    run's epochs, seconds, split digest and backbone forward calls."""
    rows = []
    for cell, cell_records in records.items():
        for record in cell_records:
            predictions = np.asarray(record["predictions"])
            row = {
                "cell": cell.label(names),
                "fusion": "alone" if cell.alone else cell.fusion,
                "layer": cell.layer,
                "pooling": cell.pooling or "default",
                "architecture": cell.architecture,
                "seed": record["seed"],
                **{name: float(METRICS[name](predictions, labels)) for name in task_metrics(task)},
            }
            for key in ("epochs", "best_epochs", "seconds", "split_digest", "backbone_forward_calls"):
                row[key] = record[key]
            rows.append(row)
    return rows


__all__ = ["cell_predictions", "run_rows", "summarise"]
