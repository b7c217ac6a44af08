"""Train, evaluate, checkpoint, resume and share a MetaEmbed regression model with the plain `transformers` Trainer.

Two protein backbones (tiny random-weight ESM-2 and ProtT5 look-alikes, written to a temporary folder: nothing is
downloaded) are fused per residue with DME and a linear head predicts a per-sequence score. Steps:

1. `MetaEmbedDataset` tokenizes once; its samples use `forward`'s own argument names, so `Trainer` keeps them with
   the default `remove_unused_columns=True`; `MetaEmbedDataCollator` pads them into batches.
2. `Trainer` evaluates and checkpoints every epoch (safetensors, with the processor), keeps the best checkpoint by
   RMSE and reloads it at the end.
3. A second `Trainer` resumes from the last checkpoint and trains further epochs.
4. `save_for_hub` writes model, code files, processor and a model card with the evaluation results; the folder
   reloads with `AutoModelForSequenceClassification` and `trust_remote_code=True`.

Swap in real backbones, e.g. ["facebook/esm2_t6_8M_UR50D", "Rostlab/prot_t5_xl_half_uniref50-enc"], and real data.

Run: python examples/trainer/train_with_trainer.py [--epochs 4] [--output-dir DIR]
"""

import argparse
import os
import random
import tempfile

import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoProcessor, Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.cards import save_for_hub
from hf_metaembed.integrations.metrics import compute_metrics
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset
from hf_metaembed.testing import make_tiny_esm, make_tiny_prott5

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
HYDROPHOBIC = set("AILMFVW")


def toy_proteins(count: int, seed: int) -> tuple[list[str], list[float]]:
    """Random sequences scored by their hydrophobic fraction (a target the residue identities determine)."""
    rng = random.Random(seed)
    sequences = ["".join(rng.choice(RESIDUES) for _ in range(rng.randint(8, 30))) for _ in range(count)]
    scores = [4.0 * sum(r in HYDROPHOBIC for r in s) / len(s) for s in sequences]
    return sequences, scores


def training_args(output_dir: str, epochs: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=5e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="rmse",
        greater_is_better=False,
        save_total_limit=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the first run (the resumed run adds 2)")
    parser.add_argument("--output-dir", default=None, help="where to keep checkpoints and the Hub folder")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as scratch:
        output_dir = args.output_dir or scratch
        backbones = [make_tiny_esm(f"{scratch}/esm"), make_tiny_prott5(f"{scratch}/prott5")]
        model = MetaEmbedForSequenceClassification.from_backbones(
            backbones, fusion="dme", num_labels=1, problem_type="regression", head_dropout=0.0
        )
        processor = MetaEmbedProcessor.from_backbones(backbones)
        train_sequences, train_scores = toy_proteins(160, seed=0)
        dev_sequences, dev_scores = toy_proteins(40, seed=1)
        train = MetaEmbedDataset(processor, train_sequences, labels=train_scores)
        dev = MetaEmbedDataset(processor, dev_sequences, labels=dev_scores)
        print(f"sample keys (forward's argument names): {sorted(train[0])}")

        def make_trainer(epochs: int) -> Trainer:
            return Trainer(
                model=model,
                args=training_args(f"{output_dir}/run", epochs),
                train_dataset=train,
                eval_dataset=dev,
                data_collator=MetaEmbedDataCollator(processor),
                processing_class=processor,  # saved into every checkpoint
                compute_metrics=compute_metrics,  # Spearman, Pearson, RMSE
            )

        trainer = make_trainer(args.epochs)
        print(f"before training: {trainer.evaluate()}")
        trainer.train()
        print(f"best checkpoint: {trainer.state.best_model_checkpoint} (rmse {trainer.state.best_metric:.4f})")
        checkpoints = sorted(os.listdir(f"{output_dir}/run"))
        print(f"checkpoints: {checkpoints}; files: {sorted(os.listdir(trainer.state.best_model_checkpoint))}")

        # resume: the optimizer, scheduler, RNG and step counter come back from the last checkpoint
        resumed = make_trainer(args.epochs + 2)
        resumed.train(resume_from_checkpoint=True)
        metrics = resumed.evaluate()
        print(f"after resuming to {args.epochs + 2} epochs (best model reloaded): {metrics}")

        hub_folder = f"{output_dir}/hub"
        files = save_for_hub(
            resumed.model,
            processor,
            hub_folder,
            eval_results=metrics,
            eval_dataset="toy hydrophobicity (dev)",
            description="Example: hydrophobic fraction of a protein, from fused ESM-2 and ProtT5 residue states.",
        )
        print(f"Hub folder: {files}")
        card = ModelCard.load(f"{hub_folder}/README.md")
        print(f"card metadata: pipeline_tag={card.data.pipeline_tag}, metrics={card.data.metrics}")

        reloaded = AutoModelForSequenceClassification.from_pretrained(hub_folder, trust_remote_code=True).eval()
        reloaded_processor = AutoProcessor.from_pretrained(hub_folder, trust_remote_code=True)
        with torch.no_grad():
            predictions = reloaded(**reloaded_processor(dev_sequences[:3])).logits.squeeze(-1)
        for sequence, score, prediction in zip(dev_sequences, dev_scores, predictions.tolist()):
            print(f"  {sequence:<30}  target {score:.2f}  predicted {prediction:.2f}")


if __name__ == "__main__":
    main()
