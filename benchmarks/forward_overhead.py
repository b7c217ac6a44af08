"""Forward-pass overhead of MetaEmbed over its backbones, measured side by side in one run.

Two protein backbones of real sizes with random weights (an ESM-2-8M shape and a ProtT5-like T5 encoder of similar
size), `dme` fusion at unit level. Timed per batch, the two sides called alternately, median of several repeats
(wall time, and CPU time summed over threads):

- backbones alone: each backbone's own tokenizer call plus its own forward on the same sequences;
- MetaEmbed: MetaEmbedProcessor (tokenization for both backbones and token-to-unit alignment) plus the full forward
  (both backbones, alignment, fusion, pooling).

Run: python benchmarks/forward_overhead.py [--repeats 21] [--batch 8]
"""

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_backbones  # noqa: E402

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_backbones(root: Path) -> list[str]:
    esm_shape = {"num_hidden_layers": 6, "hidden_size": 320, "num_attention_heads": 20, "intermediate_size": 1280}
    tiny_backbones.make_tiny_esm(root / "esm", max_length=1024, **esm_shape)
    torch.manual_seed(0)
    t5_tokenizer = tiny_backbones.build_tiny_prott5(max_length=1024)[1]
    t5 = T5EncoderModel(
        T5Config(vocab_size=len(t5_tokenizer), d_model=256, d_kv=32, num_heads=8, num_layers=6, d_ff=1024)
    )
    t5.save_pretrained(root / "t5")
    t5_tokenizer.save_pretrained(root / "t5")
    return [str(root / "esm"), str(root / "t5")]


def paired_times(first, second, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of two functions called alternately (ABAB...), so drift on a shared machine hits both."""
    first(), second()  # warm-up
    wall = ([], [])
    cpu = ([], [])
    for _ in range(repeats):
        for slot, function in enumerate((first, second)):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            function()
            wall[slot].append(time.perf_counter() - wall_start)
            cpu[slot].append(time.process_time() - cpu_start)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rng = random.Random(0)
    sequences = [
        "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(200, 300))) for _ in range(args.batch)
    ]
    with tempfile.TemporaryDirectory() as folder:
        paths = build_backbones(Path(folder))
        model = MetaEmbedModel.from_backbones(paths, fusion="dme", level="unit").eval()
        processor = MetaEmbedProcessor.from_backbones(paths)
        esm_tokenizer, t5_tokenizer = (AutoTokenizer.from_pretrained(p) for p in paths)
        esm, t5 = model.backbone_0, model.backbone_1

        @torch.no_grad()
        def backbones_alone():
            esm(**esm_tokenizer(sequences, padding=True, return_tensors="pt"))
            spaced = [" ".join(sequence) for sequence in sequences]
            t5(**t5_tokenizer(spaced, padding=True, return_tensors="pt"))

        @torch.no_grad()
        def metaembed():
            model(**processor(sequences))

        wall, cpu = paired_times(backbones_alone, metaembed, args.repeats)
    alone_s, fused_s = statistics.median(wall[0]), statistics.median(wall[1])
    alone_cpu, fused_cpu = statistics.median(cpu[0]), statistics.median(cpu[1])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"batch of {args.batch} proteins, 200-300 residues; ESM-2-8M shape + T5 encoder (6 x 256)")
    print(f"backbones alone (tokenize + forward): {alone_s * 1000:.1f} ms")
    print(f"MetaEmbed dme (process + align + fuse): {fused_s * 1000:.1f} ms")
    print(f"ratio (wall, median of {args.repeats} alternated calls): {fused_s / alone_s:.3f}x (target <= 1.10x)")
    print(f"CPU time (all threads): backbones alone {alone_cpu * 1000:.1f} ms, MetaEmbed {fused_cpu * 1000:.1f} ms")
    print(f"ratio (CPU time): {fused_cpu / alone_cpu:.3f}x")


if __name__ == "__main__":
    main()
