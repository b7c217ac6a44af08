"""Start-up of the command line and of `import hf_metaembed`, and the whole-process cost of `hf-metaembed embed`.

Every figure is a fresh process, timed from outside (wall seconds), run `--repeats` times with the sides alternated
(A B C ... A B C ...); min and median are reported.

- *Start-up*: `hf-metaembed --help`, `hf-metaembed --version`, `hf-metaembed embed --help`, an argument error
  (`embed` of a missing file); each child also reports whether it imported torch or transformers.
- *Import*: `import hf_metaembed`, `from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor` (the first use of a
  public name imports the model code and registers the Auto classes) and the baselines
  `import torch; from transformers import AutoModel` and `... AutoModel, BertModel` (a model class: what any
  transformers model costs to import).
- *Embed, whole process*: `hf-metaembed embed proteins.fasta --model M -o out.npy` (the console script: start,
  imports, input check, model loading, embedding, the `.npy`) against a whole-process script of fair-esm's sorted
  4,096-token loop over the raw backbone (`embed_throughput.raw_loop`, run standalone: it imports only torch,
  transformers and numpy), on proteins of log-normal lengths (median 300) with an ESM-2-8M-shaped backbone (random
  weights), `concat` fusion so both write the same numbers; 2 torch threads each.

Run: python benchmarks/cli_startup.py [--quick] [--repeats 5] [--proteins 300] [--json out.json]
"""

import argparse
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# a child that runs one statement and says whether torch or transformers got imported
IMPORT_PROBE = """
import sys
{statement}
print("heavy:", ",".join(name for name in ("torch", "transformers") if name in sys.modules) or "none")
"""
CLI_PROBE = """
import sys
from hf_metaembed.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("heavy:", ",".join(name for name in ("torch", "transformers") if name in sys.modules) or "none", file=sys.stderr)
"""


def _console_script() -> str:
    return shutil.which("hf-metaembed") or str(Path(sys.executable).parent / "hf-metaembed")


def _timed(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 2):
        raise RuntimeError(f"{command} exited with {result.returncode}: {result.stderr[-2000:]}")
    return seconds, result.stdout + result.stderr


def _alternated(sides: dict[str, list[str]], repeats: int, env: dict) -> dict[str, dict]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    heavy: dict[str, str] = {}
    for _ in range(repeats):
        for name, command in sides.items():
            seconds, output = _timed(command, env)
            times[name].append(seconds)
            lines = [line for line in output.splitlines() if line.startswith("heavy:")]
            if lines:
                heavy[name] = lines[-1].split(":", 1)[1].strip()
    return {
        name: {"min_s": min(values), "median_s": statistics.median(values), "runs_s": values, "heavy": heavy.get(name)}
        for name, values in times.items()
    }


def startup(repeats: int, env: dict) -> dict:
    script = _console_script()
    probe = [sys.executable, "-c", CLI_PROBE]
    sides = {
        "hf-metaembed --help": [script, "--help"],
        "hf-metaembed --version": [script, "--version"],
        "hf-metaembed embed --help": [script, "embed", "--help"],
        "hf-metaembed embed missing.fasta (error)": [script, "embed", "missing.fasta", "--model", "m", "-o", "o.npy"],
        "probe: --help": [*probe, "--help"],
        "probe: embed --help": [*probe, "embed", "--help"],
        "probe: embed missing.fasta": [*probe, "embed", "missing.fasta", "--model", "m", "-o", "o.npy"],
        "import hf_metaembed": [sys.executable, "-c", IMPORT_PROBE.format(statement="import hf_metaembed")],
        "from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor": [
            sys.executable,
            "-c",
            IMPORT_PROBE.format(statement="from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor"),
        ],
        "import torch; from transformers import AutoModel": [
            sys.executable,
            "-c",
            IMPORT_PROBE.format(statement="import torch; from transformers import AutoModel"),
        ],
        # the fair baseline of a public name: any transformers model class imports its modeling machinery
        "import torch; from transformers import AutoModel, BertModel": [
            sys.executable,
            "-c",
            IMPORT_PROBE.format(statement="import torch; from transformers import AutoModel, BertModel"),
        ],
    }
    return _alternated(sides, repeats, env)


def _raw_script() -> str:
    """`embed_throughput.raw_loop` as a standalone script (torch, transformers, numpy only)."""
    import embed_throughput

    return "\n".join(
        [
            "import sys",
            "from pathlib import Path",
            "import numpy as np",
            "import torch",
            "from transformers import AutoModel, AutoTokenizer, T5EncoderModel",
            f"RAW_TOKENS_PER_BATCH = {embed_throughput.RAW_TOKENS_PER_BATCH}",
            inspect.getsource(embed_throughput.read_fasta),
            inspect.getsource(embed_throughput.raw_loop),
            "torch.set_num_threads(2)",
            "raw_loop([sys.argv[1]], Path(sys.argv[2]), Path(sys.argv[3]))",
        ]
    )


def embed_ratio(proteins: int, repeats: int, env: dict, root: Path) -> dict:
    import embed_throughput

    backbones = embed_throughput.build_backbones(root)
    model = embed_throughput.save_model(backbones[:1], root / "model")
    fasta = root / "proteins.fasta"
    embed_throughput.write_fasta(fasta, embed_throughput.protein_lengths(proteins))
    raw_path = root / "raw_loop.py"
    raw_path.write_text(_raw_script(), encoding="utf-8")
    embed = [_console_script(), "embed", str(fasta), "--model", model, "-o", str(root / "embed.npy")]
    embed += ["--overwrite", "--no-progress", "--threads", "2"]
    sides = {
        "raw backbone script (whole process)": [
            sys.executable,
            str(raw_path),
            backbones[0],
            str(fasta),
            str(root / "raw.npy"),
        ],
        "hf-metaembed embed (whole process)": embed,
    }
    _alternated(sides, 1, env)  # warm-up: file caches, compiled kernels
    timed = _alternated(sides, repeats, env)
    difference = float(np.abs(np.load(root / "embed.npy") - np.load(root / "raw.npy")).max())
    raw, ours = (timed[name]["median_s"] for name in sides)
    return {"proteins": proteins, "sides": timed, "ratio_median": ours / raw, "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--proteins", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="2 repeats, 60 proteins")
    parser.add_argument("--json", type=Path, default=HERE / "cli_startup.json")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.proteins = 2, 60
    env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    load_before = os.getloadavg()[0]
    results = {"startup": startup(args.repeats, env)}
    with tempfile.TemporaryDirectory() as folder:
        results["embed"] = embed_ratio(args.proteins, args.repeats, env, Path(folder))
    results.update(
        machine=f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        repeats=args.repeats,
        date=time.strftime("%Y-%m-%d"),
    )
    for name, row in results["startup"].items():
        print(f"{name:60s} min {row['min_s']:.2f} s  median {row['median_s']:.2f} s  imports: {row['heavy']}")
    for name, row in results["embed"]["sides"].items():
        print(f"{name:60s} min {row['min_s']:.2f} s  median {row['median_s']:.2f} s")
    print(f"embed / raw (medians): {results['embed']['ratio_median']:.2f}x; max |difference| "
          f"{results['embed']['max_abs_difference']:.1e}; load average {results['load_average']}")  # fmt: skip
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
