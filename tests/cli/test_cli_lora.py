"""`hf-metaembed train --lora` / `--use-dora`: adapters on the backbones' query and value projections, trained with
fusion and head and merged into the backbones before saving; `--preset paper` brings the reference's rank 16 and
alpha 32; adapter flags without `--lora` are refused."""

import contextlib
import io
import json
import random

import pytest
import torch
from transformers import AutoModel

from hf_metaembed import MetaEmbedForSequenceClassification
from hf_metaembed.cli.errors import EXIT_OK, EXIT_USAGE
from hf_metaembed.cli.main import main


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = random.Random(0)
    rows = ["sequence,label"]
    for _ in range(12):
        sequence = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(6, 14)))
        rows.append(f"{sequence},{rng.uniform(0, 3):.3f}")
    path = tmp_path_factory.mktemp("lora_data") / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def train(data, backbone, output, *flags) -> tuple[int, dict, str]:
    code, out, err = run(
        "train", data, "--backbones", backbone, "--output-dir", output, "--epochs", 2, "--batch-size", 4,
        "--learning-rate", 0.05, "--no-progress", *flags,
    )  # fmt: skip
    return code, (json.loads(out.strip().splitlines()[-1]) if code == EXIT_OK else {}), err


def test_use_dora_with_the_paper_preset_trains_dora_adapters_and_saves_them_merged(tiny_esm, labelled, tmp_path):
    flags = ["--use-dora", "--preset", "paper", "--eval-data", labelled]
    code, metrics, err = train(labelled, tiny_esm, tmp_path / "dora", *flags)
    assert code == EXIT_OK, err
    assert {"spearman", "rmse"} <= set(metrics)  # evaluated through the adapters after each epoch
    adapters = metrics["adapters"]
    assert (adapters["method"], adapters["r"], adapters["lora_alpha"], adapters["lora_dropout"]) == ("dora", 16, 32, 0)
    # the tiny ESM-2 has 2 layers: query and value of each, every one a DoRA layer (magnitude vector and all)
    assert adapters["adapted_layers"] == adapters["dora_layers"] == 4
    assert adapters["adapter_parameters"] == 4 * (16 * 16 + 16 * 16 + 16)  # A (16x16), B (16x16), m (16) per layer
    saved = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "dora")
    assert not any("lora_" in name for name, _ in saved.named_parameters())  # merged: a plain MetaEmbed model
    original = AutoModel.from_pretrained(tiny_esm)
    saved_backbone = saved.metaembed.backbone_0.encoder.layer[0].attention.self
    original_attention = original.encoder.layer[0].attention.self
    assert not torch.allclose(saved_backbone.query.weight, original_attention.query.weight)  # adapted and merged
    assert not torch.allclose(saved_backbone.value.weight, original_attention.value.weight)
    torch.testing.assert_close(saved_backbone.key.weight, original_attention.key.weight)  # not a LoRA target
    code, out, err = run("evaluate", labelled, "--model", tmp_path / "dora", "--no-progress")
    assert code == EXIT_OK and "spearman" in json.loads(out.strip().splitlines()[-1]), err


def test_lora_without_a_preset_takes_the_helpers_defaults_and_flags_win(tiny_esm, labelled, tmp_path):
    code, metrics, err = train(labelled, tiny_esm, tmp_path / "lora", "--lora")
    assert code == EXIT_OK, err
    assert metrics["adapters"]["method"] == "lora" and metrics["adapters"]["dora_layers"] == 0
    assert (metrics["adapters"]["r"], metrics["adapters"]["lora_alpha"]) == (8, 16)
    code, metrics, err = train(labelled, tiny_esm, tmp_path / "mine", "--lora", "--preset", "paper", "--lora-r", 2)
    assert code == EXIT_OK, err
    assert (metrics["adapters"]["r"], metrics["adapters"]["lora_alpha"]) == (2, 32)
    code, metrics, err = train(labelled, tiny_esm, tmp_path / "plain")
    assert code == EXIT_OK and "adapters" not in metrics, err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora-r", "4"], "--lora-r set up LoRA adapters on the backbones: add --lora (or --use-dora)"),
        (["--lora", "--lora-r", "0"], "--lora-r must be a positive integer, got 0"),
        (["--use-dora", "--lora-dropout", "1.5"], "--lora-dropout must be at least 0 and below 1, got 1.5"),
    ],
)
def test_wrong_adapter_flags_are_refused_before_a_model_is_built(tiny_esm, labelled, tmp_path, flags, message):
    code, _, err = train(labelled, tiny_esm, tmp_path / "out", *flags)
    assert code == EXIT_USAGE and message in err, err
    assert "task regression" not in err  # refused before the data is read
