"""Predict the binding affinity of multi-chain complexes with a pair architecture, end to end.

Two protein backbones (tiny random-weight ESM-2 and ProtT5 look-alikes, written to a temporary folder: nothing is
downloaded) are fused per residue with DME; the ligand and receptor sides meet in the chosen pair architecture
(`pad` by default) and a ConvBERT head predicts pKd. Steps: make toy complexes with dissociation constants, turn KD
into pKd, train with `Trainer`, evaluate Spearman/Pearson/RMSE, save, reload through remote code, predict.

Swap in real backbones, e.g. ["facebook/esm2_t6_8M_UR50D", "Rostlab/prot_t5_xl_half_uniref50-enc"], and real
complexes (e.g. PPB-Affinity) with their KD values.

Run: python examples/protein_pairs/train_pair_affinity.py [--architecture pad|hp|ec|sc] [--epochs 15]
"""

import argparse
import os
import random
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, AutoProcessor, Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.metrics import compute_metrics, kd_to_pkd
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset
from hf_metaembed.testing import make_tiny_esm, make_tiny_prott5

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GROUPS = ["KR", "DE", "AVILMFWY", "STNQGPHC"]  # positive, negative, hydrophobic, polar


def toy_complexes(count: int, seed: int = 0) -> tuple[list, list, list[float]]:
    """Complexes of 1-3 chains per side; KD (nM) falls with opposite charges across the interface."""
    rng = random.Random(seed)

    def chain() -> str:
        weights = [rng.random() for _ in GROUPS]
        return "".join(rng.choice(rng.choices(GROUPS, weights)[0]) for _ in range(rng.randint(5, 14)))

    ligands = [[chain() for _ in range(rng.randint(1, 3))] for _ in range(count)]
    receptors = [[chain() for _ in range(rng.randint(1, 3))] for _ in range(count)]
    kd_nm = []
    for ligand, receptor in zip(ligands, receptors):
        lig, rec = "".join(ligand), "".join(receptor)
        positive_l, negative_l = (sum(r in g for r in lig) / len(lig) for g in GROUPS[:2])
        positive_r, negative_r = (sum(r in g for r in rec) / len(rec) for g in GROUPS[:2])
        complementarity = positive_l * negative_r + negative_l * positive_r
        kd_nm.append(10 ** (3 - 12 * complementarity + rng.gauss(0, 0.3)))
    return ligands, receptors, kd_nm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="pad", choices=["sc", "ec", "hp", "pad"])
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)

    ligands, receptors, kd_nm = toy_complexes(240)
    pkd = kd_to_pkd(kd_nm, unit="nM").tolist()  # -log10(KD in molar), no capping
    print(f"{len(pkd)} complexes, pKd {min(pkd):.2f} .. {max(pkd):.2f}")

    with tempfile.TemporaryDirectory() as folder:
        backbones = [
            make_tiny_esm(f"{folder}/esm", max_length=128),
            make_tiny_prott5(f"{folder}/prott5", max_length=128),
        ]
        model = MetaEmbedForSequenceClassification.from_backbones(
            backbones, fusion="dme", architecture=args.architecture, head="convbert", num_labels=1
        )
        # start predicting the mean training pKd, so training learns the differences rather than the offset
        model.classifier.out_proj.bias.data.fill_(sum(pkd[:200]) / 200)
        processor = MetaEmbedProcessor.from_backbones(backbones, architecture=args.architecture)
        train = MetaEmbedDataset(processor, ligand=ligands[:200], receptor=receptors[:200], labels=pkd[:200])
        dev = MetaEmbedDataset(processor, ligand=ligands[200:], receptor=receptors[200:], labels=pkd[200:])

        training_args = TrainingArguments(
            output_dir=f"{folder}/run",
            num_train_epochs=args.epochs,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=40,
            learning_rate=5e-3,
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="epoch",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train,
            eval_dataset=dev,
            data_collator=MetaEmbedDataCollator(processor),
            processing_class=processor,
            compute_metrics=compute_metrics,
        )
        trainer.train()
        metrics = trainer.evaluate()
        print(
            f"{args.architecture}: dev Spearman {metrics['eval_spearman']:.3f}, "
            f"Pearson {metrics['eval_pearson']:.3f}, RMSE {metrics['eval_rmse']:.3f} pKd"
        )

        saved = f"{folder}/pair-model"
        model.save_pretrained(saved)
        processor.save_pretrained(saved)
        reloaded = AutoModelForSequenceClassification.from_pretrained(saved, trust_remote_code=True).eval()
        reloaded_processor = AutoProcessor.from_pretrained(saved, trust_remote_code=True)
        complex_ = {"ligand": [["KKRKAVLK", "GSHKR"]], "receptor": [["DEEDLLVE"]]}
        with torch.no_grad():
            predicted = reloaded(**reloaded_processor(**complex_)).logits.item()
            original = model.eval()(**processor(**complex_)).logits.item()
    print(f"reloaded model predicts pKd {predicted:.3f} for a new complex (the trained model: {original:.3f})")


if __name__ == "__main__":
    main()
