"""The CLI as users of other tools drive it: Excel's UTF-8 CSV (byte-order mark), `--device cuda` without CUDA,
`cache` with FASTA, `--column` and CLI hints; strict labels (a blank, NaN or stray word in a numeric column is an
error naming the rows, `--task` overrides, the task and labels are printed before training); errors that name only
the paths the user typed."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cache import load_feature_cache
from hf_metaembed.cli import main
from hf_metaembed.cli.errors import EXIT_OK, EXIT_USAGE
from hf_metaembed.io.records import read_records, read_rows

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "blue", "sky", "is", "big"]
PROTEINS = ["MKTAYIAKQR", "GSHMLEDPVA", "MVLSPADKTN", "ACDEFGHIKLMNPQRSTVWY", "MKKLLPT", "QQQRRS", "WYWY"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _texts(count: int, seed: int) -> list[str]:
    generator = np.random.default_rng(seed)
    return [" ".join(generator.choice(WORDS, size=int(generator.integers(2, 7)))) for _ in range(count)]


def _table(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def protein_model(tiny_esm, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("protein_model")
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones([tiny_esm], fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_esm]).save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------------------- byte-order mark


def test_excel_utf8_csv_columns_read_correctly(tmp_path):
    path = _table(tmp_path / "excel.csv", ["sequence", "label"], [["MKTA", "1.5"], ["GSHM", "2"]], "utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert [row for _, row in read_rows(path)][0] == {"sequence": "MKTA", "label": "1.5"}
    assert [record.text for record in read_records(path)] == ["MKTA", "GSHM"]
    fasta = tmp_path / "excel.fasta"
    fasta.write_bytes(b"\xef\xbb\xbf>p1\nMKTA\n")
    assert [(record.id, record.text) for record in read_records(fasta)] == [("p1", "MKTA")]


# ---------------------------------------------------------------------------------------------- devices


def test_cuda_on_a_cpu_only_torch_is_a_usage_error_naming_the_fix(protein_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    data = _table(tmp_path / "d.csv", ["sequence", "label"], [[p, i % 2] for i, p in enumerate(PROTEINS)])
    commands = [
        ["train", data, "--model", protein_model, "--output-dir", tmp_path / "o", "--device", "cuda"],
        ["evaluate", data, "--model", protein_model, "--device", "cuda:1"],
        ["cache", "build", data, tmp_path / "c", "--model", protein_model, "--device", "cuda"],
        ["embed", data, "--model", protein_model, "-o", tmp_path / "e.npy", "--device", "cuda"],
    ]
    for command in commands:
        code, _, err = _run(capsys, *command)
        assert code == EXIT_USAGE, (command, err)
        _error_line(err, "--device cuda", "CPU-only build", "use --device cpu", "install a CUDA build of torch")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()
    code, _, err = _run(capsys, "evaluate", data, "--model", protein_model, "--device", "gpu0")
    assert code == EXIT_USAGE
    _error_line(err, "unknown device 'gpu0'")


# ---------------------------------------------------------------------------------------------- cache command


def test_cache_reads_fasta_and_excel_csv_with_embeds_column_flag(protein_model, tmp_path, capsys):
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{i}\n{p[:4]}\n{p[4:]}\n" for i, p in enumerate(PROTEINS + PROTEINS[:2])))
    code, out, err = _run(capsys, "cache", fasta, tmp_path / "fasta", "--model", protein_model, "--threads", 1)
    assert code == EXIT_OK, err
    assert f"{len(PROTEINS)} unique of {len(PROTEINS) + 2} read" in out
    model, processor = MetaEmbedModel.from_pretrained(protein_model), MetaEmbedProcessor.from_pretrained(protein_model)
    assert len(load_feature_cache(tmp_path / "fasta", model, processor)) == len(PROTEINS)

    excel = _table(tmp_path / "excel.csv", ["protein", "y"], [[p, 0] for p in PROTEINS], "utf-8-sig")
    for flag, folder in (("--column", "new"), ("--sequence-column", "old")):
        code, out, err = _run(
            capsys, "cache", "build", excel, tmp_path / folder, "--model", protein_model, flag, "protein"
        )
        assert code == EXIT_OK, err
        assert f"holds {len(PROTEINS)} segments" in out
    code, _, err = _run(capsys, "cache", fasta, tmp_path / "x", "--model", protein_model, "--ligand-column", "a")
    assert code == EXIT_USAGE
    _error_line(err, "fasta file holds plain sequences", "CSV, TSV or JSONL")


def test_cache_hints_speak_cli(protein_model, tiny_ankh, tmp_path, capsys):
    data = _table(tmp_path / "d.csv", ["sequence"], [[p] for p in PROTEINS])
    folder = tmp_path / "cache"
    assert _run(capsys, "cache", data, folder, "--model", protein_model)[0] == EXIT_OK
    code, _, err = _run(capsys, "cache", data, folder, "--backbones", tiny_ankh)
    assert code == EXIT_USAGE
    line = _error_line(err, "built for a different model", "pass --overwrite to replace it")
    assert "overwrite=True" not in line and "build_feature_cache" not in line
    code, out, err = _run(capsys, "cache", data, folder, "--backbones", tiny_ankh, "--overwrite")
    assert code == EXIT_OK, err

    (folder / "index.json").write_text("{broken")
    code, _, err = _run(capsys, "cache", "inspect", folder)
    assert code == EXIT_USAGE
    line = _error_line(err, "unreadable", "--overwrite")
    assert "overwrite=True" not in line


def test_cache_help_lists_build_and_inspect(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "build" in out and "inspect" in out and "exit codes:" in out
    with pytest.raises(SystemExit):
        main(["cache", "build", "--help"])
    out = capsys.readouterr().out
    for flag in ("--column", "--sequence-column", "--ligand-column", "--threads", "--lock-timeout", "--overwrite"):
        assert flag in out


# ---------------------------------------------------------------------------------------------- strict labels


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        # data row 7 is record 8 on line 9 (the header is line 1)
        (
            [(7, "")],
            ["line 9 (record 8), column 'label': label '' is blank or NaN", "fill in the label or drop the row"],
        ),
        ([(3, "nan"), (9, "NaN")], ["2 of 24 labels in column 'label' are blank or NaN", "line 5 (record 4) ('nan')"]),
        ([(5, "high")], ["line 7 (record 6), column 'label': label 'high' is not a number", "--task classification"]),
    ],
)
def test_a_regression_column_with_a_blank_nan_or_word_is_an_error(bad, fragments, tiny_bert, tmp_path, capsys):
    texts = _texts(24, seed=1)
    rows = [[text, f"{len(text) / 7:.3f}"] for text in texts]
    for index, value in bad:
        rows[index][1] = value
    data = _table(tmp_path / "scores.csv", ["sequence", "label"], rows)
    code, _, err = _run(capsys, "train", data, "--backbones", tiny_bert, "--output-dir", tmp_path / "m")
    assert code == EXIT_USAGE
    _error_line(err, "scores.csv", *fragments)
    assert not (tmp_path / "m").exists()
    code, _, err = _run(capsys, "train", data, "--backbones", tiny_bert, "--output-dir", tmp_path / "m", "--task",
                        "regression")  # fmt: skip
    assert code == EXIT_USAGE
    _error_line(err, *fragments[:1])


def test_task_is_printed_before_training_and_task_overrides(tiny_bert, tmp_path, capsys):
    texts = _texts(16, seed=2)
    data = _table(tmp_path / "counts.csv", ["sequence", "label"], [[t, len(t.split())] for t in texts])
    common = ["--backbones", tiny_bert, "--epochs", 1, "--batch-size", 8, "--no-progress"]
    code, out, err = _run(capsys, "train", data, *common, "--output-dir", tmp_path / "cls")
    assert code == EXIT_OK, err
    counts = sorted({len(t.split()) for t in texts})
    announced = [line for line in err.splitlines() if line.startswith("hf-metaembed train: task ")]
    assert announced == [
        "hf-metaembed train: task classification (inferred: every label is an integer; pass --task regression to "
        f"predict numbers); {len(counts)} labels: " + ", ".join(repr(str(c)) for c in counts)
    ]
    # --no-progress: no bars and none of the Trainer's per-epoch dicts either
    assert "{'loss'" not in err and "'epoch'" not in err and "it/s" not in err
    assert json.loads(out.strip().splitlines()[-1])["task"] == "classification"

    code, out, err = _run(capsys, "train", data, *common, "--output-dir", tmp_path / "reg", "--task", "regression")
    assert code == EXIT_OK, err
    assert "hf-metaembed train: task regression (--task regression); 16 labels from" in err
    config = json.loads((tmp_path / "reg" / "config.json").read_text())
    assert config["problem_type"] == "regression"

    names = _table(tmp_path / "names.csv", ["sequence", "label"], [[t, ["pos", "neg", "7"][i % 3]] for i, t in
                                                                   enumerate(texts)])  # fmt: skip
    # names mixed with numbers are never guessed into a classifier: the error names both kinds and --task
    code, out, err = _run(capsys, "train", names, *common, "--output-dir", tmp_path / "names")
    assert code == EXIT_USAGE
    fragments = ["5 of 16 labels in column 'label' are numbers among text labels", "line 4 (record 3) ('7')"]
    fragments += ["the other 11 labels are text ('neg', 'pos')", "--task classification", "--task regression"]
    _error_line(err, *fragments)
    assert not (tmp_path / "names").exists()
    code, out, err = _run(capsys, "train", names, *common, "--output-dir", tmp_path / "names", "--task",
                          "classification")  # fmt: skip
    assert code == EXIT_OK, err
    assert "task classification (--task classification); 3 labels: '7', 'neg', 'pos'" in err
    words = _table(tmp_path / "words.csv", ["sequence", "label"], [[t, ["pos", "neg"][i % 2]] for i, t in
                                                                   enumerate(texts)])  # fmt: skip
    code, out, err = _run(capsys, "train", words, *common, "--output-dir", tmp_path / "words")
    assert code == EXIT_OK, err
    assert "task classification (inferred: the labels are names); 2 labels: 'neg', 'pos'" in err


# ---------------------------------------------------------------------------------------------- paths


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_that_cannot_be_created_names_only_what_was_typed(protein_model, tmp_path, capsys):
    data = _table(tmp_path / "d.csv", ["sequence"], [[p] for p in PROTEINS])
    for output in ("/proc/x.npz", "/proc/x.npy", "/proc/out"):
        code, _, err = _run(capsys, "embed", data, "--model", protein_model, "-o", output)
        assert code == EXIT_USAGE, err
        line = _error_line(err, f"cannot write '{output}'", "folder '/proc' does not accept new files")
        assert ".partial" not in line and ".tmp" not in line and ".probe" not in line
    code, _, err = _run(capsys, "train", data, "--model", protein_model, "--output-dir", "/proc/model")
    assert code == EXIT_USAGE
    _error_line(err, "cannot write '/proc/model'")
