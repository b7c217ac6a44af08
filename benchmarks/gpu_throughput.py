"""Fused-embedding throughput on a GPU: `hf-metaembed embed` against the backbones alone, in float32 and bfloat16.

The setting of `benchmarks/embed_throughput.py` scaled to a GPU: 4,000 proteins with log-normal lengths (median 300,
30-1000 residues), an ESM-2-150M-shaped encoder (30 layers, hidden 640) and a ProtT5-like T5 encoder (24 x 512),
random weights. For each precision, the two sides run alternately (A B A B ...):

- backbones alone: fair-esm's `extract.py` loop over each backbone in turn (sorted by length, batches of up to
  `--max-tokens` padded tokens, mean residue state per protein), under `torch.autocast` for bfloat16;
- MetaEmbed: `hf-metaembed embed --device cuda --max-tokens N [--autocast bf16]` over a `concat` model of both
  backbones, in this process (input check, loading, embedding, writing the `.npy`).

It prints residues per second of each side and their ratio ("N.NNx": MetaEmbed time over backbones-alone time), and
writes them to the "GPU throughput" section of benchmarks/RESULTS.md (replacing an earlier one). Without a CUDA GPU it
says so and exits with code 0, measuring and writing nothing.

Run: python benchmarks/gpu_throughput.py [--count 4000] [--repeats 3] [--max-tokens 16384] [--results PATH]
"""

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import (  # noqa: E402
    alternated,
    build_backbones,
    hf_metaembed_embed,
    protein_lengths,
    raw_loop,
    save_model,
    write_fasta,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ESM_150M_SHAPE = {"num_hidden_layers": 30, "hidden_size": 640, "num_attention_heads": 20, "intermediate_size": 2560}
T5_GPU_SHAPE = {"d_model": 512, "d_kv": 64, "num_heads": 8, "num_layers": 24, "d_ff": 2048}
SECTION = "## GPU throughput (`benchmarks/gpu_throughput.py`)"
RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(results: Path, text: str) -> None:
    """Put `text` (starting with `SECTION`) into `results`, replacing the section of that title if there is one."""
    current = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", current).rstrip("\n") + "\n"
    else:
        updated = current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    results.write_text(updated, encoding="utf-8")


def measure(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        backbones = build_backbones(root, ESM_150M_SHAPE, T5_GPU_SHAPE)
        model = save_model(backbones, root / "fused")
        fasta = root / "proteins.fasta"
        lengths = protein_lengths(args.count)
        write_fasta(fasta, lengths)
        residues = sum(lengths)
        for label, dtype, options in (("float32", None, []), ("bfloat16 autocast", torch.bfloat16, ["bf16"])):
            cli_options = ["--device", "cuda", "--max-tokens", str(args.max_tokens)]
            cli_options += ["--autocast", *options] if options else []
            times, _ = alternated(
                {
                    "backbones alone": lambda dtype=dtype: raw_loop(
                        backbones, fasta, root / "raw.npy", "cuda", dtype, args.max_tokens
                    ),
                    "MetaEmbed": lambda options=cli_options: hf_metaembed_embed(
                        model, fasta, root / "ours.npy", 1, *options
                    ),
                },
                args.repeats,
            )
            medians = {side: statistics.median(values) for side, values in times.items()}
            difference = float(np.abs(np.load(root / "raw.npy") - np.load(root / "ours.npy")).max())
            row = {
                "precision": label,
                "alone_residues_per_s": residues / medians["backbones alone"],
                "fused_residues_per_s": residues / medians["MetaEmbed"],
                "ratio": medians["MetaEmbed"] / medians["backbones alone"],
                "max_difference": difference,
            }
            alone, fused = row["alone_residues_per_s"], row["fused_residues_per_s"]
            print(
                f"[{label}] backbones alone {alone:,.0f} residues/s, MetaEmbed {fused:,.0f} residues/s: "
                f"{row['ratio']:.2f}x; largest difference {difference:.1e}"
            )
            rows.append(row)
    return rows


def section(rows: list[dict], args) -> str:
    device = torch.cuda.get_device_name(0)
    lines = [
        SECTION,
        "",
        f"{args.count:,} proteins (log-normal lengths, median 300, 30-1000 residues), an ESM-2-150M-shaped encoder "
        "and a ProtT5-like T5 encoder (24 x 512), random weights, `concat` fusion; `hf-metaembed embed --device cuda "
        f"--max-tokens {args.max_tokens}` against each backbone's own sorted token-budget loop, run alternately, "
        f"median of {args.repeats}. {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.",
        "",
        "| precision | backbones alone | MetaEmbed (fused) | time ratio | largest difference |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['precision']} | {row['alone_residues_per_s']:,.0f} residues/s | "
            f"{row['fused_residues_per_s']:,.0f} residues/s | **{row['ratio']:.2f}x** | {row['max_difference']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md to write the section to")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build that sees no GPU"
        print(
            f"benchmarks/gpu_throughput.py needs a CUDA GPU; torch {torch.__version__} here is {build} "
            f"({platform.machine()}). Nothing was measured and {args.results} was not changed."
        )
        return 0
    rows = measure(args)
    write_section(args.results, section(rows, args))
    print(f"wrote the GPU throughput section to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
