"""What a new user meets on the command line: help and argument errors without torch, `build`, `embed --backbones`,
flags named in messages, outputs that say what they are, and a classifier that is never overwritten silently."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor, list_architectures, list_fusions, list_heads
from hf_metaembed.batching import DEFAULT_MAX_TOKENS
from hf_metaembed.cli import main
from hf_metaembed.cli.errors import EXIT_OK, EXIT_USAGE
from hf_metaembed.cli.options import DEFAULT_MAX_TOKENS as CLI_DEFAULT_MAX_TOKENS

PROTEINS = ["MKTAYIAKQR", "GSHMLEDPVA", "MVLSPADKTN", "ACDEFGHIKLMNPQRSTVWY", "MKKLLPT", "QQQRRS", "WYWY"]

# runs the real entry point in a fresh interpreter and reports which heavy modules it imported
PROBE = textwrap.dedent(
    """
    import json, sys
    from hf_metaembed.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit_:
        code = exit_.code
    heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
    print("PROBE " + json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
    """
)


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("hf-metaembed")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _fasta(path: Path, sequences: list[str]) -> Path:
    path.write_text("".join(f">p{i}\n{s}\n" for i, s in enumerate(sequences)), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("argv", "expected_code", "fragment"),
    [
        (["--help"], 0, "usage: hf-metaembed"),
        (["--version"], 0, "hf_metaembed 0.2"),
        *[([*command, "--help"], 0, "usage: hf-metaembed") for command in [
            ["embed"], ["build"], ["train"], ["evaluate"], ["cache"], ["cache", "build"], ["cache", "inspect"],
            ["demo"], ["serve"], ["export", "onnx"], ["compare"],
        ]],
        (["embed", "in.fasta", "--model", "m", "-o", "o.npy", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["embed", "nope.fasta", "--model", "m", "-o", "o.npy"], 2, "input file 'nope.fasta' does not exist"),
        (["train", "nope.csv", "--model", "m", "--output-dir", "o"], 2, "input file 'nope.csv' does not exist"),
    ],
)  # fmt: skip
def test_help_and_argument_errors_load_neither_torch_nor_transformers(argv, expected_code, fragment, tmp_path):
    (tmp_path / "in.fasta").write_text(">a\nMKT\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    probe = json.loads(result.stderr.split("PROBE ")[-1])
    assert probe == {"code": expected_code, "heavy": []}, result.stderr
    assert fragment in result.stdout + result.stderr


def test_a_missing_model_folder_is_named_before_torch_loads(tmp_path):
    (tmp_path / "in.fasta").write_text(">a\nMKT\n", encoding="utf-8")
    argv = ["embed", "in.fasta", "--model", "no-such-model", "-o", "o.npy"]
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(result.stderr.split("PROBE ")[-1]) == {"code": 2, "heavy": []}
    _one_line(result.stderr.split("PROBE ")[0], "model folder 'no-such-model' does not exist", "hf-metaembed build")


def test_help_names_registered_blocks_and_the_library_token_budget(capsys):
    assert CLI_DEFAULT_MAX_TOKENS == DEFAULT_MAX_TOKENS
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    fusions = out.split("--fusion FUSION fusion name: ")[1].split(", ...")[0].split(", ")
    assert fusions and set(fusions) <= set(list_fusions())
    architectures = out.split("--architecture ARCHITECTURE ")[1].split(", ...")[0].split(", ")
    assert set(architectures) <= set(list_architectures())
    assert {"linear", "mlp"} <= set(list_heads())


def test_build_saves_a_model_that_embed_reproduces_from_the_backbones(tiny_esm, tiny_ankh, tmp_path, capsys):
    fasta = _fasta(tmp_path / "in.fasta", PROTEINS)
    backbones = f"{tiny_esm},{tiny_ankh}"
    code, out, err = _run(
        capsys, "build", "--backbones", backbones, "--fusion", "dme", "--seed", 3, "-o", tmp_path / "m"
    )
    assert code == EXIT_OK, err
    assert "saved an untrained MetaEmbedModel (2 backbone(s), fusion 'dme'" in out
    assert (tmp_path / "m" / "config.json").is_file() and (tmp_path / "m" / "processor_config.json").is_file()
    code, _, err = _run(capsys, "build", "--backbones", backbones, "-o", tmp_path / "m")
    assert code == EXIT_USAGE
    _one_line(err, "already holds a saved model", "--overwrite")

    assert _run(capsys, "embed", fasta, "--model", tmp_path / "m", "-o", tmp_path / "saved.npy")[0] == EXIT_OK
    common = ["embed", fasta, "--backbones", backbones, "--fusion", "dme"]
    assert _run(capsys, *common, "--seed", 3, "-o", tmp_path / "direct.npy")[0] == EXIT_OK
    assert _run(capsys, *common, "--seed", 4, "-o", tmp_path / "other.npy")[0] == EXIT_OK
    saved, direct = np.load(tmp_path / "saved.npy"), np.load(tmp_path / "direct.npy")
    np.testing.assert_allclose(direct, saved, atol=1e-5)  # same backbones, settings and seed: same weights
    assert not np.allclose(np.load(tmp_path / "other.npy"), saved, atol=1e-3)  # the seed sets the projections

    model = MetaEmbedModel.from_pretrained(tmp_path / "m").eval()
    processor = MetaEmbedProcessor.from_pretrained(tmp_path / "m")
    with torch.inference_mode():
        expected = torch.cat([model(**processor([p])).pooler_output for p in PROTEINS]).numpy()
    np.testing.assert_allclose(saved, expected, atol=1e-5)

    code, _, err = _run(capsys, "embed", fasta, "--model", tmp_path / "m", "--fusion", "concat", "-o", tmp_path / "x")
    assert code == EXIT_USAGE
    _one_line(err, "--fusion", "keeps its own settings")
    code, _, err = _run(capsys, *common[:4], "--fusion", "dmee", "-o", tmp_path / "x")
    assert code == EXIT_USAGE
    _one_line(err, "--fusion dmee: unknown fusion; choose one of: ", "dme")


def test_messages_name_the_flags_that_fix_them(tiny_esm, tmp_path, capsys):
    digits = _fasta(tmp_path / "digits.fasta", ["MKTAYIAK", "MKT1AY"])
    common = ["--backbones", tiny_esm, "--fusion", "concat"]
    code, _, err = _run(capsys, "embed", digits, *common, "-o", tmp_path / "d.npy")
    assert code == EXIT_USAGE
    line = _one_line(err, "digits.fasta line 3 (record 2, id 'p1')", "pass --unknown-residues x")
    assert "unknown_residues" not in line
    code, _, err = _run(capsys, "embed", digits, *common, "--unknown-residues", "x", "-o", tmp_path / "d.npy")
    assert code == EXIT_OK, err
    assert np.load(tmp_path / "d.npy").shape[0] == 2

    long = _fasta(tmp_path / "long.fasta", ["MKTAYIAKQR" * 10])  # the tiny ESM reads 64 residues at most
    code, _, err = _run(capsys, "embed", long, *common, "-o", tmp_path / "l.npy")
    assert code == EXIT_USAGE
    line = _one_line(err, "--long-sequences window --window-size N", "--truncation")
    assert "long_sequences=" not in line and "truncation=True" not in line and "MetaEmbedProcessor" not in line
    code, _, err = _run(capsys, "embed", long, *common, "--long-sequences", "window", "-o", tmp_path / "l.npy")
    assert code == EXIT_USAGE
    _one_line(err, "the model has no window size", "--window-size N")
    argv = ["embed", long, *common, "--long-sequences", "window", "--window-size", 40, "-o", tmp_path / "l.npy"]
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_OK, err
    assert np.load(tmp_path / "l.npy").shape[0] == 1


def test_interrupted_npy_output_waits_under_partial_and_a_finished_one_is_left_alone(tiny_esm, tmp_path, capsys):
    fasta = _fasta(tmp_path / "in.fasta", PROTEINS)
    output = tmp_path / "part.npy"
    common = ["embed", fasta, "--backbones", tiny_esm, "--fusion", "concat", "-o", output, "--batch-size", 2]
    code, _, err = _run(capsys, *common, "--max-batches", 1)
    assert code == EXIT_OK
    assert "part.npy.partial" in err and "rerun the same command to continue" in err
    assert not output.exists() and (tmp_path / "part.npy.partial").is_dir()
    code, out, err = _run(capsys, *common, "--keep-shards")
    assert code == EXIT_OK, err
    assert f"wrote {len(PROTEINS)} embeddings" in out
    assert not (tmp_path / "part.npy.partial").exists() and (tmp_path / "part.npy.shards" / "index.json").is_file()
    first = output.read_bytes()
    code, out, err = _run(capsys, *common)
    assert code == EXIT_OK and out == ""
    _one_line(err, "part.npy exists and no run is in progress", "left as it is", "--overwrite")
    assert output.read_bytes() == first


def _labelled(path: Path, labels: list) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "label"])
        writer.writerows([p, label] for p, label in zip(PROTEINS * 2, labels))
    return path


def test_train_never_overwrites_a_model_without_overwrite(tiny_esm, tmp_path, capsys):
    data = _labelled(tmp_path / "d.csv", ["pos", "neg"] * 7)
    clf = tmp_path / "clf"
    code, _, err = _run(capsys, "build", "--backbones", tiny_esm, "--num-labels", 2, "-o", clf)
    assert code == EXIT_OK, err
    config = (clf / "config.json").read_bytes()
    argv = ["train", data, "--model", clf, "--output-dir", clf, "--epochs", 1, "--no-progress"]
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    _one_line(err, "is the --model folder", "choose another --output-dir", "--overwrite")
    assert (clf / "config.json").read_bytes() == config
    code, out, err = _run(capsys, *argv, "--overwrite")
    assert code == EXIT_OK, err
    assert json.loads(out.strip().splitlines()[-1])["task"] == "classification"
    assert "{'loss'" not in err and "'epoch'" not in err  # --no-progress: no per-epoch dicts either
    assert json.loads((clf / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}

    other = tmp_path / "other"
    assert _run(capsys, "build", "--backbones", tiny_esm, "-o", other)[0] == EXIT_OK
    code, _, err = _run(capsys, "train", data, "--model", clf, "--output-dir", other, "--epochs", 1)
    assert code == EXIT_USAGE
    _one_line(err, "already holds a saved model", "--overwrite")


def test_regression_with_two_outputs_is_explained_or_refused(tiny_esm, tmp_path, capsys):
    code, _, err = _run(capsys, "build", "--backbones", tiny_esm, "--num-labels", 2, "--problem-type", "regression",
                        "-o", tmp_path / "two")  # fmt: skip
    assert code == EXIT_OK, err
    assert "predicts 2 numbers per sample (multi-target regression" in err
    data = _labelled(tmp_path / "scores.csv", [f"{i / 3:.2f}" for i in range(14)])
    code, _, err = _run(capsys, "evaluate", data, "--model", tmp_path / "two", "--no-progress")
    assert code == EXIT_USAGE
    _one_line(err, "predicts 2 numbers per record (num_labels=2", "one label per record")
    code, _, err = _run(capsys, "build", "--backbones", tiny_esm, "--num-labels", 1, "--problem-type",
                        "single_label_classification", "-o", tmp_path / "one")  # fmt: skip
    assert code == EXIT_USAGE
    _one_line(err, "a single class", "--num-labels 2 or more")


def test_cache_takes_backbones_as_a_comma_list(tiny_esm, tiny_ankh, tmp_path, capsys):
    fasta = _fasta(tmp_path / "in.fasta", PROTEINS)
    argv = ["cache", fasta, tmp_path / "c", "--backbones", f"{tiny_esm},{tiny_ankh}", "--level", "unit"]
    code, out, err = _run(capsys, *argv, "--fusion", "dme", "--no-progress")
    assert code == EXIT_OK, err
    assert f"{len(PROTEINS)} unique of {len(PROTEINS)} read" in out
    code, _, err = _run(capsys, *argv, "--fusion", "dmee", "--no-progress")
    assert code == EXIT_USAGE
    _one_line(err, "--fusion dmee: unknown fusion")


def test_api_errors_name_the_problem_and_the_fix(tiny_bert, tmp_path):
    processor = MetaEmbedProcessor.from_backbones([tiny_bert])
    with pytest.raises(ValueError, match=r"sample 0\b.* has the label 'high', a string; labels are numbers.*label2id"):
        processor(["good film"], labels=["high"])
    assert processor(["good film"], labels=[1])["labels"].tolist() == [1]
    with pytest.raises(OSError, match=r"no MetaEmbed model at '/no/such/model': the path does not exist; .*"
                       r"save_pretrained.*from_backbones.*hf-metaembed build"):  # fmt: skip
        MetaEmbedModel.from_pretrained("/no/such/model")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"the path is a file, not a folder"):
        MetaEmbedModel.from_pretrained(str(tmp_path / "file"))


def test_loading_and_saving_bars_follow_transformers_progress_bar_setting(tiny_bert, tmp_path, capfd):
    from transformers.utils import logging

    model = MetaEmbedModel.from_backbones([tiny_bert], fusion="concat")
    was_enabled = logging.is_progress_bar_enabled()
    try:
        logging.disable_progress_bar()
        capfd.readouterr()
        model.save_pretrained(tmp_path / "m")
        MetaEmbedModel.from_pretrained(tmp_path / "m")
        quiet = capfd.readouterr().err
        logging.enable_progress_bar()
        model.save_pretrained(tmp_path / "m")
        MetaEmbedModel.from_pretrained(tmp_path / "m")
        loud = capfd.readouterr().err
    finally:
        (logging.enable_progress_bar if was_enabled else logging.disable_progress_bar)()
    assert "Writing model shards" not in quiet and "Loading weights" not in quiet
    assert "Writing model shards" in loud and "Loading weights" in loud
