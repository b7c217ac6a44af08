"""Throughput of `hf-metaembed embed` against the plain loop over the raw backbones, on a realistic protein mix.

The setting: 400 proteins with log-normal lengths (median 300, sigma 0.6, redrawn until within 30-1000 residues),
random residues; backbones of real shapes with random weights: an ESM-2-8M-shaped encoder (6 layers, hidden 320,
`hf_metaembed.testing.make_tiny_esm(**shape)`) and, for the fused variant, a ProtT5-like T5 encoder (6 x 256), both
reading up to 1,000 residues; 2 CPU threads.

- *Throughput*: `hf-metaembed embed` with its default options (called in this process, as the console script calls
  it: input check, model loading, embedding, writing the `.npy`) against the loop fair-esm's `extract.py` runs: load
  each backbone and its tokenizer, sort the proteins by length, fill batches up to 4,096 padded tokens, run the
  backbone, average each protein's residue states, write the `.npy`. Same process and threads; the two sides run
  alternately (A B A B ...) and each side's median is compared, printed as "N.NNx". The models use `concat` fusion,
  so their embeddings are the raw loop's mean residue states (one backbone) or both of them side by side (two), and
  the outputs are compared.
- *Token budget*: `embed` at several `--max-tokens`, each a fresh process (wall time and peak RSS), rounds alternated.
- *Peak memory*: `embed` with default options on this mix, in its own process, against the 1,000-short-protein
  setting of `benchmarks/embed_memory.py` (550 MB in RESULTS.md) run here too.
- *Processes*: one process with 2 threads against `torchrun --nproc_per_node 2` (1 thread each) on the same 2 cores,
  alternated; outputs compared.

Run: python benchmarks/embed_throughput.py [--quick] [--repeats 3] [--budgets 1024 2048 4096 8192 16384]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, T5Config, T5EncoderModel

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cli import main as cli_main
from hf_metaembed.testing import build_tiny_prott5, make_tiny_esm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESIDUES = list("ACDEFGHIKLMNPQRSTVWY")
ESM_8M_SHAPE = {"num_hidden_layers": 6, "hidden_size": 320, "num_attention_heads": 20, "intermediate_size": 1280}
RAW_TOKENS_PER_BATCH = 4096  # fair-esm extract.py's default --toks_per_batch
RESULTS_1000_SHORT_MB = 550.0  # benchmarks/RESULTS.md, "Peak memory of hf-metaembed embed", 1,000 proteins

# one `hf-metaembed embed` run in a fresh process; prints its exit code and its own peak RSS. VmHWM, not ru_maxrss:
# Linux carries ru_maxrss over from the parent at fork and exec, and this parent holds models of its own
RUNNER = """
import json, sys
from hf_metaembed.cli import main
code = main(sys.argv[1:])
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "peak_rss_mb": peak / 1024}))
"""


# ---------------------------------------------------------------------------------------------- setting


def protein_lengths(count: int, seed: int = 0, median: int = 300, sigma: float = 0.6) -> list[int]:
    rng = np.random.default_rng(seed)
    lengths = []
    while len(lengths) < count:
        length = int(round(rng.lognormal(np.log(median), sigma)))
        if 30 <= length <= 1000:
            lengths.append(length)
    return lengths


def write_fasta(path: Path, lengths: list[int], seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    sequences = ["".join(rng.choice(RESIDUES, length)) for length in lengths]
    path.write_text("".join(f">protein_{i}\n{s}\n" for i, s in enumerate(sequences)), encoding="utf-8")
    return sequences


T5_SHAPE = {"d_model": 256, "d_kv": 32, "num_heads": 8, "num_layers": 6, "d_ff": 1024}


def build_backbones(root: Path, esm_shape: dict = ESM_8M_SHAPE, t5_shape: dict = T5_SHAPE) -> list[str]:
    """An ESM-2-shaped and a ProtT5-like T5 encoder with random weights, each reading up to 1,000 residues."""
    esm = make_tiny_esm(root / "esm", max_length=1024, **esm_shape)
    torch.manual_seed(0)
    t5_tokenizer = build_tiny_prott5(max_length=1024)[1]
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), **t5_shape))
    t5.save_pretrained(root / "t5")
    t5_tokenizer.save_pretrained(root / "t5")
    return [str(esm), str(root / "t5")]


def save_model(backbones: list[str], folder: Path) -> str:
    MetaEmbedModel.from_backbones(backbones, fusion="concat").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones(backbones).save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------------------- the two sides


def read_fasta(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(">")]


def raw_loop(
    backbones: list[str],
    fasta: Path,
    output: Path,
    device: str = "cpu",
    precision: torch.dtype | None = None,
    tokens_per_batch: int = RAW_TOKENS_PER_BATCH,
) -> None:
    """fair-esm's extract.py loop over each raw backbone; the mean residue states side by side, in input order.
    `precision`: autocast dtype (e.g. `torch.bfloat16`), or None for float32."""
    sequences = read_fasta(fasta)
    pooled = []
    for folder in backbones:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model_class = T5EncoderModel if "t5" in Path(folder).name else AutoModel
        model = model_class.from_pretrained(folder).to(device).eval()
        spaced = model_class is T5EncoderModel  # ProtT5's tokenizer reads residues separated by spaces
        texts = [" ".join(s) if spaced else s for s in sequences]
        first = 0 if spaced else 1  # ESM puts <cls> before the residues; T5 only appends </s>
        states = np.zeros((len(sequences), model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        batches, batch, longest = [], [], 0
        for index in order:
            tokens = len(sequences[index]) + 2 - (1 if spaced else 0)
            if batch and max(longest, tokens) * (len(batch) + 1) > tokens_per_batch:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(index)
            longest = max(longest, tokens)
        batches.append(batch)
        autocast = torch.autocast(torch.device(device).type, dtype=precision, enabled=precision is not None)
        with torch.inference_mode(), autocast:
            for batch in batches:
                encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True).to(device)
                hidden = model(**encoded).last_hidden_state.float().cpu()
                for row, index in enumerate(batch):
                    length = len(sequences[index])
                    states[index] = hidden[row, first : first + length].mean(0).numpy()
        pooled.append(states)
    np.save(output, np.concatenate(pooled, axis=1))


def hf_metaembed_embed(model: str, fasta: Path, output: Path, threads: int, *options: str) -> None:
    argv = ["embed", str(fasta), "--model", model, "-o", str(output), "--overwrite", "--no-progress"]
    code = cli_main([*argv, "--threads", str(threads), *options])
    if code != 0:
        raise RuntimeError(f"hf-metaembed embed exited with {code}")


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process (all its threads) and by its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def alternated(sides: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of each side, the sides called in turn, `repeats` rounds after a warm-up round. CPU time
    counts the work done, which other jobs on a shared machine inflate much less than they inflate wall time."""
    for function in sides.values():
        function()
    wall = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    for _ in range(repeats):
        for name, function in sides.items():
            wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
            function()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(_cpu_seconds() - cpu_start)
    return wall, cpu


def throughput(name: str, backbones: list[str], model: str, fasta: Path, root: Path, args) -> dict:
    """`hf-metaembed embed` (default options) against the raw loop at each of `args.raw_tokens` budgets."""
    ours_out = root / f"{name}_ours.npy"

    def raw(tokens: int):
        return lambda: raw_loop(backbones, fasta, root / f"{name}_raw_{tokens}.npy", tokens_per_batch=tokens)

    sides = {f"raw loop {tokens}": raw(tokens) for tokens in args.raw_tokens}
    sides["hf-metaembed embed"] = lambda: hf_metaembed_embed(model, fasta, ours_out, args.threads)
    wall, cpu = alternated(sides, args.repeats)
    ours = np.load(ours_out)
    difference = max(
        float(np.abs(np.load(root / f"{name}_raw_{tokens}.npy") - ours).max()) for tokens in args.raw_tokens
    )
    result = {"wall": wall, "cpu": cpu, "max_difference": difference}
    for kind, times in (("wall", wall), ("cpu", cpu)):
        medians = {side: statistics.median(values) for side, values in times.items()}
        runs = "; ".join(f"{side}: " + ", ".join(f"{t:.1f}" for t in values) + " s" for side, values in times.items())
        print(f"[{name}] {kind} {runs}")
        ratios = {side: medians["hf-metaembed embed"] / medians[side] for side in medians if side.startswith("raw")}
        print(
            f"[{name}] {kind} medians: "
            + ", ".join(f"{side} {seconds:.2f} s" for side, seconds in medians.items())
            + "; hf-metaembed embed / "
            + ", ".join(f"{side}: {ratio:.2f}x" for side, ratio in ratios.items())
        )
        result[f"{kind}_medians"], result[f"{kind}_ratios"] = medians, ratios
    print(f"[{name}] target <= 1.10x; largest difference of the embeddings {difference:.1e}")
    return result


# ---------------------------------------------------------------------------------------------- fresh processes


def fresh_embed(model: str, fasta: Path, output: Path, threads: int, *options: str) -> dict:
    command = [sys.executable, "-c", RUNNER, "embed", str(fasta), "--model", model, "-o", str(output)]
    command += ["--overwrite", "--no-progress", "--threads", str(threads), *options]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"embed failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - start}


def budgets(model: str, fasta: Path, root: Path, args) -> dict:
    results = {budget: [] for budget in args.budgets}
    for _ in range(args.budget_rounds):
        for budget in args.budgets:
            run = fresh_embed(model, fasta, root / "budget.npy", args.threads, "--max-tokens", str(budget))
            results[budget].append(run)
    summary = {}
    for budget, runs in results.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        rss = max(run["peak_rss_mb"] for run in runs)
        summary[budget] = {"seconds": seconds, "peak_rss_mb": rss}
        print(f"[--max-tokens {budget:>6}] median {seconds:.1f} s, peak RSS {rss:.0f} MB ({len(runs)} runs)")
    return summary


def peak_memory(model: str, fasta: Path, root: Path, args) -> dict:
    realistic = fresh_embed(model, fasta, root / "memory.npy", args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    import embed_memory  # the 1,000-short-protein setting of RESULTS.md, measured again in this run

    short_model = embed_memory.build_model(root / "short")
    short_fasta = root / "short.fasta"
    embed_memory.write_fasta(short_fasta, 1000)
    short = fresh_embed(short_model, short_fasta, root / "short.npz", args.threads, "--fusion-weights")
    print(
        f"[peak RSS] realistic mix, default options: {realistic['peak_rss_mb']:.0f} MB "
        f"({realistic['peak_rss_mb'] / RESULTS_1000_SHORT_MB:.2f}x the {RESULTS_1000_SHORT_MB:.0f} MB of RESULTS.md, "
        f"{realistic['peak_rss_mb'] / short['peak_rss_mb']:.2f}x the 1,000-short-protein run measured now: "
        f"{short['peak_rss_mb']:.0f} MB); target <= 1.2x"
    )
    return {"realistic": realistic, "short_now": short, "short_results_md_mb": RESULTS_1000_SHORT_MB}


def processes(model: str, fasta: Path, root: Path, args) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    base = ["-m", "hf_metaembed", "embed", str(fasta), "--model", model, "--overwrite", "--no-progress"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    commands = {
        "1 process x 2 threads": [sys.executable, *base, "-o", str(root / "one.npy"), "--threads", "2"],
        "2 processes x 1 thread": [*torchrun, *base, "-o", str(root / "two.npy"), "--threads", "1"],
    }

    def run(command):
        def call():
            completed = subprocess.run(command, env=env, capture_output=True, text=True)
            if completed.returncode != 0:
                raise RuntimeError(f"{command[:6]} failed:\n{completed.stderr[-3000:]}")

        return call

    wall, cpu = alternated({name: run(command) for name, command in commands.items()}, args.repeats)
    one, two = np.load(root / "one.npy"), np.load(root / "two.npy")
    difference = float(np.abs(one - two).max())
    medians = {name: statistics.median(values) for name, values in wall.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    ratio = medians["2 processes x 1 thread"] / medians["1 process x 2 threads"]
    print(
        "[processes] "
        + "; ".join(f"{name}: median {medians[name]:.1f} s wall, {cpu_medians[name]:.1f} s CPU" for name in medians)
        + f": {ratio:.2f}x wall; outputs: {one.shape[0]} rows each, largest difference {difference:.1e}"
    )
    return {"wall": wall, "cpu": cpu, "medians": medians, "ratio": ratio, "max_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="proteins (default: 400)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated rounds after a warm-up (default: 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--raw-tokens",
        type=int,
        nargs="+",
        default=[RAW_TOKENS_PER_BATCH],
        help="the raw loop's budgets (default 4096)",
    )
    parser.add_argument("--budgets", type=int, nargs="*", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--budget-rounds", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["one", "two", "budgets", "memory", "processes"])
    parser.add_argument("--quick", action="store_true", help="100 proteins, 1 round, fewer budgets (a smoke run)")
    parser.add_argument("--output", help="write every measurement to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.count, args.repeats, args.budget_rounds, args.budgets = 100, 1, 1, [2048, 4096]
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
        f"load average {load:.2f}; {args.count} proteins"
    )
    results: dict = {"count": args.count, "threads": args.threads, "load_at_start": load}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        backbones = build_backbones(root)
        one, two = save_model(backbones[:1], root / "one"), save_model(backbones, root / "two")
        fasta = root / "proteins.fasta"
        lengths = protein_lengths(args.count)
        write_fasta(fasta, lengths)
        print(f"lengths: median {statistics.median(lengths):.0f}, {min(lengths)}-{max(lengths)}, total {sum(lengths)}")
        if "one" not in args.skip:
            results["one_backbone"] = throughput("ESM-2-8M", backbones[:1], one, fasta, root, args)
        if "two" not in args.skip:
            results["two_backbones"] = throughput("ESM-2-8M + T5", backbones, two, fasta, root, args)
        if "budgets" not in args.skip:
            results["budgets"] = budgets(one, fasta, root, args)
        if "memory" not in args.skip:
            results["memory"] = peak_memory(one, fasta, root, args)
        if "processes" not in args.skip:
            results["processes"] = processes(one, fasta, root, args)
    results["load_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the end {results['load_at_end']:.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
