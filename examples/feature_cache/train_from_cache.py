"""Train fusion and an HP + ConvBERT head on complexes from a frozen-feature cache.

Every frozen backbone runs once per unique chain (complexes of a mutant series share their partners), the states
go to safetensors shards, and each epoch reads them back memory-mapped instead of re-running the backbones.

The two backbones are tiny random-weight ESM-2 and ProtT5 look-alikes written to a temporary folder (nothing is
downloaded); swap in real ones, e.g. ["facebook/esm2_t6_8M_UR50D", "Rostlab/prot_t5_xl_half_uniref50-enc"].
"""

import random
import tempfile

import torch
from torch.utils.data import DataLoader

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.cache import CachedFeatureCollator, CachedFeatureDataset, build_feature_cache, load_feature_cache
from hf_metaembed.testing import make_tiny_esm, make_tiny_prott5


def mutant_series(count: int, seed: int = 0) -> tuple[list, list, list]:
    """Complexes whose ligand is one of a few point mutants and whose receptor is one of two shared partners."""
    rng = random.Random(seed)
    wild_type = "MKTAYIAKQRQISFVKSHFSRQ"
    partners = [["GSHMVLSPADKTNVKAAW"], ["GSHMVLSPADKTNVKAAW", "ACDEFGHIKLMNPQ"]]
    ligand, receptor, labels = [], [], []
    for _ in range(count):
        position = rng.randrange(len(wild_type))
        mutant = wild_type[:position] + rng.choice("AVLIG") + wild_type[position + 1 :]
        ligand.append([mutant])
        receptor.append(rng.choice(partners))
        labels.append(rng.gauss(7.0, 1.5))
    return ligand, receptor, labels


def main() -> None:
    ligand, receptor, labels = mutant_series(48)
    with tempfile.TemporaryDirectory() as folder:
        backbones = [make_tiny_esm(f"{folder}/esm"), make_tiny_prott5(f"{folder}/prott5")]
        model = MetaEmbedForSequenceClassification.from_backbones(
            backbones, fusion="dme", architecture="hp", head="convbert", num_labels=1, problem_type="regression"
        )
        processor = MetaEmbedProcessor.from_backbones(backbones)

        cache = build_feature_cache(model, processor, f"{folder}/cache", ligand=ligand, receptor=receptor)
        print(f"build: {cache.build_summary}")
        again = build_feature_cache(model, processor, f"{folder}/cache", ligand=ligand, receptor=receptor)
        print(f"second build (resumes, nothing left to do): computed {again.build_summary['computed']} segments")

        cache = load_feature_cache(f"{folder}/cache", model, processor)  # refuses a cache of another model
        dataset = CachedFeatureDataset(
            cache, ligand=ligand, receptor=receptor, labels=torch.tensor(labels), architecture="hp"
        )
        loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=CachedFeatureCollator())
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model.train()
        for epoch in range(3):
            total = 0.0
            for batch in loader:
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                total += loss.item() * len(batch["labels"])
            print(f"epoch {epoch}: mean squared error {total / len(dataset):.3f}")

        model.eval()
        with torch.no_grad():
            online = model(**processor(ligand=ligand[:4], receptor=receptor[:4], architecture="hp")).logits
            cached = model(**CachedFeatureCollator()([dataset[i] for i in range(4)])).logits
        print(f"largest difference between cached and online predictions: {(cached - online).abs().max():.2e}")


if __name__ == "__main__":
    main()
