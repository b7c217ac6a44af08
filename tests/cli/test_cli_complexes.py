"""`hf-metaembed train`, `evaluate` and `cache` on multi-chain complexes: a PPB-Affinity-format CSV (comma-joined
chains, KD(M) labels) trains and evaluates end to end with a pair architecture, the printed metrics are the model's
own, and bad rows are errors naming the row and the column."""

import contextlib
import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.cli import main
from hf_metaembed.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from hf_metaembed.integrations.metrics import compute_metrics, kd_to_pkd

COLUMNS = ["PDB", "Ligand Sequences", "Receptor Sequences", "KD(M)", "Affinity Method"]
PAIR_OPTIONS = ["--ligand-column", "Ligand Sequences", "--receptor-column", "Receptor Sequences"]
KD_OPTIONS = [*PAIR_OPTIONS, "--label-column", "KD(M)", "--label-transform", "pkd"]
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def _complexes(count: int, seed: int) -> list[dict]:
    """Complexes of one to three chains per side, with a KD that depends on both sides."""
    generator = random.Random(seed)

    def chain() -> str:
        return "".join(generator.choice(AMINO_ACIDS) for _ in range(generator.randint(6, 14)))

    rows = []
    for index in range(count):
        ligand = [chain() for _ in range(generator.randint(1, 2))]
        receptor = [chain() for _ in range(generator.randint(1, 3))]
        score = "".join(ligand).count("K") + "".join(receptor).count("W") + generator.random()
        rows.append(
            {
                "PDB": f"{index:04d}",
                "Ligand Sequences": ",".join(ligand),
                "Receptor Sequences": ",".join(receptor),
                "KD(M)": f"{10 ** -(4 + score / 2):.4e}",
                "Affinity Method": "SPR",
            }
        )
    return rows


def _write(path: Path, rows: list[dict], encoding: str = "utf-8-sig") -> Path:
    """A CSV as Excel's "CSV UTF-8" export writes it (with a byte-order mark)."""
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("hf-metaembed") and ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def affinity_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("affinity")
    return {
        "train": _write(folder / "train.csv", _complexes(24, seed=0)),
        "test": _write(folder / "test.csv", _complexes(12, seed=1)),
    }


@pytest.fixture(scope="module")
def trained_hp(tiny_esm, tiny_ankh, affinity_files, tmp_path_factory):
    """`hf-metaembed train` run once on the PPB-Affinity-format CSV: (model folder, exit code, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("hp_model")
    argv = ["train", affinity_files["train"], "--backbones", f"{tiny_esm},{tiny_ankh}", "--architecture", "hp"]
    argv += ["--preset", "paper", "--unit-encoder", "convbert", "--loss", "list_mle", *KD_OPTIONS]
    argv += ["--output-dir", folder, "--epochs", 2, "--batch-size", 8, "--eval-data", affinity_files["test"]]
    argv += ["--no-progress", "--seed", 3]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return folder, code, out.getvalue(), err.getvalue()


def test_train_on_complexes_prints_regression_metrics(trained_hp):
    folder, code, out, err = trained_hp
    assert code == EXIT_OK, err
    assert "task regression (KD labels through --label-transform); 24 labels from" in err
    metrics = json.loads(out.strip().splitlines()[-1])  # stdout: one JSON object
    assert {"spearman", "pearson", "rmse", "spearman_ci_low", "spearman_ci_high", "loss"} <= set(metrics)
    assert metrics["task"] == "regression" and metrics["train_records"] == 24
    assert metrics["spearman_ci_low"] <= metrics["spearman"] <= metrics["spearman_ci_high"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["architecture"], config["unit_encoder"], config["loss"]) == ("hp", "convbert", "list_mle")
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1
    assert json.loads((folder / "processor_config.json").read_text())["architecture"] == "hp"


def test_evaluate_on_complexes_reports_the_models_own_metrics(trained_hp, affinity_files, capsys):
    folder = trained_hp[0]
    code, out, err = _run(capsys, "evaluate", affinity_files["test"], "--model", folder, *KD_OPTIONS, "--no-progress")
    assert code == EXIT_OK, err
    metrics = json.loads(out)
    assert metrics["records"] == 12 and metrics["task"] == "regression"

    model = MetaEmbedForSequenceClassification.from_pretrained(folder).eval()
    processor = MetaEmbedProcessor.from_pretrained(folder)
    with open(affinity_files["test"], encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ligand = [row["Ligand Sequences"].split(",") for row in rows]
    receptor = [row["Receptor Sequences"].split(",") for row in rows]
    with torch.inference_mode():
        logits = model(**processor(ligand=ligand, receptor=receptor)).logits.numpy()
    labels = kd_to_pkd(np.array([float(row["KD(M)"]) for row in rows]))[:, None]
    expected = compute_metrics((logits, labels))
    for name in ("spearman", "pearson", "rmse", "spearman_ci_low", "spearman_ci_high"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-5), name

    # the study's label transform by name: a monotone map of KD below 1 M, so the same ranking and another RMSE
    code, out, err = _run(
        capsys, "evaluate", affinity_files["test"], "--model", folder, *KD_OPTIONS[:-1], "reference", "--no-progress"
    )
    assert code == EXIT_OK, err
    reference = json.loads(out)
    assert reference["spearman"] == pytest.approx(metrics["spearman"], abs=1e-9)
    assert reference["rmse"] != pytest.approx(metrics["rmse"])


def test_numeric_labels_and_separator_without_a_transform(tiny_esm, tmp_path, capsys):
    """Complexes whose label column already holds numbers (no --label-transform), chains joined by ';'."""
    rows = _complexes(10, seed=2)
    for row in rows:
        row["Ligand Sequences"] = row["Ligand Sequences"].replace(",", ";")
        row["Receptor Sequences"] = row["Receptor Sequences"].replace(",", ";")
        row["pkd"] = f"{kd_to_pkd(float(row.pop('KD(M)'))):.3f}"
    data = _write(tmp_path / "pkd.csv", rows, encoding="utf-8")
    argv = ["train", data, "--backbones", tiny_esm, "--architecture", "pad", *PAIR_OPTIONS, "--chain-separator", ";"]
    argv += ["--label-column", "pkd", "--output-dir", tmp_path / "pad", "--epochs", 1, "--no-progress"]
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_OK, err
    assert "task regression (inferred: every label is a number, not all integers); 10 labels" in err
    assert {"train_loss", "train_records"} <= set(json.loads(out.strip().splitlines()[-1]))

    rows[4]["Receptor Sequences"] = "MKTAYIAKQR;GSH1LE"
    bad = _write(tmp_path / "bad.csv", rows, encoding="utf-8")
    code, _, err = _run(
        capsys, "evaluate", bad, "--model", tmp_path / "pad", *PAIR_OPTIONS, "--chain-separator", ";",
        "--label-column", "pkd", "--no-progress",
    )  # fmt: skip
    assert code == EXIT_USAGE
    _one_line_error(err, "bad.csv line 6 (record 5)", "receptor column 'Receptor Sequences'", "'1'")


@pytest.mark.parametrize(
    ("row", "column", "value", "fragments"),
    [
        # data row 3 is record 4, on line 5 (the header is line 1)
        (3, "KD(M)", "", ["line 5 (record 4)", "'KD(M)'", "blank"]),
        (5, "KD(M)", "strong", ["line 7 (record 6)", "'KD(M)'", "'strong' is not a number"]),
        (2, "KD(M)", "-1e-9", ["line 4 (record 3)", "'KD(M)'", "positive"]),
        (7, "Ligand Sequences", "MKTAYIAK,,GSHMLE", ["line 9 (record 8)", "'Ligand Sequences'", "blank"]),
        (1, "Receptor Sequences", "MKTA1AKQ", ["line 3 (record 2)", "'Receptor Sequences'", "not amino acids"]),
    ],
)
def test_bad_rows_name_the_row_and_column(row, column, value, fragments, tiny_esm, tmp_path, capsys):
    rows = _complexes(10, seed=4)
    rows[row][column] = value
    data = _write(tmp_path / "bad.csv", rows)
    argv = ["train", data, "--backbones", tiny_esm, "--architecture", "hp", *KD_OPTIONS]
    code, _, err = _run(capsys, *argv, "--output-dir", tmp_path / "m", "--no-progress")
    assert code == EXIT_USAGE
    _one_line_error(err, "bad.csv", *fragments)
    assert not (tmp_path / "m").exists()


def test_curation_options_and_pair_usage_errors(trained_hp, tiny_esm, affinity_files, tmp_path, capsys):
    data = affinity_files["train"]
    common = ["--backbones", tiny_esm, "--output-dir", tmp_path / "m", "--no-progress"]
    cases = [
        ([*KD_OPTIONS], "choose a pair architecture"),  # complexes, but no --architecture
        (["--architecture", "single", *KD_OPTIONS], "architecture 'single', which reads single sequences"),
        (
            ["--architecture", "hq", *KD_OPTIONS],
            "--architecture hq: unknown architecture; choose one of: single, sc, ec, hp, pad",
        ),
        (["--architecture", "hp", "--ligand-column", "Ligand Sequences"], "--receptor-column"),
        (["--architecture", "hp", "--label-column", "KD(M)"], "--ligand-column and --receptor-column"),
        (
            ["--architecture", "hp", *PAIR_OPTIONS, "--label-column", "KD(M)", "--min-chain-length", "40"],
            "add --label-transform",
        ),  # fmt: skip
        (["--architecture", "hp", *KD_OPTIONS, "--min-chain-length", "1000"], "no complex is left after curation"),
        (["--architecture", "hp", *KD_OPTIONS, "--task", "classification"], "drop --task classification"),
        (["--architecture", "hp", *KD_OPTIONS, "--kd-unit", "mol"], "unknown --kd-unit 'mol'"),
    ]
    for options, fragment in cases:
        code, _, err = _run(capsys, "train", data, *common, *options)
        assert code == EXIT_USAGE, (options, err)
        _one_line_error(err, fragment)
    folder = trained_hp[0]
    code, _, err = _run(capsys, "train", data, "--model", folder, "--fusion", "mean", *KD_OPTIONS, "--output-dir",
                        tmp_path / "m2", "--no-progress")  # fmt: skip
    assert code == EXIT_USAGE
    _one_line_error(err, "--fusion set up a new model", "drop --fusion")
    code, _, err = _run(capsys, "evaluate", data, "--model", folder, "--label-column", "KD(M)")
    assert code == EXIT_USAGE
    _one_line_error(err, "architecture 'hp', which pairs ligand and receptor chains", "--ligand-column")


def test_cache_builds_complexes_and_inspects_them(tiny_esm, tiny_ankh, affinity_files, tmp_path, capsys):
    folder = tmp_path / "cache"
    argv = ["cache", "build", affinity_files["train"], folder, "--backbones", tiny_esm, tiny_ankh]
    code, out, err = _run(capsys, *argv, *PAIR_OPTIONS, "--architecture", "hp", "--threads", 1, "--no-progress")
    assert code == EXIT_OK, err
    with open(affinity_files["train"], encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chains = {c for row in rows for c in row["Ligand Sequences"].split(",") + row["Receptor Sequences"].split(",")}
    assert f"{len(chains)} unique of" in out

    code, out, err = _run(capsys, "cache", "inspect", folder)
    assert code == EXIT_OK, err
    assert f"feature cache of {len(chains)} segments" in out and "checksums: not checked (pass --verify)" in out
    code, out, err = _run(capsys, "cache", "inspect", folder, "--json", "--verify")
    assert code == EXIT_OK, err
    description = json.loads(out)
    assert description["segments"] == len(chains) and description["verified"] is True
    assert description["units"] == sum(len(chain) for chain in chains)
    assert [backbone["name"] for backbone in description["backbones"]] == [tiny_esm, tiny_ankh]

    shard = sorted(folder.glob("shard-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out, err = _run(capsys, "cache", "inspect", folder, "--verify")
    assert code == EXIT_FAILURE
    assert f"damaged: shard {shard.name}" in out and "sha256" in out
    code, _, err = _run(capsys, "cache", "inspect", tmp_path)
    assert code == EXIT_USAGE
    _one_line_error(err, "is not a feature cache", "hf-metaembed cache build")
