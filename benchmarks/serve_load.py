"""Load test of `hf-metaembed serve`: 32 concurrent clients for 30 s against the real server, against `hf-metaembed
embed` on the same inputs in one process.

The setting is `embed_throughput.py`'s realistic mix: proteins with log-normal lengths (median 300, 30-1000 residues),
random residues, and a fused DME model over an ESM-2-8M-shaped backbone and a ProtT5-like T5 encoder (random weights).

- *Server*: `hf-metaembed serve --threads T` (default options otherwise: 2,048-token budget, 5 ms batching wait)
  started in a subprocess; 32 client threads, each on its own keep-alive connection, take the next protein of the
  pool (cycling) and POST it to `/v1/embeddings`, one protein per request, for `--seconds`. Throughput is completed
  requests (sequences) per second; latency percentiles over all requests; errors are non-200 answers or failed
  connections. The first responses are checked against the model's own pooled output.
- *embed*: `hf-metaembed embed served.fasta --threads T` as a fresh process (start, load, check, embed, write) on
  exactly the proteins the server answered (the same multiset); sequences per second of wall time.

Each round runs the load test and then `embed` on what it served; `--rounds` rounds, medians of the ratios. CPU
seconds (the server process's own, from /proc; the `embed` process's) are reported beside wall time: on shared cores
they depend less on what else runs.

Run: python benchmarks/serve_load.py [--seconds 30] [--clients 32] [--proteins 400] [--threads 2] [--rounds 2]
"""

import argparse
import http.client
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "serve"))  # the tests' helper that starts a real server

from embed_throughput import build_backbones, protein_lengths, read_fasta, write_fasta  # noqa: E402
from serving import Server  # noqa: E402

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def save_dme_model(backbones: list[str], folder: Path) -> str:
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones(backbones, fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones(backbones).save_pretrained(folder)
    return str(folder)


def load_test(server: Server, sequences: list[str], clients: int, seconds: float) -> dict:
    """`clients` threads posting one protein per request for `seconds`; latencies, completions and errors."""
    pool = itertools.cycle(range(len(sequences)))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    answers: dict[int, list[float]] = {}
    served: list[int] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while time.monotonic() < deadline:
            with lock:
                index = next(pool)
            body = json.dumps({"input": sequences[index]})
            started = time.monotonic()
            try:
                connection.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
            except OSError as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                continue
            elapsed = time.monotonic() - started
            with lock:
                if response.status != 200:
                    errors.append(f"{response.status}: {payload[:200]!r}")
                    continue
                latencies.append(elapsed)
                served.append(index)
                if len(answers) < 16 and index not in answers:
                    answers[index] = json.loads(payload)["data"][0]["embedding"]
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {"latencies": latencies, "errors": errors, "answers": answers, "served": served, "wall": wall}


def embed_process(model: str, fasta: Path, output: Path, threads: int) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh `hf-metaembed embed` process over `fasta`."""
    command = [sys.executable, "-m", "hf_metaembed", "embed", str(fasta), "--model", model, "-o", str(output)]
    command += ["--threads", str(threads), "--overwrite", "--no-progress"]
    before = os.times()
    started = time.monotonic()
    subprocess.run(command, check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True)
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return time.monotonic() - started, cpu


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(model: str, sequences: list[str], root: Path, args) -> dict:
    """The load test, then `embed` on exactly the proteins the server answered."""
    server = Server(model, "--threads", str(args.threads), "--no-access-log")
    try:
        server.wait_ready()
        cpu_before = process_cpu_seconds(server.process.pid)
        result = load_test(server, sequences, args.clients, args.seconds)
        result["cpu"] = process_cpu_seconds(server.process.pid) - cpu_before
    finally:
        result_exit = server.stop()
    served_fasta = root / "served.fasta"  # the proteins the server answered, for embed to run on
    lines = [f">served_{n}\n{sequences[index]}\n" for n, index in enumerate(result["served"])]
    served_fasta.write_text("".join(lines), encoding="utf-8")
    result["embed_wall"], result["embed_cpu"] = embed_process(model, served_fasta, root / "served.npy", args.threads)
    result["exit_code"] = result_exit
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--proteins", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="load test + embed pairs, run one after the other")
    parser.add_argument("--output", default=str(HERE / "serve_load.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        model = save_dme_model(build_backbones(root), root / "dme")
        fasta = root / "pool.fasta"
        write_fasta(fasta, protein_lengths(args.proteins))
        sequences = read_fasta(fasta)
        load_before = os.getloadavg()[0]
        rounds = [one_round(model, sequences, root, args) for _ in range(args.rounds)]
        result = rounds[-1]
        reference = MetaEmbedModel.from_pretrained(model).eval()
        processor = MetaEmbedProcessor.from_pretrained(model)
        indices = sorted(result["answers"])
        with torch.no_grad():
            expected = reference(**processor([sequences[i] for i in indices])).pooler_output.numpy()
        served = np.array([result["answers"][i] for i in indices])
        largest_difference = float(np.abs(served - expected).max())
    latencies = sorted(latency for one in rounds for latency in one["latencies"])
    per_round = [
        {
            "server_sequences": len(one["served"]),
            "server_wall_s": round(one["wall"], 2),
            "server_cpu_s": round(one["cpu"], 2),
            "embed_wall_s": round(one["embed_wall"], 2),
            "embed_cpu_s": round(one["embed_cpu"], 2),
            "wall_ratio": round((len(one["served"]) / one["wall"]) / (len(one["served"]) / one["embed_wall"]), 3),
            "cpu_ratio": round(one["embed_cpu"] / one["cpu"], 3),
            "residues_served": sum(len(sequences[i]) for i in one["served"]),
            "errors": len(one["errors"]),
            "server_exit_code": one["exit_code"],
        }
        for one in rounds
    ]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{args.threads}",
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": per_round,
        "median_wall_ratio_server_over_embed": statistics.median(r["wall_ratio"] for r in per_round),
        "median_cpu_ratio_server_over_embed": statistics.median(r["cpu_ratio"] for r in per_round),
        "server_sequences_per_s": [round(r["server_sequences"] / r["server_wall_s"], 2) for r in per_round],
        "embed_sequences_per_s": [round(r["server_sequences"] / r["embed_wall_s"], 2) for r in per_round],
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
        "errors": sum(len(one["errors"]) for one in rounds),
        "error_examples": [e for one in rounds for e in one["errors"]][:5],
        "largest_difference_from_model": largest_difference,
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
