"""Fitted meta-embeddings at scale, Matryoshka truncation and quantised embeddings (issue 19).

1. Fit time and peak memory of every fitted fusion (`hf_metaembed.fitting.fit_fusion`) from 10k to 1M unit vectors
   of three synthetic sources (32, 48 and 64 dims, sharing a 16-dim latent factor, plus noise), streamed in batches
   of 4,096 rows that are generated on the fly (nothing holds the whole sample). Peak memory is the growth of the
   process's peak RSS during the fit (VmHWM reset through /proc/self/clear_refs before each fit).
2. Matryoshka: a DME classifier over the same sources trained with the plain task loss and with `MatryoshkaLoss`
   (dims 64, 32, 16, 8), accuracy on held-out samples at the full width and at 1/2, 1/4 and 1/8 of it.
3. Quality kept per precision: top-1 retrieval of noisy copies among 2,000 fused (pca) vectors, per precision.

    python benchmarks/fit_fusions.py            # writes benchmarks/fit_fusions.json and its RESULTS.md section
    python benchmarks/fit_fusions.py --quick    # 10k and 50k vectors, fewer epochs (a smoke run)
"""

import argparse
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import torch
from transformers import BertConfig

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedModel
from hf_metaembed.compact import MatryoshkaLoss, nested_prefix, retrieval_quality
from hf_metaembed.fitting import UnitRows, fit_fusion, fitted_fusion_names

DIMS = [32, 48, 64]
LATENT = 16
BATCH_ROWS = 4096
FUSED = 32
SECTION = "## Fitted meta-embeddings, Matryoshka and quantised embeddings (`benchmarks/fit_fusions.py`)"
RESULTS = Path(__file__).with_name("RESULTS.md")
AUTOENCODER = {"epochs": 1, "batch_rows": 1024}
FIT_OPTIONS = {"daeme": AUTOENCODER, "caeme": AUTOENCODER, "aaeme": AUTOENCODER}


def mixing(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(LATENT, d, generator=generator) for d in DIMS]


def synthetic_batch(index: int, rows: int, maps: list[torch.Tensor], noise: float = 0.3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + index)
    latent = torch.randn(rows, LATENT, generator=generator)
    return [latent @ m + noise * torch.randn(rows, m.shape[1], generator=generator) for m in maps]


def streamed_rows(count: int, maps: list[torch.Tensor]) -> UnitRows:
    def batches():
        for index, start in enumerate(range(0, count, BATCH_ROWS)):
            yield synthetic_batch(index, min(BATCH_ROWS, count - start), maps)

    return UnitRows(batches, DIMS, description=f"{count} synthetic vectors")


def backbone_configs() -> list[dict]:
    return [
        BertConfig(
            hidden_size=d, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * d, vocab_size=64
        ).to_dict()
        for d in DIMS
    ]


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def measure_fit(fusion: str, count: int, maps) -> dict:
    model = MetaEmbedModel(
        MetaEmbedConfig(backbone_configs=backbone_configs(), fusion=fusion, fusion_dim=FUSED, lle_anchors=1000)
    )
    rows = streamed_rows(count, maps)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kib("VmRSS")
    started, cpu_started = time.perf_counter(), time.process_time()
    report = fit_fusion(model, rows, **FIT_OPTIONS.get(fusion, {}))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "fusion": fusion,
        "vectors": count,
        "fitted_on": report.vectors,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "peak_mib": round((status_kib("VmHWM") - before) / 1024, 1),
    }


def classification_data(count: int, maps, seed: int):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(count, LATENT, generator=generator)
    labels = (latent @ torch.randn(LATENT, 4, generator=torch.Generator().manual_seed(7))).argmax(-1)
    states = [(latent @ m + 0.3 * torch.randn(count, m.shape[1], generator=generator)).unsqueeze(1) for m in maps]
    return states, labels


def matryoshka_quality(maps, epochs: int) -> list[dict]:
    train_states, train_labels = classification_data(3000, maps, seed=1)
    test_states, test_labels = classification_data(1000, maps, seed=2)
    width = 64
    rows = []
    for name, dims in (("plain loss", [width]), ("MatryoshkaLoss", [width, width // 2, width // 4, width // 8])):
        torch.manual_seed(0)
        config = MetaEmbedConfig(
            backbone_configs=backbone_configs(), fusion="dme", fusion_dim=width, num_labels=4, head_dropout=0.0
        )
        model = MetaEmbedForSequenceClassification(config)
        loss_fn = MatryoshkaLoss(model, dims=dims)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(train_labels), generator=generator).split(64):
                inputs = {"backbone_states": [s[batch] for s in train_states], "unit_mask": torch.ones(len(batch), 1)}
                loss = loss_fn(inputs, train_labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            pooled = model(backbone_states=test_states, unit_mask=torch.ones(len(test_labels), 1)).pooler_output
            row = {"training": name}
            for dim in (width, width // 2, width // 4, width // 8):
                predicted = model.classifier(nested_prefix(pooled, dim)).argmax(-1)
                row[f"accuracy@{dim}"] = round(float((predicted == test_labels).float().mean()), 3)
        rows.append(row)
    return rows


def precision_quality(maps) -> dict:
    model = MetaEmbedModel(MetaEmbedConfig(backbone_configs=backbone_configs(), fusion="pca", fusion_dim=FUSED))
    fit_fusion(model, streamed_rows(20000, maps))
    clean = synthetic_batch(99, 2000, maps, noise=0.3)
    generator = torch.Generator().manual_seed(5)
    noisy = [s[:500] + 0.25 * s[:500].std() * torch.randn(s[:500].shape, generator=generator) for s in clean]

    def fuse(states):
        with torch.no_grad():
            return model(backbone_states=[s.unsqueeze(1) for s in states], unit_mask=torch.ones(len(states[0]), 1))

    corpus = fuse(clean).pooler_output.numpy()
    queries = fuse(noisy).pooler_output.numpy()
    return retrieval_quality(corpus, list(range(500)), queries)


def write_section(results: Path, text: str) -> None:
    """Put `text` (starting with `SECTION`) into `results`, replacing the section of that title if there is one."""
    current = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", current).rstrip("\n") + "\n"
    else:
        updated = current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    results.write_text(updated, encoding="utf-8")


def section(results: dict) -> str:
    sizes = sorted({row["vectors"] for row in results["fits"]})
    lines = [
        SECTION,
        "",
        f"{results['machine']}, {results['threads']} torch thread (under other jobs' load a second thread made "
        f"timings erratic); three synthetic sources ({', '.join(map(str, DIMS))} dims, one {LATENT}-dim latent "
        f"factor plus noise), fused size {FUSED}, streamed in batches of {BATCH_ROWS} rows generated on the fly "
        "(generation is part of every pass). CPU seconds of the process (wall time in fit_fusions.json) / growth of "
        "peak RSS in MiB during the fit. The autoencoders run one epoch of Adam in mini-batches of 1,024 rows; lle "
        "keeps 1,000 anchors (past the sampling pass its cost does not grow with the data). Load average "
        f"{results['load'][0]:.1f} before and {results['load'][1]:.1f} after the fits (other jobs share the cores).",
        "",
        "| fusion | " + " | ".join(f"{n:,} vectors" for n in sizes) + " | time growth, 10x vectors |",
        "| --- | " + " | ".join("---" for _ in sizes) + " | --- |",
    ]
    for fusion in dict.fromkeys(row["fusion"] for row in results["fits"]):
        cells = {row["vectors"]: row for row in results["fits"] if row["fusion"] == fusion}
        text = [f"{cells[n]['cpu_seconds']:.2f} s / {cells[n]['peak_mib']:.0f} MiB" for n in sizes]
        decades = math.log10(sizes[-1] / sizes[0])
        growth = (cells[sizes[-1]]["cpu_seconds"] / max(cells[sizes[0]]["cpu_seconds"], 1e-9)) ** (1 / decades)
        lines.append(f"| `{fusion}` | " + " | ".join(text) + f" | {growth:.1f}x |")
    growths = {
        fusion: (by[sizes[-1]]["cpu_seconds"] / max(by[sizes[0]]["cpu_seconds"], 1e-9)) ** (1 / decades)
        for fusion in dict.fromkeys(row["fusion"] for row in results["fits"])
        for by in [{row["vectors"]: row for row in results["fits"] if row["fusion"] == fusion}]
    }
    streamed = [g for fusion, g in growths.items() if fusion != "lle"]
    lines += [
        "",
        f"Every method but lle costs {min(streamed):.1f}-{max(streamed):.1f}x more time per 10x vectors (linear: one "
        "pass over the data, or one per epoch, then work independent of the count), and the peak memory of every "
        f"fit stays under {max(row['peak_mib'] for row in results['fits']):.0f} MiB at every size: nothing holds "
        "the sample.",
    ]
    lines += [
        "",
        "Matryoshka (DME over the three sources, 4 classes, 3,000 training / 1,000 test samples; the head reads the "
        "pooled vector with every coordinate past the prefix zeroed, the tied-weight form):",
        "",
        "| training | "
        + " | ".join(k.replace("accuracy@", "width ") for k in results["matryoshka"][0] if k != "training")
        + " |",
        "| --- | " + " | ".join("---" for k in results["matryoshka"][0] if k != "training") + " |",
    ]
    for row in results["matryoshka"]:
        lines.append(
            f"| {row['training']} | " + " | ".join(f"{v:.3f}" for k, v in row.items() if k != "training") + " |"
        )
    lines += [
        "",
        "Quality kept per precision (top-1 retrieval of 500 noisy copies among 2,000 `pca`-fused vectors, 32 dims):",
        "",
        "| " + " | ".join(results["precisions"]) + " |",
        "| " + " | ".join("---" for _ in results["precisions"]) + " |",
        "| " + " | ".join(f"{v:.3f}" for v in results["precisions"].values()) + " |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k and 50k vectors, 2 Matryoshka epochs")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("fit_fusions.json"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="RESULTS.md to write the section to")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--from-json", type=Path, help="only rewrite the RESULTS.md section from a saved JSON")
    args = parser.parse_args()
    if args.from_json:
        write_section(args.results, section(json.loads(args.from_json.read_text())))
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    maps = mixing()
    sizes = [10_000, 50_000] if args.quick else [10_000, 100_000, 1_000_000]
    fits = []
    load_before = os.getloadavg()[0]
    for fusion in fitted_fusion_names():
        for count in sizes:
            fits.append(measure_fit(fusion, count, maps))
            print(json.dumps(fits[-1]), flush=True)
    results = {
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}",
        "load": [load_before, os.getloadavg()[0]],
        "threads": torch.get_num_threads(),
        "fits": fits,
        "matryoshka": matryoshka_quality(maps, epochs=2 if args.quick else 15),
        "precisions": precision_quality(maps),
    }
    print(json.dumps({k: results[k] for k in ("matryoshka", "precisions")}))
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_results:
        write_section(args.results, section(results))


if __name__ == "__main__":
    main()
