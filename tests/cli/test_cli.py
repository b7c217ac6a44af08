"""The `hf-metaembed` CLI: embed on every input format and output kind, resuming, train/evaluate, cache, help, exit
codes and one-line errors."""

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cli import main
from hf_metaembed.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from hf_metaembed.io.embedding_parts import EmbeddingParts
from hf_metaembed.io.embeddings import EMBEDDING_INDEX_NAME, load_embeddings
from hf_metaembed.io.records import InputError

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "blue", "sky", "is", "big"]
PROTEINS = ["MKTAYIAKQR", "GSHMLEDPVA", "MVLSPADKTN", "ACDEFGHIKLMNPQRSTVWY", "MKKLLPT", "QQQRRS", "WYWY"]


def _texts(count: int, seed: int = 0) -> list[str]:
    generator = np.random.default_rng(seed)
    return [" ".join(generator.choice(WORDS, size=int(generator.integers(1, 9)))) for _ in range(count)]


@pytest.fixture(scope="module")
def text_model(tiny_bert, tiny_roberta, tmp_path_factory) -> str:
    """A saved DME model over tiny BERT and RoBERTa (word units) with its processor."""
    folder = tmp_path_factory.mktemp("text_model")
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones([tiny_bert, tiny_roberta], fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_bert, tiny_roberta]).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def protein_model(tiny_esm, tiny_ankh, tmp_path_factory) -> str:
    """A saved DME model over tiny ESM-2 and Ankh (residue units) with its processor."""
    folder = tmp_path_factory.mktemp("protein_model")
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones([tiny_esm, tiny_ankh], fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_esm, tiny_ankh]).save_pretrained(folder)
    return str(folder)


def _reference(folder: str, sequences: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pooled embeddings and per-record fusion weights computed directly with the model, one record at a time."""
    model = MetaEmbedModel.from_pretrained(folder).eval()
    processor = MetaEmbedProcessor.from_pretrained(folder)
    pooled, weights = [], []
    with torch.inference_mode():
        for sequence in sequences:
            outputs = model(**processor([sequence]))
            pooled.append(outputs.pooler_output[0].numpy())
            weights.append(outputs.fusion_weights[0, : int(outputs.unit_mask[0].sum())].numpy())
    return np.stack(pooled), weights


def _split_weights(result: dict) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(result["num_units"])])
    return [result["fusion_weights"][start:end] for start, end in zip(offsets[:-1], offsets[1:])]


def _write_inputs(folder: Path, texts: list[str]) -> dict[str, Path]:
    """The same records as CSV, JSONL (with blank lines) and plain text."""
    paths = {"csv": folder / "in.csv", "jsonl": folder / "in.jsonl", "text": folder / "in.txt"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "text", "label"])
        writer.writerows([f"r{i}", text, i % 2] for i, text in enumerate(texts))
    with open(paths["jsonl"], "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"name": f"r{i}", "text": text}) + "\n" + ("\n" if i % 3 == 0 else ""))
    paths["text"].write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    return paths


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what earlier steps of the test printed
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("hf-metaembed ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------- help and exit codes


@pytest.mark.parametrize("command", [[], ["embed"], ["train"], ["evaluate"], ["cache"], ["demo"]])
def test_every_subcommand_has_help_with_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-metaembed")
    assert "exit codes:" in out and "130" in out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "x.txt"])  # --model and --output missing
    assert exit_info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == EXIT_USAGE


# ---------------------------------------------------------------------------------------------- embed


@pytest.mark.parametrize("input_format", ["csv", "jsonl", "text"])
def test_embed_text_formats_equal_model_outputs(input_format, text_model, tmp_path, capsys):
    texts = _texts(11)
    paths = _write_inputs(tmp_path, texts)
    output = tmp_path / "out"
    options = ["--column", "text", "--id-column", "name"] if input_format != "text" else []
    code, out, err = _run(
        capsys,
        "embed",
        paths[input_format],
        "--model",
        text_model,
        "-o",
        output,
        "--batch-size",
        3,
        "--shard-size",
        4,
        "--fusion-weights",
        *options,
    )
    assert code == EXIT_OK, err
    assert "wrote 11 embeddings" in out
    result = load_embeddings(output)
    expected_pooled, expected_weights = _reference(text_model, texts)
    expected_ids = [f"r{i}" for i in range(11)] if input_format != "text" else [str(i) for i in range(1, 12)]
    assert result["ids"].tolist() == expected_ids
    np.testing.assert_allclose(result["embeddings"], expected_pooled, atol=1e-5)
    for got, expected in zip(_split_weights(result), expected_weights):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(sorted(output.glob("shard-*.safetensors"))) == 3  # 4 + 4 + 3 records


def test_embed_fasta_proteins_to_npz_and_npy(protein_model, tmp_path, capsys):
    fasta = tmp_path / "proteins.fasta"
    # multi-line records, a description after the id, a blank line and lowercase residues
    lines = []
    for i, protein in enumerate(PROTEINS):
        lines += [f">prot{i} some description", protein[:4].lower(), protein[4:], ""]
    fasta.write_text("\n".join(lines), encoding="utf-8")
    expected_pooled, expected_weights = _reference(protein_model, PROTEINS)

    code, _, err = _run(capsys, "embed", fasta, "--model", protein_model, "-o", tmp_path / "e.npz", "--fusion-weights")
    assert code == EXIT_OK, err
    result = load_embeddings(tmp_path / "e.npz")
    assert result["ids"].tolist() == [f"prot{i}" for i in range(len(PROTEINS))]
    np.testing.assert_allclose(result["embeddings"], expected_pooled, atol=1e-5)
    assert result["num_units"].tolist() == [len(p) for p in PROTEINS]
    for got, expected in zip(_split_weights(result), expected_weights):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not (tmp_path / "e.npz.parts").exists()

    gz = tmp_path / "proteins.fa.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write(fasta.read_text(encoding="utf-8"))
    code, _, err = _run(capsys, "embed", gz, "--model", protein_model, "-o", tmp_path / "e.npy", "--batch-size", 2)
    assert code == EXIT_OK, err
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected_pooled, atol=1e-5)


def _ids_of(folder: Path) -> list[str]:
    return load_embeddings(folder)["ids"].tolist()


def test_embed_resumes_after_max_batches_without_loss_or_duplicates(text_model, tmp_path, capsys):
    texts = _texts(23, seed=1)
    source = _write_inputs(tmp_path, texts)["text"]
    output = tmp_path / "out"
    common = ["embed", source, "--model", text_model, "-o", output, "--batch-size", 4, "--shard-size", 6]
    code, _, err = _run(capsys, *common, "--max-batches", 2)
    assert code == EXIT_OK
    assert "rerun the same command to continue" in err
    partial = tmp_path / "out.partial"  # work in progress says so in its name; `out` appears only when complete
    assert not output.exists()
    index = json.loads((partial / EMBEDDING_INDEX_NAME).read_text())
    # blocks of 6 records, each run as batches of 4 and 2: two batches complete the first shard
    assert index["records"] == 6 and not index["complete"]
    code, _, err = _run(capsys, *common, "--max-batches", 3)
    assert code == EXIT_OK
    assert json.loads((partial / EMBEDDING_INDEX_NAME).read_text())["records"] == 12
    parts = EmbeddingParts(partial)
    parts.refresh()
    assert len(parts.done()) == 4  # the third batch's records wait in a part for the rest of their block
    code, out, err = _run(capsys, *common)
    assert code == EXIT_OK, err
    assert _ids_of(output) == [str(i) for i in range(1, 24)]
    assert not partial.exists()
    np.testing.assert_allclose(load_embeddings(output)["embeddings"], _reference(text_model, texts)[0], atol=1e-5)

    stamp = (output / EMBEDDING_INDEX_NAME).stat().st_mtime_ns
    code, _, err = _run(capsys, *common)  # nothing left to do: succeeds, says so, leaves the output as it is
    assert code == EXIT_OK
    _assert_one_line_error(err, "is complete already (23 embeddings", "nothing to do", "--overwrite")
    assert (output / EMBEDDING_INDEX_NAME).stat().st_mtime_ns == stamp
    code, _, err = _run(capsys, *common, "--fusion-weights")  # a finished output of other settings is not reused
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "made with other settings", "fusion_weights", "--overwrite")
    code, _, err = _run(capsys, *common, "--overwrite")
    assert code == EXIT_OK and _ids_of(output) == [str(i) for i in range(1, 24)]
    assert (output / EMBEDDING_INDEX_NAME).stat().st_mtime_ns != stamp and not partial.exists()


def test_embed_resumes_after_a_failure(text_model, tmp_path, capsys, monkeypatch):
    texts = _texts(30, seed=2)
    source = _write_inputs(tmp_path, texts)["csv"]
    output = tmp_path / "out.npz"
    common = ["embed", source, "--column", "text", "--model", text_model, "-o", output, "--batch-size", 4]
    common += ["--shard-size", 5, "--id-column", "name"]
    original_forward = MetaEmbedModel.forward
    calls = {"count": 0}

    def failing_forward(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 4:
            raise RuntimeError("simulated out-of-memory")
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(MetaEmbedModel, "forward", failing_forward)
    code, _, err = _run(capsys, *common)
    assert code == EXIT_FAILURE
    _assert_one_line_error(err, "RuntimeError", "simulated out-of-memory")
    index = json.loads((tmp_path / "out.npz.partial" / EMBEDDING_INDEX_NAME).read_text())
    # the three finished batches were kept: blocks of 5 run as batches of 4 and 1, so one whole shard and a part
    assert index["records"] == 5
    parts = EmbeddingParts(tmp_path / "out.npz.partial")
    parts.refresh()
    assert len(parts.done()) == 4 and parts.done() < set(range(5, 10))  # the longest 4 of the second block
    assert not output.exists()

    monkeypatch.setattr(MetaEmbedModel, "forward", original_forward)
    batch_sizes = []

    def counting_forward(self, *args, **kwargs):
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(MetaEmbedModel, "forward", counting_forward)
    code, _, err = _run(capsys, *common)
    assert code == EXIT_OK, err
    assert sum(batch_sizes) == 30 - 9  # the 9 kept records are not computed again
    result = load_embeddings(output)
    assert result["ids"].tolist() == [f"r{i}" for i in range(30)]
    np.testing.assert_allclose(result["embeddings"], _reference(text_model, texts)[0], atol=1e-5)


def test_embed_refuses_to_resume_with_other_settings(text_model, tmp_path, capsys):
    source = _write_inputs(tmp_path, _texts(10))["text"]
    output = tmp_path / "out"
    common = ["embed", source, "--model", text_model, "-o", output, "--batch-size", 2]
    assert _run(capsys, *common, "--max-batches", 1)[0] == EXIT_OK
    code, _, err = _run(capsys, *common, "--fusion-weights")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "different settings", "fusion_weights", "--overwrite")
    source.write_text(source.read_text() + "one more line\n")
    code, _, err = _run(capsys, *common)
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "different settings", "input_size")


def test_killed_embed_process_resumes_exactly_once(text_model, tmp_path, capsys):
    """A SIGKILL at an arbitrary moment leaves only whole shards behind; the rerun completes every record once."""
    texts = _texts(400, seed=3)
    source = _write_inputs(tmp_path, texts)["text"]
    output = tmp_path / "out"
    common = ["embed", source, "--model", text_model, "-o", output, "--shard-size", 3, "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_metaembed.cli", *map(str, common), "--batch-size", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    index_path = tmp_path / "out.partial" / EMBEDDING_INDEX_NAME
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if index_path.exists() and json.loads(index_path.read_text())["records"] >= 30:
                break
            time.sleep(0.05)
        assert process.poll() is None, f"the writer ended before it could be killed: {process.stderr.read()}"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    partial = json.loads(index_path.read_text())
    assert 30 <= partial["records"] < 400 and not partial["complete"]
    assert not output.exists()  # an interrupted run's work carries .partial in its name
    assert _ids_of(index_path.parent) == [str(i) for i in range(1, partial["records"] + 1)]  # every shard loads

    code, _, err = _run(capsys, *common, "--batch-size", 64)
    assert code == EXIT_OK, err
    assert _ids_of(output) == [str(i) for i in range(1, 401)]
    assert not list(output.glob(".*.tmp")) and not index_path.parent.exists()


def test_cache_subcommand_builds_resumes_and_reports_errors(protein_model, tmp_path, capsys):
    from hf_metaembed.cache import CachedFeatureDataset, load_feature_cache

    table = tmp_path / "proteins.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence"])
        writer.writerows([p] for p in PROTEINS + PROTEINS[:3])  # three sequences come twice
    cache_dir = tmp_path / "cache"
    code, out, err = _run(capsys, "cache", table, cache_dir, "--model", protein_model, "--sequence-column", "sequence")
    assert code == EXIT_OK, err
    assert f"{len(PROTEINS)} unique of {len(PROTEINS) + 3} read" in out
    model = MetaEmbedModel.from_pretrained(protein_model)
    cache = load_feature_cache(cache_dir, model, MetaEmbedProcessor.from_pretrained(protein_model))
    assert len(cache) == len(PROTEINS)
    assert len(CachedFeatureDataset(cache, sequences=PROTEINS)) == len(PROTEINS)

    code, out, err = _run(capsys, "cache", table, cache_dir, "--model", protein_model, "--sequence-column", "sequence")
    assert code == EXIT_OK and "cached 0 new segments" in out  # a rerun finds everything done

    code, _, err = _run(capsys, "cache", table, tmp_path / "other", "--model", protein_model, "--sequence-column", "x")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "x")
    code, _, err = _run(capsys, "cache", tmp_path / "missing.csv", tmp_path / "c2", "--model", protein_model)
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "missing.csv")


def test_console_script_runs_and_reports_errors(text_model, tmp_path):
    script = shutil.which("hf-metaembed") or str(Path(sys.executable).parent / "hf-metaembed")
    source = _write_inputs(tmp_path, _texts(5))["text"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [script, "embed", str(source), "--model", text_model, "-o", str(tmp_path / "e.npy")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "e.npy").shape[0] == 5
    failed = subprocess.run(
        [script, "embed", str(tmp_path / "missing.txt"), "--model", text_model, "-o", str(tmp_path / "x.npy")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == EXIT_USAGE
    _assert_one_line_error(failed.stderr, "missing.txt", "does not exist")


# ---------------------------------------------------------------------------------------------- errors


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    return _write_inputs(tmp_path, _texts(6))


def test_missing_input_file(text_model, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", tmp_path / "nope.fasta", "--model", text_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "nope.fasta", "does not exist")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_input_file(text_model, inputs, tmp_path, capsys):
    inputs["text"].chmod(0)
    try:
        code, _, err = _run(capsys, "embed", inputs["text"], "--model", text_model, "-o", tmp_path / "o")
    finally:
        inputs["text"].chmod(0o644)
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "not readable")


def test_folder_given_as_input(text_model, tmp_path, capsys):
    folder = tmp_path / "seqs.txt"
    folder.mkdir()
    code, _, err = _run(capsys, "embed", folder, "--model", text_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "is a folder")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_wrong_column_lists_the_available_ones(kind, text_model, inputs, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", inputs[kind], "--column", "seq", "--model", text_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "no column 'seq'", "'text'", "'name'")


def test_unsupported_input_format(text_model, tmp_path, capsys):
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"PK\x03\x04")
    code, _, err = _run(capsys, "embed", path, "--model", text_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "unsupported input format", "fasta", "--input-format")


def test_unsupported_output_format(text_model, inputs, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", inputs["text"], "--model", text_model, "-o", tmp_path / "o.parquet")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "unsupported output format")


def test_output_not_writable(text_model, inputs, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", inputs["text"], "--model", text_model, "-o", tmp_path / "no" / "e.npy")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "does not exist")
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = _run(capsys, "embed", inputs["text"], "--model", text_model, "-o", locked / "e.npy")
        assert code == EXIT_USAGE
        _assert_one_line_error(err, "not writable")


def test_existing_output_file_is_left_as_it_is_unless_overwrite(text_model, inputs, tmp_path, capsys):
    (tmp_path / "e.npy").write_bytes(b"old")
    code, _, err = _run(capsys, "embed", inputs["text"], "--model", text_model, "-o", tmp_path / "e.npy")
    assert code == EXIT_OK
    _assert_one_line_error(err, "e.npy exists and no run is in progress", "left as it is", "--overwrite")
    assert (tmp_path / "e.npy").read_bytes() == b"old"
    code, out, err = _run(
        capsys, "embed", inputs["text"], "--model", text_model, "-o", tmp_path / "e.npy", "--overwrite"
    )
    assert code == EXIT_OK, err
    assert np.load(tmp_path / "e.npy").shape[0] == len(inputs["text"].read_text().splitlines())
    assert not (tmp_path / "e.npy.partial").exists()


def test_invalid_records_are_named_before_any_work(protein_model, text_model, tmp_path, capsys):
    fasta = tmp_path / "bad.fasta"
    fasta.write_text(">ok\nMKTAYIAK\n>bad\nMKT1JJ\n", encoding="utf-8")
    code, _, err = _run(capsys, "embed", fasta, "--model", protein_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "bad.fasta line 3 (record 2, id 'bad')", "amino-acid", "--unknown-residues x")
    assert not (tmp_path / "o").exists()
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"sequence": "a b"}\n{"sequence": "  "}\n', encoding="utf-8")
    code, _, err = _run(capsys, "embed", jsonl, "--model", text_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "bad.jsonl line 2 (record 2)", "empty")
    jsonl.write_text('{"sequence": "a b"}\n{"sequence": "c"\n', encoding="utf-8")
    code, _, err = _run(capsys, "embed", jsonl, "--model", text_model, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "line 2", "not valid JSON")


def test_model_folder_errors(tiny_bert, inputs, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", inputs["text"], "--model", tmp_path / "absent", "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "does not exist")
    code, _, err = _run(capsys, "embed", inputs["text"], "--model", tiny_bert, "-o", tmp_path / "o")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "'bert' model, not a MetaEmbed model")


def test_npy_cannot_hold_fusion_weights(text_model, inputs, tmp_path, capsys):
    code, _, err = _run(
        capsys, "embed", inputs["text"], "--model", text_model, "-o", tmp_path / "e.npy", "--fusion-weights"
    )
    assert code == EXIT_USAGE
    _assert_one_line_error(err, ".npz")


def test_missing_optional_dependency_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)  # import gensim now raises ImportError
    monkeypatch.setitem(sys.modules, "gensim.test", None)
    monkeypatch.setitem(sys.modules, "gensim.test.utils", None)
    code, _, err = _run(capsys, "demo", "--output-dir", tmp_path / "demo")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "'gensim'", "pip install 'hf_metaembed[demo]'")


def test_debug_shows_the_traceback(text_model, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        main(["embed", str(tmp_path / "nope.txt"), "--model", text_model, "-o", str(tmp_path / "o"), "--debug"])


# ---------------------------------------------------------------------------------------------- train / evaluate


def test_train_then_evaluate_classification(tiny_bert, tiny_roberta, tmp_path, capsys):
    texts = _texts(24, seed=4)
    paths = _write_inputs(tmp_path, texts)
    trained = tmp_path / "trained"
    code, out, err = _run(
        capsys,
        "train",
        paths["csv"],
        "--backbones",
        f"{tiny_bert},{tiny_roberta}",
        "--column",
        "text",
        "--output-dir",
        trained,
        "--epochs",
        1,
        "--batch-size",
        8,
    )
    assert code == EXIT_OK, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["task"] == "classification" and metrics["train_records"] == 24
    assert np.isfinite(metrics["train_loss"])
    assert (trained / "config.json").exists() and (trained / "processor_config.json").exists()

    code, out, err = _run(capsys, "evaluate", paths["csv"], "--model", trained, "--column", "text")
    assert code == EXIT_OK, err
    metrics = json.loads(out)  # stdout holds exactly one JSON object
    assert metrics["records"] == 24 and 0.0 <= metrics["accuracy"] <= 1.0 and "f1_macro" in metrics
    # the printed accuracy is the model's own
    from hf_metaembed import MetaEmbedForSequenceClassification

    model = MetaEmbedForSequenceClassification.from_pretrained(trained).eval()
    processor = MetaEmbedProcessor.from_pretrained(trained)
    with torch.inference_mode():
        predicted = model(**processor(texts)).logits.argmax(-1)
    labels = torch.tensor([model.config.label2id[str(i % 2)] for i in range(24)])
    assert metrics["accuracy"] == pytest.approx(float((predicted == labels).float().mean()))

    code, _, err = _run(
        capsys, "evaluate", paths["csv"], "--model", trained, "--column", "text", "--label-column", "y"
    )
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "no column 'y'", "'label'")


def test_train_regression_from_saved_model(text_model, tmp_path, capsys):
    texts = _texts(16, seed=5)
    data = tmp_path / "scores.jsonl"
    data.write_text("".join(json.dumps({"sequence": t, "label": len(t) / 7}) + "\n" for t in texts))
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--model",
        text_model,
        "--output-dir",
        tmp_path / "reg",
        "--epochs",
        1,
        "--eval-data",
        data,
    )
    assert code == EXIT_OK, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["task"] == "regression"
    assert {"spearman", "pearson", "rmse", "loss"} <= set(metrics)
    data.write_text(json.dumps({"sequence": "a b", "label": "high"}) + "\n" + data.read_text())
    code, _, err = _run(capsys, "evaluate", data, "--model", tmp_path / "reg")
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "line 1 (record 1)", "'high' is not a number")
