"""The outputs of a comparison: a Markdown table (the best cell marked), CSV and JSON files of every cell and run, and
a PNG plot of each cell's value with its interval. Files are written atomically (`hf_metaembed.io.files`);
matplotlib is imported only to draw the plot."""

import csv
import io
import math
from pathlib import Path

from ..io.files import atomic_write, atomic_write_json
from .statistics import task_metrics

CELL_COLUMNS = (
    "cell",
    "fusion",
    "layer",
    "pooling",
    "architecture",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "seed_std",
    "seeds",
    "test_items",
    "reference",
    "effect",
    "effect_low",
    "effect_high",
    "p_value",
    "best",
    "best_single",
    "epochs_mean",
    "seconds",
    "split_digest",
)


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _p_value(value) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def markdown_table(rows: list[dict], task: str, title: str | None = None) -> str:
    """The result table: one line per cell, the best marked with **bold** and ★; the layer, pooling and
    architecture columns appear only where they vary."""
    varying = [name for name in ("layer", "pooling", "architecture") if len({str(row[name]) for row in rows}) > 1]
    metric = rows[0]["metric"] if rows else "value"
    others = [name for name in task_metrics(task) if name != metric]
    header = ["cell", "fusion", *varying, f"{metric} (95% CI)", "seed sd", "Δ vs best single (95% CI)", "p"]
    header += others
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        value = f"{_number(row['value'])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
        if row["best"]:
            value = f"**{value}** ★"
        if row["effect"] is None:
            effect = "best single" if row["best_single"] else "–"
        else:
            effect = f"{row['effect']:+.3f} [{row['effect_low']:+.3f}, {row['effect_high']:+.3f}]"
        cells = [row["cell"], row["fusion"], *(str(row[name]) for name in varying), value]
        cells += [_number(row["seed_std"]), effect, _p_value(row["p_value"])]
        cells += [_number(row[f"{name}_mean"]) for name in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    return buffer.getvalue()


def _csv_value(value):
    if isinstance(value, list | tuple):
        return ";".join(str(item) for item in value)
    return "" if value is None else value


def write_reports(output_dir: Path, rows: list[dict], runs: list[dict], task: str, summary: dict) -> dict[str, Path]:
    """Write `cells.csv`, `runs.csv`, `results.json` and `comparison.png` into `output_dir`; returns their paths."""
    metrics = list(task_metrics(task))
    cell_columns = list(CELL_COLUMNS) + [f"{name}_{kind}" for name in metrics for kind in ("mean", "std")]
    paths = {
        "cells_csv": output_dir / "cells.csv",
        "runs_csv": output_dir / "runs.csv",
        "json": output_dir / "results.json",
        "plot": output_dir / "comparison.png",
    }
    with atomic_write(paths["cells_csv"], "w") as handle:
        handle.write(_csv_text(rows, cell_columns))
    run_columns = ["cell", "fusion", "layer", "pooling", "architecture", "seed", *metrics]
    run_columns += ["epochs", "best_epochs", "seconds", "split_digest", "backbone_forward_calls"]
    with atomic_write(paths["runs_csv"], "w") as handle:
        handle.write(_csv_text(runs, run_columns))
    atomic_write_json(paths["json"], {**summary, "cells": rows, "runs": runs})
    plot_cells(rows, paths["plot"])
    return paths


def plot_cells(rows: list[dict], path: Path) -> None:
    """Each cell's value with its 95% interval (best single backbones and fusions in two colours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row['cell']} ({row['fusion']})" if not row["fusion"] == "alone" else row["cell"] for row in rows]
    labels = [
        label + "".join(f" {row[name]}" for name in ("layer", "pooling", "architecture") if _varies(rows, name))
        for label, row in zip(labels, rows)
    ]
    values = [row["value"] for row in rows]
    low = [max(0.0, row["value"] - row["ci_low"]) if math.isfinite(row["ci_low"]) else 0.0 for row in rows]
    high = [max(0.0, row["ci_high"] - row["value"]) if math.isfinite(row["ci_high"]) else 0.0 for row in rows]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    positions = list(range(len(rows)))[::-1]
    colours = ["tab:gray" if row["fusion"] == "alone" else "tab:blue" for row in rows]
    for position, value, lo, hi, colour, row in zip(positions, values, low, high, colours, rows):
        axis.errorbar(value, position, xerr=[[lo], [hi]], fmt="o", color=colour, capsize=3)
        if row["best"]:
            axis.plot(value, position, marker="*", markersize=14, color="tab:orange")
    axis.set_yticks(positions, labels)
    metric = rows[0]["metric"] if rows else ""
    axis.set_xlabel(f"{metric} (mean over seeds, 95% bootstrap interval over test items)")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def _varies(rows: list[dict], name: str) -> bool:
    return len({str(row[name]) for row in rows}) > 1


__all__ = ["markdown_table", "plot_cells", "write_reports"]
