"""Peak memory of `hf-metaembed embed` over 1,000 and 10,000 proteins, and an interrupted 10,000 run resumed.

A saved DME model over an ESM-2-style encoder (4 layers, hidden 128, random weights, the real ESM-2 vocabulary) and
a tiny Ankh-style T5 encoder; FASTA input of random proteins of 30-200 residues; `.npz` output with per-residue
fusion weights (the largest output `embed` writes). Each run is its own process, started through the same entry
point as the console script, and reports its own peak resident set size (ru_maxrss), so the figures compare the
same work at two input sizes side by side.

Then the 10,000-protein run again, killed with SIGKILL once about half of its shards are written, and rerun with the
same command: the resumed output must hold every record exactly once, in input order, equal to the uninterrupted
output up to float rounding (1e-5: the rerun's batches start at the resume point, so they are padded differently).

Run: python benchmarks/embed_memory.py [--counts 1000 10000] [--batch-size 32] [--shard-size 1000]
"""

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.io.embeddings import EMBEDDING_INDEX_NAME
from hf_metaembed.testing import make_tiny_ankh, make_tiny_esm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"

# one `hf-metaembed embed` run; prints its exit code and its own peak RSS (Linux reports KiB) as JSON
RUNNER = """
import json, resource, sys
from hf_metaembed.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_model(root: Path) -> str:
    shape = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 8, "intermediate_size": 512}
    esm_folder = make_tiny_esm(root / "esm", max_length=1024, **shape)
    ankh_folder = make_tiny_ankh(root / "ankh", max_length=1024)
    backbones = [str(esm_folder), str(ankh_folder)]
    model_folder = root / "model"
    MetaEmbedModel.from_backbones(backbones, fusion="dme").save_pretrained(model_folder)
    MetaEmbedProcessor.from_backbones(backbones).save_pretrained(model_folder)
    return str(model_folder)


def write_fasta(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(count):
            sequence = "".join(rng.choice(RESIDUES) for _ in range(rng.randint(30, 200)))
            handle.write(f">protein_{number}\n{sequence}\n")


def embed_command(model: str, fasta: Path, output: Path, args) -> list[str]:
    return [
        sys.executable,
        "-c",
        RUNNER,
        "embed",
        str(fasta),
        "--model",
        model,
        "-o",
        str(output),
        "--fusion-weights",
        "--batch-size",
        str(args.batch_size),
        "--shard-size",
        str(args.shard_size),
        "--threads",
        str(args.threads),
        "--no-progress",
    ]


def run_embed(model: str, fasta: Path, output: Path, args) -> dict:
    start = time.perf_counter()
    completed = subprocess.run(embed_command(model, fasta, output, args), capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"embed failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {**result, "seconds": time.perf_counter() - start}


def killed_then_resumed(model: str, fasta: Path, output: Path, count: int, args) -> dict:
    """Start the run, SIGKILL it once half of its shards are in the work folder's index, then rerun it."""
    parts = output.with_name(output.name + ".parts")
    process = subprocess.Popen(
        embed_command(model, fasta, output, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    done_at_kill = 0
    while process.poll() is None:
        index = parts / EMBEDDING_INDEX_NAME
        if index.exists():
            done_at_kill = json.loads(index.read_text(encoding="utf-8")).get("records", 0)  # replaced atomically
            if done_at_kill >= count // 2:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.2)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the first run ended by itself ({process.returncode}) before it could be killed")
    resumed = run_embed(model, fasta, output, args)
    return {"records_at_kill": done_at_kill, **resumed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-resume", action="store_true", help="skip the killed-and-resumed run")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = build_model(root)
        runs = {}
        for count in args.counts:
            fasta = root / f"proteins_{count}.fasta"
            write_fasta(fasta, count)
            runs[count] = run_embed(model, fasta, root / f"out_{count}.npz", args)
            size_mb = os.path.getsize(root / f"out_{count}.npz") / 2**20
            print(
                f"{count:>6} proteins: peak RSS {runs[count]['peak_rss_mb']:.0f} MB, {runs[count]['seconds']:.1f} s, "
                f"output {size_mb:.1f} MB"
            )
        small, large = min(args.counts), max(args.counts)
        ratio = runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"]
        print(f"peak RSS {large} / {small} proteins: {ratio:.3f}x (input and output grow {large / small:g}x)")
        if args.skip_resume:
            return
        fasta = root / f"proteins_{large}.fasta"
        resumed_path = root / f"resumed_{large}.npz"
        resumed = killed_then_resumed(model, fasta, resumed_path, large, args)
        with np.load(root / f"out_{large}.npz") as whole, np.load(resumed_path) as again:
            ids_ok = list(again["ids"]) == [f"protein_{i}" for i in range(large)]
            units_ok = np.array_equal(whole["num_units"], again["num_units"])
            # the rerun starts its batches at the resume point, so padding differs: equal up to float rounding
            difference = max(float(np.abs(whole[key] - again[key]).max()) for key in ("embeddings", "fusion_weights"))
            rows = len(again["ids"])
        print(
            f"killed with SIGKILL after {resumed['records_at_kill']} of {large} records, rerun: {rows} records; ids "
            f"in order and each once: {ids_ok}; units per record equal: {units_ok}; largest difference from the "
            f"uninterrupted run (embeddings, fusion weights): {difference:.1e}; rerun peak RSS "
            f"{resumed['peak_rss_mb']:.0f} MB, {resumed['seconds']:.1f} s"
        )
        if not (ids_ok and units_ok and rows == large and difference <= 1e-5):
            sys.exit(1)


if __name__ == "__main__":
    main()
