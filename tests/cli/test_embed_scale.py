"""`hf-metaembed embed` at scale: token-budget batches, several processes (`torchrun`, `accelerate launch`) giving the
single-process output, a rank killed with SIGKILL and the run resumed (every id exactly once), pair models, and the
batching and precision options."""

import csv
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from launching import ACCELERATE, LAUNCH_TIMEOUT, LINUX_PROC, TORCHRUN, finish, launch, rank_processes

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cli import main
from hf_metaembed.cli.errors import EXIT_OK, EXIT_USAGE
from hf_metaembed.io.embedding_parts import PARTS_FOLDER
from hf_metaembed.io.embeddings import EMBEDDING_INDEX_NAME, load_embeddings

RESIDUES = list("ACDEFGHIKLMNPQRSTVWY")


def _proteins(count: int, seed: int, low: int = 3, high: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(RESIDUES, int(rng.integers(low, high)))) for _ in range(count)]


def _fasta(path: Path, sequences: list[str]) -> Path:
    path.write_text("".join(f">p{i} protein {i}\n{s}\n" for i, s in enumerate(sequences)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_backbone_model(tiny_esm, tiny_ankh, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("fused")
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones([tiny_esm, tiny_ankh], fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_esm, tiny_ankh]).save_pretrained(folder)
    return str(folder)


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("launcher", [TORCHRUN, ACCELERATE], ids=["torchrun", "accelerate"])
def test_two_processes_give_the_single_process_output(launcher, two_backbone_model, tmp_path, capsys):
    sequences = _proteins(45, seed=1)
    fasta = _fasta(tmp_path / "in.fasta", sequences)
    options = ["--model", two_backbone_model, "--fusion-weights", "--shard-size", 10, "--max-tokens", 150]
    options += ["--no-progress", "--threads", 1]
    code, _, err = _run(capsys, "embed", fasta, "-o", tmp_path / "one.npz", *options)
    assert code == EXIT_OK, err

    code, out, err = finish(launch(launcher, ["embed", fasta, "-o", tmp_path / "two.npz", *options]))
    assert code == 0, err[-3000:]
    assert out.count("wrote 45 embeddings") == 1 and "(2 processes)" in out  # the main process reports, once
    one, two = load_embeddings(tmp_path / "one.npz"), load_embeddings(tmp_path / "two.npz")
    assert two["ids"].tolist() == [f"p{i}" for i in range(45)]
    np.testing.assert_allclose(two["embeddings"], one["embeddings"], atol=1e-5)
    np.testing.assert_array_equal(two["num_units"], [len(s) for s in sequences])
    np.testing.assert_allclose(two["fusion_weights"], one["fusion_weights"], atol=1e-5)
    assert not (tmp_path / "two.npz.partial").exists()


def _records_in_shards(folder: Path) -> int:
    index = folder / EMBEDDING_INDEX_NAME
    return json.loads(index.read_text())["records"] if index.exists() else 0


@pytest.mark.skipif(not LINUX_PROC, reason="finds the ranks through Linux /proc")
def test_a_killed_rank_is_resumed_with_every_id_exactly_once(two_backbone_model, tmp_path, capsys):
    sequences = _proteins(600, seed=2, low=20, high=60)
    fasta = _fasta(tmp_path / "in.fasta", sequences)
    output = tmp_path / "out"
    partial = tmp_path / "out.partial"  # where the run works until every record is done
    options = ["--model", two_backbone_model, "--shard-size", 20, "--batch-size", 4, "--no-progress"]
    process = launch(TORCHRUN, ["embed", fasta, "-o", output, *options])
    killed = None
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if partial.is_dir() and _records_in_shards(partial) >= 40:
                killed = rank_processes(process.pid).get(1)
                break
            time.sleep(0.05)
        assert killed is not None, f"the run ended before a rank could be killed: {process.stderr.read()[-2000:]}"
        os.kill(killed, signal.SIGKILL)
    finally:
        code, _, err = finish(process)
    assert code != 0  # the launcher stops the other rank when one dies
    index = json.loads((partial / EMBEDDING_INDEX_NAME).read_text())
    assert not index["complete"] and index["records"] < 600 and not output.exists()

    code, out, err = finish(launch(TORCHRUN, ["embed", fasta, "-o", output, *options]))
    assert code == 0, err[-3000:]
    assert "wrote 600 embeddings" in out and "(2 processes)" in out
    result = load_embeddings(output)
    assert result["ids"].tolist() == [f"p{i}" for i in range(600)]  # each id exactly once, in input order
    assert not (output / PARTS_FOLDER).exists() and not partial.exists()

    code, _, err = _run(capsys, "embed", fasta, "-o", tmp_path / "single.npy", *options)
    assert code == EXIT_OK, err
    np.testing.assert_allclose(result["embeddings"], np.load(tmp_path / "single.npy"), atol=1e-5)


# ---------------------------------------------------------------------------------------------- pair models


def _complex_rows(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)

    def side() -> str:
        return ",".join(_proteins(int(rng.integers(1, 4)), int(rng.integers(1_000_000)), 4, 18))

    return [{"name": f"c{i}", "Ligand Sequences": side(), "Receptor Sequences": side()} for i in range(count)]


@pytest.mark.parametrize("architecture", ["hp", "pad"])
def test_pair_models_embed_complexes_split_on_the_chain_separator(architecture, tiny_esm, tmp_path, capsys):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    model = MetaEmbedModel.from_backbones([tiny_esm], fusion="dme", architecture=architecture).eval()
    model.save_pretrained(folder)
    processor = MetaEmbedProcessor.from_backbones([tiny_esm], architecture=architecture)
    processor.save_pretrained(folder)
    rows = _complex_rows(13, seed=3)
    table = tmp_path / "complexes.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "Receptor Sequences": row["Receptor Sequences"].replace(",", ";")} for row in rows)
    columns = ["--ligand-column", "Ligand Sequences", "--receptor-column", "Receptor Sequences"]
    common = ["embed", table, "--model", folder, "-o", tmp_path / "e.npz", *columns, "--id-column", "name"]
    common += ["--fusion-weights", "--max-tokens", 90, "--batch-size", 3]
    code, _, err = _run(capsys, *common, "--chain-separator", ";")
    assert code == EXIT_USAGE  # the ligand cells use ',' to join chains, so ';' leaves a ligand chain with a comma
    assert "record" in err and "ligand" in err

    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, out, err = _run(capsys, *common)
    assert code == EXIT_OK, err
    result = load_embeddings(tmp_path / "e.npz")
    assert result["ids"].tolist() == [f"c{i}" for i in range(13)]
    ligands = [row["Ligand Sequences"].split(",") for row in rows]
    receptors = [row["Receptor Sequences"].split(",") for row in rows]
    with torch.inference_mode():
        for i in range(13):
            expected = model(**processor(ligand=[ligands[i]], receptor=[receptors[i]]))
            np.testing.assert_allclose(result["embeddings"][i], expected.pooler_output[0].numpy(), atol=1e-5)
    # fusion weights: each complex's segments one after another (ligand side first), padding removed
    units = [sum(map(len, ligands[i])) + sum(map(len, receptors[i])) for i in range(13)]
    assert result["num_units"].tolist() == units
    np.testing.assert_allclose(result["fusion_weights"].sum(axis=1), 1.0, atol=1e-5)


def test_pair_and_single_options_must_match_the_model(two_backbone_model, tmp_path, capsys):
    fasta = _fasta(tmp_path / "in.fasta", _proteins(3, seed=4))
    columns = ["--ligand-column", "a", "--receptor-column", "b"]
    code, _, err = _run(capsys, "embed", fasta, "--model", two_backbone_model, "-o", tmp_path / "o.npz", *columns)
    assert code == EXIT_USAGE and "need a pair model" in err and "--column" in err


# ---------------------------------------------------------------------------------------------- options


def test_token_budget_per_backbone_and_precision(two_backbone_model, tmp_path, capsys):
    sequences = _proteins(30, seed=5)
    fasta = _fasta(tmp_path / "in.fasta", sequences)
    common = ["embed", fasta, "--model", two_backbone_model, "--no-progress"]
    code, _, err = _run(capsys, *common, "-o", tmp_path / "a.npy", "--max-tokens", "200,150")
    assert code == EXIT_OK, err
    code, _, err = _run(capsys, *common, "-o", tmp_path / "b.npy", "--max-tokens", 100000, "--batch-size", 1)
    assert code == EXIT_OK, err
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-5)

    code, _, err = _run(capsys, *common, "-o", tmp_path / "c.npy", "--autocast", "bf16")
    assert code == EXIT_OK, err
    low = np.load(tmp_path / "c.npy")
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, np.load(tmp_path / "a.npy"), atol=0.1)

    code, _, err = _run(capsys, *common, "-o", tmp_path / "d.npy", "--max-tokens", "1,2,3")
    assert code == EXIT_USAGE and "--max-tokens lists 3 budgets but the model has 2 backbones" in err, err
    for bad in ("0", "many", "10,-1"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in (*common, "-o", tmp_path / "d.npy", "--max-tokens", bad)])
        assert exit_info.value.code == EXIT_USAGE
        assert "is not a token budget: give one positive number, or one per backbone" in capsys.readouterr().err
