"""Frozen-feature cache benchmark: training epoch time online vs from the cache vs the in-memory limit.

One frozen ESM-2-shaped backbone (random weights, the real ESM-2 vocabulary), `hp` architecture and ConvBERT head
(falls back to `single`/`linear` while those are not registered), 64 synthetic complexes of 1-3 chains of 50-300
residues per side, batch 8, AdamW. Three ways, each in its own fresh subprocess (so peak memory is its own):

- online: the processor tokenizes and the backbone runs at every step;
- cached: `CachedFeatureDataset` + `CachedFeatureCollator` read the states from a cache built once;
- in-memory limit: the same batches, already collated in memory, so only fusion + pairing + head run.

Then the cache build time on a set where every chain appears four times (64 complexes dealt from the chains of 16)
against those unique chains alone (the 16 complexes), each build in a fresh folder. Shapes:
ESM-2-8M (6 layers, hidden 320, 20 heads, intermediate 1280) and ESM-2-35M (12 x 480, 20 heads, 1920).

Run: python benchmarks/cache_benchmark.py [--shapes 8M 35M] [--epochs 3] [--output results.json]
"""

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import EsmConfig, EsmModel

from hf_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedProcessor,
    list_architectures,
    list_heads,
)
from hf_metaembed.cache import (
    CachedFeatureCollator,
    CachedFeatureDataset,
    FeatureCache,
    build_feature_cache,
    load_feature_cache,
)
from hf_metaembed.testing import build_tiny_esm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES = {
    "8M": {"num_hidden_layers": 6, "hidden_size": 320, "num_attention_heads": 20, "intermediate_size": 1280},
    "35M": {"num_hidden_layers": 12, "hidden_size": 480, "num_attention_heads": 20, "intermediate_size": 1920},
}
TARGET_SPEEDUP = {"8M": 3.0, "35M": 6.0}
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def architecture_and_head() -> tuple[str, str]:
    if "hp" in list_architectures() and "convbert" in list_heads():
        return "hp", "convbert"
    return "single", "linear"


def make_backbone(folder: Path, shape: str) -> str:
    """An ESM-2-shaped backbone with random (seeded) weights and the ESM-2 tokenizer, saved to `folder`."""
    torch.manual_seed(0)
    config = EsmConfig(
        vocab_size=33,
        pad_token_id=1,
        mask_token_id=32,
        position_embedding_type="rotary",
        max_position_embeddings=1026,
        token_dropout=True,
        **SHAPES[shape],
    )
    EsmModel(config, add_pooling_layer=False).save_pretrained(folder)
    build_tiny_esm(max_length=1024)[1].save_pretrained(folder)
    return str(folder)


def random_chain(rng: random.Random) -> str:
    return "".join(rng.choice(RESIDUES) for _ in range(rng.randint(50, 300)))


def make_complexes(count: int, seed: int) -> tuple[list, list, list]:
    """`count` complexes of 1-3 chains of 50-300 residues per side, and a pKd-like label each."""
    rng = random.Random(seed)
    ligand = [[random_chain(rng) for _ in range(rng.randint(1, 3))] for _ in range(count)]
    receptor = [[random_chain(rng) for _ in range(rng.randint(1, 3))] for _ in range(count)]
    labels = [rng.gauss(7.0, 2.0) for _ in range(count)]
    return ligand, receptor, labels


def repeat_chains(ligand: list, receptor: list, times: int, seed: int) -> tuple[list, list]:
    """`times` rounds of new complexes, each round dealing every chain once into the same side sizes."""
    rng = random.Random(seed)
    pool = [chain for side in ligand + receptor for chain in side]
    sizes = [len(side) for side in ligand + receptor]
    new_ligand, new_receptor = [], []
    for _ in range(times):
        rng.shuffle(pool)
        sides, start = [], 0
        for size in sizes:
            sides.append(pool[start : start + size])
            start += size
        new_ligand += sides[: len(ligand)]
        new_receptor += sides[len(ligand) :]
    return new_ligand, new_receptor


def dataset_inputs(architecture: str, ligand: list, receptor: list) -> dict:
    if architecture == "single":  # fallback: each complex read as its first ligand chain
        return {"sequences": [side[0] for side in ligand]}
    return {"ligand": ligand, "receptor": receptor}


def make_model(backbone: str, architecture: str, head: str) -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(
        [backbone],
        unit_types=["residue"],
        fusion="dme",
        architecture=architecture,
        head=head,
        num_labels=1,
        problem_type="regression",
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------------------------- worker (one mode)


def train_epochs(model, batches, epochs: int) -> list[float]:
    """Seconds per epoch of forward + backward + AdamW step over `batches` (an iterable re-read every epoch)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(next(iter(batches)))  # warm-up step (first-call allocations), not timed
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        times.append(time.perf_counter() - start)
    return times


def run_worker(args) -> dict:
    ligand, receptor, labels = make_complexes(args.complexes, seed=args.seed)
    architecture, head = architecture_and_head()
    if args.worker == "build":
        model = make_model(args.backbone, architecture, head).eval()
        processor = MetaEmbedProcessor.from_backbones([args.backbone])
        if args.repeat > 1:
            ligand, receptor = repeat_chains(ligand, receptor, args.repeat, seed=2)
        start = time.perf_counter()
        cache = build_feature_cache(
            model, processor, args.cache, **dataset_inputs(architecture, ligand, receptor), progress=False
        )
        return {"build_s": time.perf_counter() - start, **cache.build_summary}
    model = make_model(args.backbone, architecture, head)
    processor = MetaEmbedProcessor.from_backbones([args.backbone])
    inputs = dataset_inputs(architecture, ligand, receptor)
    label_tensor = torch.tensor(labels)
    after_load = peak_rss_mb()
    if args.worker == "online":
        keys = list(inputs)

        def collate(indices):
            batch = dict(processor(**{k: [inputs[k][i] for i in indices] for k in keys}, architecture=architecture))
            return {**batch, "labels": label_tensor[indices]}

        batches = torch.utils.data.DataLoader(range(args.complexes), batch_size=args.batch_size, collate_fn=collate)
    else:
        cache = load_feature_cache(args.cache, model, processor)
        dataset = CachedFeatureDataset(cache, **inputs, labels=label_tensor, architecture=architecture)
        batches = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=CachedFeatureCollator())
        if args.worker == "memory":
            batches = [
                {k: [s.clone() for s in v] if k == "backbone_states" else v.clone() for k, v in batch.items()}
                for batch in batches
            ]
    times = train_epochs(model, batches, args.epochs)
    return {"epoch_s": times, "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": after_load}


# --------------------------------------------------------------------------------------------- driver


def call_worker(mode: str, backbone: str, cache: Path, args, **extra) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--backbone", backbone, "--cache", str(cache)]
    command += ["--complexes", str(extra.get("complexes", args.complexes)), "--batch-size", str(args.batch_size)]
    command += ["--seed", str(extra.get("seed", 1))]
    command += ["--epochs", str(extra.get("epochs", args.epochs)), "--repeat", str(extra.get("repeat", 1))]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def benchmark_shape(shape: str, root: Path, args) -> dict:
    backbone = make_backbone(root / f"esm_{shape}", shape)
    cache = root / f"cache_{shape}"
    build = call_worker("build", backbone, cache, args)
    online = call_worker("online", backbone, cache, args, epochs=args.online_epochs)
    cached = call_worker("cached", backbone, cache, args)
    memory = call_worker("memory", backbone, cache, args)
    unique_builds, repeated_builds = [], []
    for round_index in range(args.build_rounds):  # alternate, so drift on a shared machine hits both alike
        subset = {"complexes": args.build_complexes, "seed": 3}
        unique = call_worker("build", backbone, root / f"u_{shape}_{round_index}", args, **subset)
        unique_builds.append(unique["build_s"])
        repeated = call_worker("build", backbone, root / f"r_{shape}_{round_index}", args, repeat=4, **subset)
        repeated_builds.append(repeated["build_s"])
    stored = FeatureCache(cache)
    return {
        "shape": shape,
        "build": build,
        "cache_mb": sum(record["bytes"] for record in stored.shards.values()) / 2**20,
        "online": online,
        "cached": cached,
        "memory": memory,
        "build_unique_s": unique_builds,
        "build_repeated_s": repeated_builds,
        "repeated_summary": repeated,
    }


def report(result: dict, args) -> None:
    shape = result["shape"]
    online, cached, memory = (min(result[k]["epoch_s"]) for k in ("online", "cached", "memory"))
    unique_s, repeated_s = min(result["build_unique_s"]), min(result["build_repeated_s"])
    build = result["build"]
    print(f"\nESM-2-{shape} shape {SHAPES[shape]}")
    print(
        f"  data: {args.complexes} complexes, {build['segments_read']} chains ({build['unique_segments']} unique), "
        f"batch {args.batch_size}; cache {result['cache_mb']:.1f} MB built once in {build['build_s']:.2f} s"
    )
    print(f"  online epoch:          {online:8.3f} s   peak RSS {result['online']['peak_rss_mb']:7.0f} MB")
    print(f"  cached epoch:          {cached:8.3f} s   peak RSS {result['cached']['peak_rss_mb']:7.0f} MB")
    print(f"  in-memory limit epoch: {memory:8.3f} s   peak RSS {result['memory']['peak_rss_mb']:7.0f} MB")
    print(
        f"  RSS after loading model and data, before training: online {result['online']['rss_after_load_mb']:.0f} MB,"
        f" cached {result['cached']['rss_after_load_mb']:.0f} MB"
    )
    print(f"  cached / in-memory limit: {cached / memory:.2f}x (target <= 1.3x)")
    print(f"  online / cached: {online / cached:.1f}x (target >= {TARGET_SPEEDUP[shape]:g}x)")
    summary = result["repeated_summary"]
    print(
        f"  cache build, every chain 4 times ({4 * args.build_complexes} complexes, {summary['segments_read']} chains "
        f"read, {summary['unique_segments']} unique): {repeated_s:.2f} s; unique chains alone ({args.build_complexes} "
        f"complexes): {unique_s:.2f} s: {repeated_s / unique_s:.2f}x (target <= 1.1x)"
    )
    print(
        f"  peak RSS cached / online: {result['cached']['peak_rss_mb'] / result['online']['peak_rss_mb']:.2f}x; "
        f"all epochs (s): online {_round(result['online']['epoch_s'])}, cached {_round(result['cached']['epoch_s'])},"
        f" memory {_round(result['memory']['epoch_s'])}"
    )


def _round(values: list[float]) -> list[float]:
    return [round(value, 3) for value in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--complexes", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of the cached and in-memory ways")
    parser.add_argument("--online-epochs", type=int, default=1, help="timed epochs of the online way")
    parser.add_argument("--build-rounds", type=int, default=2, help="alternating repeats of each cache build")
    parser.add_argument(
        "--build-complexes", type=int, default=16, help="complexes of unique chains in the build comparison"
    )
    parser.add_argument("--output", help="also write the raw figures to this JSON file")
    parser.add_argument("--worker", choices=["build", "online", "cached", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    architecture, head = architecture_and_head()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores "
        f"({torch.get_num_threads()} torch threads), torch {torch.__version__}, python {platform.python_version()}"
    )
    print(f"architecture {architecture!r}, head {head!r}, fusion 'dme'; each way in its own subprocess")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes:
            results.append(benchmark_shape(shape, Path(folder), args))
            report(results[-1], args)
    if args.output:
        Path(args.output).write_text(json.dumps({"architecture": architecture, "head": head, "results": results}))


if __name__ == "__main__":
    main()
