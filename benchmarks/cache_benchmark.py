"""Frozen-feature cache benchmark: training epoch time online vs from the cache vs the in-memory limit.

One frozen ESM-2-shaped backbone (random weights, the real ESM-2 vocabulary), `hp` architecture and ConvBERT head,
`dme` fusion, 64 synthetic complexes of 1-3 chains of 50-300 residues per side, batch 8, AdamW. Three ways to feed
the same batches:

- online: the processor tokenizes and the backbone runs at every step;
- cached: `CachedFeatureDataset` + `CachedFeatureCollator` read the states from a cache built once;
- in-memory limit: the same batches, already collated in memory, so only fusion + pairing + head run.

Epoch times come from one process that alternates the three ways epoch by epoch (medians reported), so bursts of
other load on a shared machine hit all three alike. Peak memory (ru_maxrss) comes from one fresh process per way
(online, cached), one epoch each.

Then the cache build time on a set where every chain appears four times (64 complexes dealt from the chains of 16)
against those unique chains alone (the 16 complexes): one process alternates the two builds (each into a fresh
folder, after an untimed warm-up build) and also times what each spends outside the backbone forward passes. Shapes:
ESM-2-8M (6 layers, hidden 320, 20 heads, intermediate 1280) and ESM-2-35M (12 x 480, 20 heads, 1920).

Run: python benchmarks/cache_benchmark.py [--shapes 8M 35M] [--epochs 5] [--online-epochs 2] [--build-rounds 4]
    [--only-build] [--output results.json]
"""

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.cache import (
    CachedFeatureCollator,
    CachedFeatureDataset,
    FeatureCache,
    build_feature_cache,
    load_feature_cache,
)
from hf_metaembed.testing import make_tiny_esm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES = {
    "8M": {"num_hidden_layers": 6, "hidden_size": 320, "num_attention_heads": 20, "intermediate_size": 1280},
    "35M": {"num_hidden_layers": 12, "hidden_size": 480, "num_attention_heads": 20, "intermediate_size": 1920},
}
TARGET_SPEEDUP = {"8M": 3.0, "35M": 6.0}
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


ARCHITECTURE, HEAD = "hp", "convbert"


def make_backbone(folder: Path, shape: str) -> str:
    """An ESM-2-shaped backbone with random (seeded) weights and the ESM-2 tokenizer, saved to `folder`."""
    return make_tiny_esm(folder, max_length=1024, **SHAPES[shape])


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


# -------------------------------------------------------------------------------------------- workers


class EpochTimer:
    """Forward + backward + AdamW step of one model, timed per epoch over any iterable of batches."""

    def __init__(self, model) -> None:
        self.model = model.train()
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(self, batch: dict) -> None:
        self.model(**batch).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def epoch(self, batches) -> float:
        start = time.perf_counter()
        for batch in batches:
            self.step(batch)
        return time.perf_counter() - start


def batch_sources(args, model, architecture: str) -> dict:
    """The three ways to feed the same batches: `online` (tokenize, backbone in forward), `cached`, `memory`."""
    ligand, receptor, labels = make_complexes(args.complexes, seed=args.seed)
    processor = MetaEmbedProcessor.from_backbones([args.backbone])
    inputs = {"ligand": ligand, "receptor": receptor}
    label_tensor = torch.tensor(labels)

    def collate(indices):
        batch = processor(**{k: [v[i] for i in indices] for k, v in inputs.items()}, architecture=architecture)
        return {**batch, "labels": label_tensor[indices]}

    online = DataLoader(range(args.complexes), batch_size=args.batch_size, collate_fn=collate)
    cache = load_feature_cache(args.cache, model, processor)
    dataset = CachedFeatureDataset(cache, **inputs, labels=label_tensor, architecture=architecture)
    cached = DataLoader(dataset, batch_size=args.batch_size, collate_fn=CachedFeatureCollator())
    return {"online": online, "cached": cached}


def compare_builds(model, args) -> dict:
    """Alternate builds of the unique chains (`args.complexes` complexes) and of the same chains dealt four times,
    each into a fresh folder, after one untimed warm-up build; time also what is spent outside the backbones."""
    ligand, receptor, _ = make_complexes(args.complexes, seed=args.seed)
    sets = {"unique": (ligand, receptor), "repeated": repeat_chains(ligand, receptor, 4, seed=2)}
    processor = MetaEmbedProcessor.from_backbones([args.backbone])
    base = model.metaembed
    in_backbones = [0.0]
    compute = base.reader.read_backbones

    def timed_compute(*arguments, **kwargs):
        start = time.perf_counter()
        try:
            return compute(*arguments, **kwargs)
        finally:
            in_backbones[0] += time.perf_counter() - start

    base.reader.read_backbones = timed_compute
    root = Path(args.cache)
    build_feature_cache(model, processor, root / "warm-up", ligand=ligand, receptor=receptor, progress=False)
    result = {f"{name}_{kind}": [] for name in sets for kind in ("s", "outside_s")}
    for round_index in range(args.build_rounds):  # alternated, so drift on a shared machine hits both alike
        for name, (lig, rec) in sets.items():
            in_backbones[0] = 0.0
            start = time.perf_counter()
            cache = build_feature_cache(
                model, processor, root / f"{name}-{round_index}", ligand=lig, receptor=rec, progress=False
            )
            elapsed = time.perf_counter() - start
            result[f"{name}_s"].append(elapsed)
            result[f"{name}_outside_s"].append(elapsed - in_backbones[0])
            result[f"{name}_summary"] = cache.build_summary
    return result


def run_worker(args) -> dict:
    architecture = ARCHITECTURE
    model = make_model(args.backbone, ARCHITECTURE, HEAD)
    if args.worker == "build":
        ligand, receptor, _ = make_complexes(args.complexes, seed=args.seed)
        processor = MetaEmbedProcessor.from_backbones([args.backbone])
        inputs = {"ligand": ligand, "receptor": receptor}
        start = time.perf_counter()
        cache = build_feature_cache(model.eval(), processor, args.cache, **inputs, progress=False)
        return {"build_s": time.perf_counter() - start, **cache.build_summary}
    if args.worker == "builds":
        return compare_builds(model.eval(), args)
    sources = batch_sources(args, model, architecture)
    trainer = EpochTimer(model)
    if args.worker == "timing":
        # the same batches, already collated and copied into memory: only fusion, pairing and head remain
        sources["memory"] = [
            {k: [t.clone() for t in v] if k == "backbone_states" else v.clone() for k, v in batch.items()}
            for batch in sources["cached"]
        ]
        for source in sources.values():
            trainer.step(next(iter(source)))  # warm-up (first-call allocations), not timed
        times = {name: [] for name in sources}
        for round_index in range(args.epochs):  # interleaved: a burst of load on the machine hits every way alike
            for name, source in sources.items():
                if name != "online" or round_index < args.online_epochs:
                    times[name].append(trainer.epoch(source))
        return times
    # peak-memory workers: one way per process, one epoch
    after_load = peak_rss_mb()
    source = sources[args.worker]
    trainer.step(next(iter(source)))
    epoch_s = trainer.epoch(source)
    return {"epoch_s": epoch_s, "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": after_load}


# --------------------------------------------------------------------------------------------- driver


def call_worker(mode: str, backbone: str, cache: Path, args, **extra) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--backbone", backbone, "--cache", str(cache)]
    command += ["--complexes", str(extra.get("complexes", args.complexes)), "--batch-size", str(args.batch_size)]
    command += ["--seed", str(extra.get("seed", 1))]
    command += ["--epochs", str(args.epochs), "--online-epochs", str(args.online_epochs)]
    command += ["--build-rounds", str(args.build_rounds)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def benchmark_shape(shape: str, root: Path, args) -> dict:
    backbone = make_backbone(root / f"esm_{shape}", shape)
    cache = root / f"cache_{shape}"
    result = {"shape": shape}
    if not args.only_build:
        result["build"] = call_worker("build", backbone, cache, args)
        result["cache_mb"] = sum(record["bytes"] for record in FeatureCache(cache).shards.values()) / 2**20
        result["timing"] = call_worker("timing", backbone, cache, args)
        result["memory_online"] = call_worker("online", backbone, cache, args)
        result["memory_cached"] = call_worker("cached", backbone, cache, args)
    result["builds"] = call_worker(
        "builds", backbone, root / f"builds_{shape}", args, complexes=args.build_complexes, seed=3
    )
    return result


def report_build(result: dict, args) -> None:
    builds = result["builds"]
    unique_s, repeated_s = statistics.median(builds["unique_s"]), statistics.median(builds["repeated_s"])
    summary = builds["repeated_summary"]
    print(
        f"  cache build, every chain 4 times ({4 * args.build_complexes} complexes, {summary['segments_read']} chains "
        f"read, {summary['unique_segments']} unique): {repeated_s:.2f} s; unique chains alone ({args.build_complexes} "
        f"complexes): {unique_s:.2f} s: {repeated_s / unique_s:.2f}x (target <= 1.1x); medians of "
        f"{args.build_rounds} alternated builds in one process: {_round(builds['repeated_s'])} vs "
        f"{_round(builds['unique_s'])}"
    )
    outside_repeated, outside_unique = (statistics.median(builds[f"{k}_outside_s"]) for k in ("repeated", "unique"))
    print(
        f"    of which outside the backbone forward passes (reading, deduplicating, tokenizing, writing shards): "
        f"{outside_repeated:.3f} s vs {outside_unique:.3f} s"
    )


def report(result: dict, args) -> None:
    if args.only_build:
        print(f"\nESM-2-{result['shape']} shape {SHAPES[result['shape']]}")
        report_build(result, args)
        return
    shape, build, timing = result["shape"], result["build"], result["timing"]
    online, cached, memory = (statistics.median(timing[k]) for k in ("online", "cached", "memory"))
    memory_online, memory_cached = result["memory_online"], result["memory_cached"]
    print(f"\nESM-2-{shape} shape {SHAPES[shape]}")
    print(
        f"  data: {args.complexes} complexes, {build['segments_read']} chains ({build['unique_segments']} unique), "
        f"batch {args.batch_size}; cache {result['cache_mb']:.1f} MB built once in {build['build_s']:.2f} s"
    )
    print(f"  epoch time, median of interleaved epochs (all epochs: {json.dumps(_round(timing))}):")
    print(f"    online {online:.3f} s, cached {cached:.3f} s, in-memory limit {memory:.3f} s")
    print(f"  cached / in-memory limit: {cached / memory:.2f}x (target <= 1.3x)")
    print(f"  online / cached: {online / cached:.1f}x (target >= {TARGET_SPEEDUP[shape]:g}x)")
    report_build(result, args)
    print(
        f"  peak RSS of one training epoch, own process each: online {memory_online['peak_rss_mb']:.0f} MB, cached "
        f"{memory_cached['peak_rss_mb']:.0f} MB ({memory_cached['peak_rss_mb'] / memory_online['peak_rss_mb']:.2f}x);"
        f" after loading model and data: {memory_online['rss_after_load_mb']:.0f} / "
        f"{memory_cached['rss_after_load_mb']:.0f} MB"
    )


def _round(values):
    if isinstance(values, dict):
        return {key: _round(value) for key, value in values.items()}
    return [round(value, 2) for value in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--complexes", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of the cached and in-memory ways")
    parser.add_argument("--online-epochs", type=int, default=2, help="timed epochs of the online way")
    parser.add_argument("--build-rounds", type=int, default=4, help="alternating repeats of each cache build")
    parser.add_argument("--only-build", action="store_true", help="only the cache build comparison")
    parser.add_argument(
        "--build-complexes", type=int, default=16, help="complexes of unique chains in the build comparison"
    )
    parser.add_argument("--output", help="also write the raw figures to this JSON file")
    parser.add_argument("--worker", choices=["build", "builds", "timing", "online", "cached"], help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores "
        f"({torch.get_num_threads()} torch threads), torch {torch.__version__}, python {platform.python_version()}"
    )
    print(
        f"architecture {ARCHITECTURE!r}, head {HEAD!r}, fusion 'dme'; epoch times from one process alternating the "
        "three ways, peak memory from one process per way"
    )
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes:
            results.append(benchmark_shape(shape, Path(folder), args))
            report(results[-1], args)
    if args.output:
        Path(args.output).write_text(json.dumps({"architecture": ARCHITECTURE, "head": HEAD, "results": results}))


if __name__ == "__main__":
    main()
