"""The study's grid on PPB-Affinity: pair architectures x protein backbones x (frozen + ConvBERT | LoRA).

Defaults are the reference's (Proteinea/ppiseq `training/config/train_config.yaml`): 30 epochs, batch size 1 with 32
gradient-accumulation steps, learning rate 5e-4 with 1,000 warm-up steps, no weight decay, seed 7, the checkpoint with
the best validation Spearman kept; LoRA rank 16, alpha 32, no dropout; the study's modules (`preset="paper"`). The
data are curated and split as the study describes (`hf_metaembed.data`): chains of at least 40 residues, duplicates
by method priority, splits at 30% sequence identity with every PDB id in one split.

On a machine that can download them (no HF_HUB_OFFLINE):

    python examples/ppb_affinity_study/study_grid.py --data proteinea/ppb_affinity \
        --backbones facebook/esm2_t33_650M_UR50D Rostlab/prot_t5_xl_half_uniref50-enc ElnaggarLab/ankh-large

`--data` also takes a local CSV/TSV/JSONL/parquet file in PPB-Affinity's format. `--smoke` runs the same code on a
synthetic PPB-format table with tiny random-weight backbones (no download; what the test suite runs).
Results: one JSON line per run, then a table of test Spearman (with its bootstrap 95% interval), Pearson and RMSE.
"""

import argparse
import csv
import json
import os
import random
import tempfile
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.data import identity_split, load_ppb_affinity
from hf_metaembed.integrations.metrics import compute_metrics
from hf_metaembed.integrations.peft import lora_config
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset

STUDY_BACKBONES = [
    "facebook/esm2_t33_650M_UR50D",
    "Rostlab/prot_t5_xl_half_uniref50-enc",
    "ElnaggarLab/ankh-large",
]
# train_config.yaml
STUDY_TRAINING = dict(
    num_train_epochs=30,
    per_device_train_batch_size=1,
    per_device_eval_batch_size=1,
    gradient_accumulation_steps=32,
    warmup_steps=1000,
    learning_rate=5e-4,
    weight_decay=0.0,
    seed=7,
)
STUDY_LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0)


def synthetic_table(path: Path, count: int = 60, seed: int = 0) -> Path:
    """A PPB-Affinity-format CSV (PDB, Ligand Sequences, Receptor Sequences, KD(M), Affinity Method) whose KD falls
    with opposite charges across the interface; chains of 40-60 residues, one or two per side."""
    rng = random.Random(seed)
    groups = ["KR", "DE", "AVILMFWY", "STNQGPHC"]

    def chain() -> str:
        weights = [rng.random() for _ in groups]
        return "".join(rng.choice(rng.choices(groups, weights)[0]) for _ in range(rng.randint(40, 60)))

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PDB", "Ligand Sequences", "Receptor Sequences", "KD(M)", "Affinity Method"])
        for index in range(count):
            ligand, receptor = [chain() for _ in range(rng.randint(1, 2))], [chain() for _ in range(rng.randint(1, 2))]
            charge = [
                sum(r in g for r in "".join(side)) / len("".join(side))
                for side in (ligand, receptor)
                for g in groups[:2]
            ]
            complementarity = charge[0] * charge[3] + charge[1] * charge[2]
            kd = 10 ** (-5 - 12 * complementarity + rng.gauss(0, 0.3))
            writer.writerow([f"{index:04d}", ",".join(ligand), ",".join(receptor), f"{kd:.3e}", "SPR"])
    return path


def tiny_backbones(folder: Path) -> list[str]:
    from hf_metaembed.testing import make_tiny_ankh, make_tiny_esm, make_tiny_prott5

    return [
        make_tiny_esm(folder / "esm", max_length=256),
        make_tiny_prott5(folder / "prott5", max_length=256),
        make_tiny_ankh(folder / "ankh", max_length=256),
    ]


def datasets(processor, data, split) -> dict[str, MetaEmbedDataset]:
    def subset(indices):
        records = [data[i] for i in indices]
        return MetaEmbedDataset(
            processor,
            ligand=[r.ligand for r in records],
            receptor=[r.receptor for r in records],
            labels=[r.label for r in records],
        )

    return {"train": subset(split.train), "validation": subset(split.validation), "test": subset(split.test)}


def run_one(backbone: str, architecture: str, setup: str, data, split, training: dict, output: Path) -> dict:
    """Train one cell of the grid and return its test metrics."""
    frozen = setup == "convbert"
    model = MetaEmbedForSequenceClassification.from_backbones(
        [backbone],
        architecture=architecture,
        preset="paper",
        unit_encoder="convbert" if frozen else "none",
        num_labels=1,
        problem_type="regression",
    )
    if not frozen:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(model, **STUDY_LORA))
    processor = MetaEmbedProcessor.from_backbones([backbone], architecture=architecture)
    parts = datasets(processor, data, split)
    args = TrainingArguments(
        output_dir=str(output),
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="spearman",
        greater_is_better=True,
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        **training,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=parts["train"],
        eval_dataset=parts["validation"],
        data_collator=MetaEmbedDataCollator(processor),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate(parts["test"], metric_key_prefix="test")
    return {key.removeprefix("test_"): value for key, value in metrics.items() if key.startswith("test_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="proteinea/ppb_affinity", help="Hub dataset id or local table")
    parser.add_argument("--backbones", nargs="+", default=STUDY_BACKBONES)
    parser.add_argument("--architectures", nargs="+", default=["sc", "ec", "hp", "pad"])
    parser.add_argument("--setups", nargs="+", default=["convbert", "lora"], choices=["convbert", "lora"])
    parser.add_argument("--label-transform", default="pkd", help="pkd (exact) or reference (the study's)")
    parser.add_argument("--epochs", type=float, default=STUDY_TRAINING["num_train_epochs"])
    parser.add_argument("--output", type=Path, default=Path("study_runs"))
    parser.add_argument("--smoke", action="store_true", help="tiny backbones, synthetic data, one short epoch")
    args = parser.parse_args()

    training = dict(STUDY_TRAINING, num_train_epochs=args.epochs)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.smoke:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            args.data = synthetic_table(scratch / "ppb_synthetic.csv")
            args.backbones = tiny_backbones(scratch)[:2]
            args.architectures, args.output = ["hp", "pad"], scratch / "runs"
            training.update(num_train_epochs=1, gradient_accumulation_steps=4, warmup_steps=0, learning_rate=5e-3)
        data = load_ppb_affinity(args.data, label_transform=args.label_transform)
        print(data.report)
        split = identity_split(data, identity=0.3, seed=training["seed"])
        print(split)
        results = []
        for backbone in args.backbones:
            for architecture in args.architectures:
                for setup in args.setups:
                    name = f"{Path(backbone).name}-{architecture}-{setup}"
                    torch.manual_seed(training["seed"])
                    metrics = run_one(backbone, architecture, setup, data, split, training, args.output / name)
                    row = {"backbone": Path(backbone).name, "architecture": architecture, "setup": setup, **metrics}
                    print(json.dumps(row, sort_keys=True))
                    results.append(row)
    print("\n| backbone | architecture | setup | test Spearman (95% CI) | Pearson | RMSE |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in results:
        interval = f"({row['spearman_ci_low']:.3f}-{row['spearman_ci_high']:.3f})"
        print(
            f"| {row['backbone']} | {row['architecture']} | {row['setup']} | {row['spearman']:.3f} {interval} | "
            f"{row['pearson']:.3f} | {row['rmse']:.3f} |"
        )


if __name__ == "__main__":
    main()
