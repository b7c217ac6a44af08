"""What one cell of `hf-metaembed compare` costs against one whole-process `hf-metaembed train` + `evaluate` with the
same settings, and how many times the whole grid runs each backbone.

Data: the Pang & Lee polarity sentences with all-MiniLM-L6-v2 and their fastText vectors (the offline demo's
backbones and data; `--tiny` uses the library's tiny test BERT and static table instead). One fixed split (a split
column: 60% train, 20% validation, 20% test) is written to CSV files for the two commands and given to the
comparison as its split column, so both train on the same items with the same budget: DME fusion, E epochs (no early
stop: patience = epochs), batch size, learning rate and weight decay.

1. `hf-metaembed train train.csv --backbones MINILM,FASTTEXT --fusion dme --eval-data validation.csv ...` then
   `hf-metaembed evaluate test.csv --model ...`, each a fresh process (as a user's loop around them would be);
   wall time of both together, best of `--repeats`.
2. `hf_metaembed.compare` over the same backbones with fusions concat, dme, cdme (5 cells); the cost of the DME
   cell is the run's own time (build the model, train on cached states, predict the test items); the whole grid's
   wall time includes loading the backbones and building the cache. A forward pre-hook on every backbone counts the
   segments it read: each backbone must read every unique sentence exactly once, and no cell may run a backbone.

Writes `benchmarks/compare_cost.json` and the "compare" section of `benchmarks/RESULTS.md`; exits 1 when a cell
costs more than 1.5x train + evaluate or a backbone is read more than once.

    python benchmarks/compare_cost.py            # real MiniLM + fastText, about 3 minutes on 2 CPU cores
    python benchmarks/compare_cost.py --tiny     # tiny backbones, under a minute
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_metaembed.cli.demo import demo_sources, load_polarity
from hf_metaembed.compare import Budget, compare
from hf_metaembed.io.static_vectors import convert_static_vectors

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Cost of a `compare` cell (`benchmarks/compare_cost.py`)"
LIMIT = 1.5


def _backbones(root: Path, tiny: bool) -> tuple[list[str], list[str]]:
    if tiny:
        from hf_metaembed.testing import make_tiny_bert, make_tiny_static_vectors

        return [make_tiny_bert(root / "bert"), make_tiny_static_vectors(root / "static")], ["tiny BERT", "tiny table"]
    minilm, _, vectors = demo_sources()
    fasttext = convert_static_vectors(vectors, root / "fasttext", unicode_errors="replace")
    return [minilm, fasttext], ["MiniLM", "fastText"]


def _write(path: Path, texts, labels) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "label"])
        writer.writerows(zip(texts, labels))
    return str(path)


def _cli(arguments: list[str]) -> float:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "hf_metaembed.cli", *arguments], env=environment, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"hf-metaembed {arguments[0]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def measure(args) -> dict:
    torch.set_num_threads(1)
    corpus = demo_sources()[1]
    data = load_polarity(corpus, limit=args.limit)
    labels = ["negative" if label == 0 else "positive" for label in data.labels]
    parts = ["train", "train", "train", "validation", "test"] * len(labels)
    split = parts[: len(labels)]
    budget = Budget(epochs=args.epochs, patience=args.epochs, learning_rate=1e-3, weight_decay=0.0, batch_size=16)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        backbones, names = _backbones(root, args.tiny)
        files = {}
        for part in ("train", "validation", "test"):
            rows = [(text, label) for text, label, where in zip(data.texts, labels, split) if where == part]
            files[part] = _write(root / f"{part}.csv", *zip(*rows))
        common = ["--batch-size", "16", "--learning-rate", "1e-3", "--weight-decay", "0", "--threads", "1"]
        common.append("--truncation")
        whole = []
        for repeat in range(args.repeats):
            model = root / f"model{repeat}"
            train = _cli(
                ["train", files["train"], "--backbones", ",".join(backbones), "--fusion", "dme", "--eval-data",
                 files["validation"], "--epochs", str(args.epochs), "--output-dir", str(model), "--device", "cpu",
                 "--no-progress", *common]
            )  # fmt: skip
            evaluate = _cli(["evaluate", files["test"], "--model", str(model), "--device", "cpu", "--no-progress",
                             "--batch-size", "16", "--threads", "1", "--truncation"])  # fmt: skip
            whole.append({"train": train, "evaluate": evaluate, "total": train + evaluate})
        started = time.perf_counter()
        result = compare(
            backbones,
            names=names,
            sequences=data.texts,
            labels=labels,
            output_dir=root / "comparison",
            fusions=["concat", "dme", "cdme"],
            split=split,
            seeds=1,
            budget=budget,
            truncation=True,  # as --truncation for the commands (the tiny BERT reads 64 tokens)
            progress=False,
        )
        grid_seconds = time.perf_counter() - started
    dme = next(run for run in result.runs if run["fusion"] == "dme")
    best_whole = min(whole, key=lambda entry: entry["total"])
    cache = result.summary["cache"]
    return {
        "backbones": names,
        "sentences": len(data.texts),
        "split": {part: split.count(part) for part in ("train", "validation", "test")},
        "epochs": args.epochs,
        "train_plus_evaluate_seconds": whole,
        "best_train_plus_evaluate_seconds": round(best_whole["total"], 2),
        "dme_cell_seconds": dme["seconds"],
        "cell_over_train_evaluate": round(dme["seconds"] / best_whole["total"], 3),
        "cells": len(result.rows),
        "grid_seconds_with_cache": round(grid_seconds, 2),
        "cell_seconds": {f"{run['cell']} ({run['fusion']})": run["seconds"] for run in result.runs},
        "unique_sentences": cache["unique_segments"],
        "backbone_segments_read": cache["backbone_segments_read"],
        "backbone_forward_calls": cache["backbone_forward_calls"],
        "cell_backbone_forward_calls": sum(run["backbone_forward_calls"] for run in result.runs),
        "torch": torch.__version__,
        "cpu_threads": 1,
    }


def section(measured: dict) -> str:
    reads = ", ".join(f"{name} {count}" for name, count in measured["backbone_segments_read"].items())
    calls = ", ".join(f"{name} {count}" for name, count in measured["backbone_forward_calls"].items())
    whole = measured["best_train_plus_evaluate_seconds"]
    lines = [
        SECTION,
        "",
        f"{measured['sentences']} polarity sentences ({measured['split']['train']} train, "
        f"{measured['split']['validation']} validation, {measured['split']['test']} test, one fixed split), "
        f"{' + '.join(measured['backbones'])}, DME, {measured['epochs']} epochs, batch 16, learning rate 1e-3, "
        f"one CPU thread, torch {measured['torch']}.",
        "",
        "| what | seconds |",
        "| --- | --- |",
        f"| `hf-metaembed train` + `hf-metaembed evaluate`, two fresh processes (best of "
        f"{len(measured['train_plus_evaluate_seconds'])}) | {whole:.2f} |",
        f"| one `compare` cell (DME: build, train on cached states, predict) | {measured['dme_cell_seconds']:.2f} |",
        f"| whole `compare` grid ({measured['cells']} cells: each backbone alone, concat, dme, cdme), with loading "
        f"the backbones and building the cache | {measured['grid_seconds_with_cache']:.2f} |",
        "",
        f"A cell costs {measured['cell_over_train_evaluate']:.3f}x one train + evaluate (limit {LIMIT}x): it skips "
        "the process start, the backbone loading and every backbone forward pass. Over the whole grid each backbone "
        f"read each of the {measured['unique_sentences']} unique sentences once (segments read: {reads}; forward "
        f"calls: {calls}), and the cells ran a backbone {measured['cell_backbone_forward_calls']} times (their "
        "backbones live on the meta device and hold no weights).",
        "",
    ]
    return "\n".join(lines)


def write_section(results: Path, text: str) -> None:
    """Put `text` (starting with `SECTION`) into `results`, replacing the section of that title if there is one."""
    current = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    results.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny test backbones instead of MiniLM and fastText")
    parser.add_argument("--limit", type=int, default=200, help="sentences, half of each label (default: all 200)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every training (default: 10)")
    parser.add_argument("--repeats", type=int, default=2, help="train + evaluate repetitions (default: 2)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md to write the section to")
    parser.add_argument("--no-write", action="store_true", help="print only; write neither JSON nor RESULTS.md")
    args = parser.parse_args()
    measured = measure(args)
    text = section(measured)
    print(text)
    if not args.no_write:
        (HERE / "compare_cost.json").write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
        write_section(args.results, text)
    once = all(count == measured["unique_sentences"] for count in measured["backbone_segments_read"].values())
    ok = measured["cell_over_train_evaluate"] <= LIMIT and once and measured["cell_backbone_forward_calls"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
