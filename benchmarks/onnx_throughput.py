"""CPU throughput of the exported ONNX graph in onnxruntime (float32 and int8) against the torch model it came from.

The setting is `embed_throughput.py`'s: proteins with log-normal lengths (median 300, 30-1000 residues), random
residues, and a fused DME model over an ESM-2-8M-shaped backbone and a ProtT5-like T5 encoder (random weights),
exported with `hf_metaembed.export.export_onnx(..., quantize="int8")`. Every side runs the same token-budget batches
(the library's planner, 2,048 padded tokens per backbone pass), padded by the processor; torch with `T` threads,
onnxruntime with `T` intra-op threads. The sides run alternately (torch, onnx, int8, torch, ...), a warm-up batch
first; medians over the rounds. Outputs are compared with torch's.

Run: python benchmarks/onnx_throughput.py [--proteins 100] [--repeats 3] [--threads 2]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from embed_throughput import build_backbones, protein_lengths, read_fasta, write_fasta  # noqa: E402
from serve_load import save_dme_model  # noqa: E402

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor  # noqa: E402
from hf_metaembed.batching import feature_rows, plan_batches, sample_token_lengths  # noqa: E402
from hf_metaembed.export import export_onnx  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def batches(processor: MetaEmbedProcessor, sequences: list[str], max_tokens: int) -> list[tuple[list[int], dict]]:
    """The token-budget batches of `sequences`: (positions, padded torch batch)."""
    rows = feature_rows(processor(sequences, return_tensors=None))
    counts, lengths = zip(*(sample_token_lengths(row, i) for i, row in enumerate(rows)))
    plan = plan_batches(lengths, max_tokens, None, counts)
    return [(batch, dict(processor.pad([rows[i] for i in batch]))) for batch in plan]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proteins", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--output", default=str(HERE / "onnx_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder = save_dme_model(build_backbones(root), root / "dme")
        started = time.monotonic()
        report = export_onnx(folder, root / "onnx", quantize="int8")
        export_seconds = time.monotonic() - started
        model = MetaEmbedModel.from_pretrained(folder).eval()
        processor = MetaEmbedProcessor.from_pretrained(folder)
        write_fasta(root / "pool.fasta", protein_lengths(args.proteins))
        sequences = read_fasta(root / "pool.fasta")
        planned = batches(processor, sequences, args.max_tokens)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        sessions = {
            name: onnxruntime.InferenceSession(str(root / "onnx" / file), options, providers=["CPUExecutionProvider"])
            for name, file in (("onnx", "model.onnx"), ("int8", "model.int8.onnx"))
        }
        inputs = report["inputs"]

        def run_torch(work) -> np.ndarray:
            out = np.zeros((len(sequences), model.pairing.output_dim), dtype=np.float32)
            with torch.inference_mode():
                for positions, batch in work:
                    out[positions] = model(**batch).pooler_output.numpy()
            return out

        def runner(session):
            def run(work) -> np.ndarray:
                out = np.zeros((len(sequences), model.pairing.output_dim), dtype=np.float32)
                for positions, batch in work:
                    out[positions] = session.run(["embedding"], {n: batch[n].numpy() for n in inputs})[0]
                return out

            return run

        sides = {"torch": run_torch, "onnx": runner(sessions["onnx"]), "int8": runner(sessions["int8"])}
        for run in sides.values():
            run(planned[-1:])  # warm-up: the batch of shortest proteins
        times: dict[str, list[float]] = {name: [] for name in sides}
        outputs = {}
        for _ in range(args.repeats):
            for name, run in sides.items():
                started = time.monotonic()
                outputs[name] = run(planned)
                times[name].append(time.monotonic() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "load_average_end": round(os.getloadavg()[0], 2),
        "proteins": args.proteins,
        "residues": sum(map(len, sequences)),
        "batches": len(planned),
        "export_seconds": round(export_seconds, 1),
        "export_check_max_abs_diff": report["max_abs_diff"],
        "seconds": {name: [round(t, 2) for t in values] for name, values in times.items()},
        "sequences_per_s": {name: round(args.proteins / value, 2) for name, value in medians.items()},
        "speedup_over_torch": {name: round(medians["torch"] / value, 3) for name, value in medians.items()},
        "max_abs_diff_vs_torch": {
            name: float(np.abs(outputs[name] - outputs["torch"]).max()) for name in ("onnx", "int8")
        },
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
