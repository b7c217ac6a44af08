"""Which pair architecture (sc, ec, hp, pad) learns a synthetic binding affinity best?

The published comparison (PPB-Affinity; ProtT5, ESM-2, Ankh, ESM3 features) found `hp` and `pad` beat `ec` and `sc` by
up to 12% Spearman. Neither real affinity data nor real protein weights can be downloaded here, so this benchmark
asks the same question on a synthetic task whose rule is known.

Task. A complex has 1-3 chains per side (ligand, receptor), each 5-14 residues. Each chain draws its own residue-class
mix from a Dirichlet(0.7) over four classes (positive K R, negative D E, hydrophobic A V I L M F W Y, polar S T N Q G P
H C), then residues uniformly within a class, so compositions differ a lot between chains and complexes. With p, n, h
the positive, negative and hydrophobic fractions of a side (all its chains together, L ligand, R receptor):

    signal = 8 (pL nR + nL pR)        salt bridges across the interface
           - 6 (pL pR + nL nR)        like charges repel
           + 5 hL hR                  hydrophobic contact
           + 1.5 hL - 2.5 (pR - nR)^2 within-side terms
    pKd    = 7 + 1.5 * standardise(signal + noise),  noise ~ N(0, (0.35 std(signal))^2)

so most of the variance comes from products of ligand and receptor features (complementarity), some from each side
alone. 1000 complexes, split 600 train / 200 validation / 200 test (one fixed data seed).

Models. Frozen tiny random-weight backbones from `hf_metaembed.testing` (hidden size 16): one backbone (ESM-2-style),
and two (ESM-2-style + ProtT5-style) fused per residue with `dme`. Every architecture is the study's module
(`preset="paper-2025-03-09"`, the reference's config with ConvBERT: one ConvBERT layer with 8 heads, kernel 7,
intermediate d/2, dropout 0.2, attention dropout 0.1; mean residue pooling; `hp` with attention chain pooling,
concatenated sides and its bias-free Linear-SiLU-Linear block; `pad` with shared 8-head bias-free cross-attention and
its SiLU block; `ec` in both modes, `token` running ConvBERT over the joined sides, with its Linear-SiLU block).
Ablation rows rebuild release 0.1's modules (`preset="v0.1"`: no feed-forward blocks, ConvBERT per side for `ec`,
4-head attention with bias and a GELU residual block for `pad`) with the same ConvBERT unit encoder. The frozen
backbone states of each input layout (joined for sc, one per side for ec/pad, one per chain for hp) are computed once
with `MetaEmbedModel.reader.read_backbones` and fed back through `forward(backbone_states=...)`. Each run trains with
AdamW (lr 5e-3, batch 32, 20 epochs) on standardised labels, keeps the epoch with the best validation Spearman and
reports test Spearman there; 3 seeds (initialisation and batch order) per architecture.

Two reference rows bound what is learnable: least squares on the true side fractions with only within-side terms
(an additive model: it cannot represent complementarity) and with the cross-side products (the true form).

Run: python benchmarks/pair_architectures.py [--seeds 3] [--epochs 20] [--workers 2] [--head convbert]
(runs are independent: `--workers` trains that many at once, one torch thread each)
Writes benchmarks/pair_architectures.json (every run) and benchmarks/pair_architectures.png (with another `--head`:
pair_architectures_<head>.*), prints a markdown table.
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor  # noqa: E402
from hf_metaembed.integrations.metrics import spearman  # noqa: E402
from hf_metaembed.testing import make_tiny_esm, make_tiny_prott5  # noqa: E402

HERE = Path(__file__).resolve().parent
CLASSES = {"positive": "KR", "negative": "DE", "hydrophobic": "AVILMFWY", "polar": "STNQGPHC"}
# (label in the table, architecture, extra config)
# the study's modules (`preset="paper-2025-03-09"`: ConvBERT unit encoder, mean residue pooling, HP/EC/PAD
# feed-forward blocks, EC's ConvBERT over the joined sides, PAD's 8-head bias-free attention), then release 0.1's
# modules as ablation rows (`preset="v0.1"` with the same ConvBERT unit encoder)
PAPER = {"preset": "paper-2025-03-09"}
RELEASE_0_1 = {"preset": "v0.1", "unit_encoder": "convbert"}
VARIANTS = [
    ("sc", "sc", PAPER),
    ("ec (token)", "ec", {**PAPER, "ec_mode": "token"}),
    ("ec (pooled)", "ec", {**PAPER, "ec_mode": "pooled"}),
    ("hp", "hp", PAPER),
    ("pad", "pad", PAPER),
    ("ablation: ec (token), 0.1 modules", "ec", {**RELEASE_0_1, "ec_mode": "token"}),
    ("ablation: hp, 0.1 modules", "hp", RELEASE_0_1),
    ("ablation: pad, 0.1 modules", "pad", RELEASE_0_1),
]


# ------------------------------------------------------------------------------------------------ data


def random_chain(rng: random.Random, np_rng: np.random.Generator) -> str:
    mix = np_rng.dirichlet([0.7] * len(CLASSES))
    groups = list(CLASSES.values())
    length = rng.randint(5, 14)
    return "".join(rng.choice(groups[np_rng.choice(len(groups), p=mix)]) for _ in range(length))


def side_fractions(chains: list[str]) -> tuple[float, float, float]:
    residues = "".join(chains)
    return tuple(
        sum(r in CLASSES[c] for r in residues) / len(residues) for c in ("positive", "negative", "hydrophobic")
    )


def signal(ligand: list[str], receptor: list[str]) -> float:
    (pl, nl, hl), (pr, nr, hr) = side_fractions(ligand), side_fractions(receptor)
    return 8 * (pl * nr + nl * pr) - 6 * (pl * pr + nl * nr) + 5 * hl * hr + 1.5 * hl - 2.5 * (pr - nr) ** 2


def make_dataset(count: int, seed: int = 0) -> dict:
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    ligands = [[random_chain(rng, np_rng) for _ in range(rng.randint(1, 3))] for _ in range(count)]
    receptors = [[random_chain(rng, np_rng) for _ in range(rng.randint(1, 3))] for _ in range(count)]
    clean = np.array([signal(lig, rec) for lig, rec in zip(ligands, receptors)])
    noisy = clean + np_rng.normal(scale=0.35 * clean.std(), size=count)
    pkd = 7 + 1.5 * (noisy - noisy.mean()) / noisy.std()
    order = np_rng.permutation(count)
    cut_train, cut_val = int(0.6 * count), int(0.8 * count)
    return {
        "ligands": ligands,
        "receptors": receptors,
        "pkd": pkd,
        "split": {"train": order[:cut_train], "val": order[cut_train:cut_val], "test": order[cut_val:]},
    }


def reference_rows(data: dict) -> dict[str, float]:
    """Test Spearman of least squares on the true side fractions: additive (within-side) vs with cross products."""
    features = np.array(
        [side_fractions(lig) + side_fractions(rec) for lig, rec in zip(data["ligands"], data["receptors"])]
    )
    ligand, receptor = features[:, :3], features[:, 3:]

    def within(side):
        return [side, side**2, side[:, [0]] * side[:, [1]], side[:, [0]] * side[:, [2]], side[:, [1]] * side[:, [2]]]

    additive = np.hstack([np.ones((len(features), 1)), *within(ligand), *within(receptor)])
    crossed = np.hstack([additive, (ligand[:, :, None] * receptor[:, None, :]).reshape(len(features), -1)])
    rows = {}
    train, test = data["split"]["train"], data["split"]["test"]
    for name, design in (("additive", additive), ("crossed", crossed)):
        weights, *_ = np.linalg.lstsq(design[train], data["pkd"][train], rcond=None)
        rows[name] = spearman(design[test] @ weights, data["pkd"][test])
    return rows


# ------------------------------------------------------------------------------------------------ frozen states


class SegmentStore:
    """Frozen backbone states of every segment of the dataset for one input layout, padded once.

    `states[b] (segments, units, d_b)`, `unit_mask (segments, units)`, `side (segments,)`, and `rows[i]` the segment
    rows of sample i.
    """

    def __init__(self, model, processor, data: dict, architecture: str, batch_size: int = 100) -> None:
        per_backbone, masks, sides, self.rows = [], [], [], []
        for start in range(0, len(data["pkd"]), batch_size):
            ligands = data["ligands"][start : start + batch_size]
            receptors = data["receptors"][start : start + batch_size]
            batch = processor(ligand=ligands, receptor=receptors, architecture=architecture)
            with torch.no_grad():
                states = model.metaembed.reader.read_backbones(
                    model.metaembed.backbones,
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch["token_unit_index"],
                    batch["unit_mask"].shape[1],
                )
            per_backbone.append(states)
            masks.append(batch["unit_mask"])
            sides.append(batch["segment_side_index"])
            offset = sum(len(m) for m in masks[:-1])
            for sample in range(len(ligands)):
                self.rows.append((batch["segment_sample_index"] == sample).nonzero().flatten() + offset)
        units = max(m.shape[1] for m in masks)
        self.unit_mask = torch.cat([torch.nn.functional.pad(m, (0, units - m.shape[1])) for m in masks])
        self.states = [
            torch.cat([torch.nn.functional.pad(s[b], (0, 0, 0, units - s[b].shape[1])) for s in per_backbone])
            for b in range(len(per_backbone[0]))
        ]
        self.side = torch.cat(sides)

    def batch(self, samples) -> dict:
        rows = torch.cat([self.rows[i] for i in samples])
        counts = torch.tensor([len(self.rows[i]) for i in samples])
        mask = self.unit_mask[rows]
        units = int(mask.sum(dim=1).max())
        return {
            "backbone_states": [states[rows, :units] for states in self.states],
            "unit_mask": mask[:, :units],
            "segment_sample_index": torch.repeat_interleave(torch.arange(len(samples)), counts),
            "segment_side_index": self.side[rows],
        }


# ------------------------------------------------------------------------------------------------ training


def predict(model, store: SegmentStore, samples, batch_size: int = 100) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            outputs.append(model(**store.batch(samples[start : start + batch_size])).logits.flatten())
    return torch.cat(outputs).numpy()


def train_one(
    backbones, architecture, settings, store, data, seed, epochs, head="convbert", batch_size=32, lr=5e-3
) -> dict:
    torch.manual_seed(seed)
    if head != "convbert":  # the comparison of heads: the same modules with another head and no unit encoder
        settings = {**settings, "head": head, "unit_encoder": "none"}
    model = MetaEmbedForSequenceClassification.from_backbones(
        backbones,
        fusion="dme",
        architecture=architecture,
        num_labels=1,
        problem_type="regression",
        **settings,
    )
    train, val, test = (data["split"][k] for k in ("train", "val", "test"))
    mean, std = data["pkd"][train].mean(), data["pkd"][train].std()
    targets = torch.tensor((data["pkd"] - mean) / std, dtype=torch.float32)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    order_rng = random.Random(seed)
    best = {"val_spearman": -2.0}
    for epoch in range(epochs):
        model.train()
        order = list(train)
        order_rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            samples = order[start : start + batch_size]
            loss = model(**store.batch(samples), labels=targets[samples]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_spearman = spearman(predict(model, store, val), data["pkd"][val])
        if val_spearman > best["val_spearman"]:
            predictions = predict(model, store, test)
            best = {
                "val_spearman": val_spearman,
                "test_spearman": spearman(predictions, data["pkd"][test]),
                "test_rmse": float(np.sqrt(np.mean((predictions * std + mean - data["pkd"][test]) ** 2))),
                "epoch": epoch + 1,
            }
    best["trainable_parameters"] = sum(p.numel() for p in trainable)
    return best


# ------------------------------------------------------------------------------------------------ report


def summarise(runs: list[dict]) -> dict:
    table = {}
    for run in runs:
        table.setdefault((run["backbones"], run["variant"]), []).append(run["test_spearman"])
    return {
        key: {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
        for key, values in table.items()
    }


def markdown(summary: dict, references: dict, backbone_sets: list[str]) -> str:
    lines = [
        "| architecture | " + " | ".join(f"{name}: mean ± sd (min-max)" for name in backbone_sets) + " |",
        "| --- | " + " | ".join("---" for _ in backbone_sets) + " |",
    ]
    for label, _, _ in VARIANTS:
        cells = []
        for name in backbone_sets:
            s = summary[(name, label)]
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f} ({s['min']:.3f}-{s['max']:.3f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        f"| *reference: least squares, within-side terms only* | {references['additive']:.3f} (true features) |"
        + " |" * (len(backbone_sets) - 1)
    )
    lines.append(
        f"| *reference: least squares, with cross-side products* | {references['crossed']:.3f} (true features) |"
        + " |" * (len(backbone_sets) - 1)
    )
    return "\n".join(lines)


def plot(summary: dict, references: dict, backbone_sets: list[str], path: Path, head: str = "convbert") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _, _ in VARIANTS]
    width = 0.8 / len(backbone_sets)
    figure, axes = plt.subplots(figsize=(11, 5.2))
    for index, name in enumerate(backbone_sets):
        means = [summary[(name, label)]["mean"] for label in labels]
        spreads = [summary[(name, label)]["std"] for label in labels]
        positions = [i + (index - (len(backbone_sets) - 1) / 2) * width for i in range(len(labels))]
        axes.bar(positions, means, width, yerr=spreads, capsize=3, label=name)
    axes.axhline(references["additive"], color="grey", linestyle=":", label="least squares, within-side only")
    axes.axhline(references["crossed"], color="black", linestyle="--", label="least squares, true form")
    axes.set_xticks(
        range(len(labels)), [label.replace(", 0.1 modules", "\n(0.1 modules)") for label in labels], fontsize=7
    )
    axes.set_ylabel("test Spearman (mean ± sd over seeds)")
    axes.set_title(f"Synthetic complementarity affinity, {head} head, frozen tiny backbones")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


_WORKER: dict = {}


def _stem(head: str) -> str:
    """Output file name: `pair_architectures` for the ConvBERT comparison, `pair_architectures_<head>` otherwise."""
    return "pair_architectures" if head == "convbert" else f"pair_architectures_{head}"


def _start_worker(backbone_sets: dict, complexes: int) -> None:
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention
    _WORKER.update(backbone_sets=backbone_sets, data=make_dataset(complexes), stores={})


def run_job(job: tuple[str, str, int, int, str]) -> dict:
    """Train one (backbone set, variant, seed); frozen states of each layout are computed once per worker."""
    set_name, label, seed, epochs, head = job
    _, architecture, settings = next(v for v in VARIANTS if v[0] == label)
    backbones, data = _WORKER["backbone_sets"][set_name], _WORKER["data"]
    layout = {"pad": "ec"}.get(architecture, architecture)  # ec and pad read the same inputs
    if (set_name, layout) not in _WORKER["stores"]:
        frozen = MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=1).eval()
        processor = MetaEmbedProcessor.from_backbones(backbones)
        _WORKER["stores"][set_name, layout] = SegmentStore(frozen, processor, data, layout)
    started = time.perf_counter()
    store = _WORKER["stores"][set_name, layout]
    result = train_one(backbones, architecture, settings, store, data, seed, epochs, head)
    result.update(backbones=set_name, variant=label, seed=seed, seconds=round(time.perf_counter() - started, 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--complexes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once (one torch thread each)")
    parser.add_argument("--head", default="convbert", help="head of every model (the comparison uses convbert)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--from-json", type=Path, help="rebuild table and chart from a saved report, no training")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        names = list(dict.fromkeys(run["backbones"] for run in report["runs"]))
        summary = summarise(report["runs"])
        head = report["settings"]["head"]
        plot(summary, report["references"], names, args.out / f"{_stem(head)}.png", head)
        print(markdown(summary, report["references"], names))
        return
    started = time.perf_counter()
    data = make_dataset(args.complexes)
    references = reference_rows(data)
    with tempfile.TemporaryDirectory() as root:
        esm = make_tiny_esm(Path(root) / "esm", max_length=256)
        prott5 = make_tiny_prott5(Path(root) / "prott5", max_length=256)
        backbone_sets = {
            "one backbone (ESM-2-style)": [esm],
            "two backbones, dme (ESM-2 + ProtT5-style)": [esm, prott5],
        }
        # slowest variants first, so the workers finish together
        jobs = [
            (set_name, label, seed, args.epochs, args.head)
            for label in sorted((v[0] for v in VARIANTS), key=lambda name: "pad" not in name)
            for set_name in backbone_sets
            for seed in range(args.seeds)
        ]
        runs = []
        context = multiprocessing.get_context("spawn")  # no fork after torch started its thread pools
        pool = context.Pool(args.workers, _start_worker, (backbone_sets, args.complexes))
        try:
            for result in pool.imap_unordered(run_job, jobs):
                runs.append(result)
                print(
                    f"{result['backbones']:44s} {result['variant']:12s} seed {result['seed']}: test Spearman "
                    f"{result['test_spearman']:.3f} (best val {result['val_spearman']:.3f} at epoch "
                    f"{result['epoch']}, {result['seconds']}s)",
                    flush=True,
                )
        finally:
            pool.close()
            pool.join()
    runs.sort(
        key=lambda r: (
            list(backbone_sets).index(r["backbones"]),
            [v[0] for v in VARIANTS].index(r["variant"]),
            r["seed"],
        )
    )
    summary = summarise(runs)
    names = list(backbone_sets)
    table = markdown(summary, references, names)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(summary, references, names, args.out / f"{_stem(args.head)}.png", args.head)
    report = {
        "settings": vars(args) | {"out": str(args.out)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "references": references,
        "runs": runs,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / f"{_stem(args.head)}.json").write_text(json.dumps(report, indent=2, default=float))
    print(table)
    print(f"total {report['total_seconds']}s")


if __name__ == "__main__":
    main()
