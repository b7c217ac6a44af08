"""`--backbone-trust-remote-code`: a backbone folder with its own modelling code (`auto_map` in its config.json) is
refused by every command that builds a model from `--backbones` (build, embed, train, cache build, fit-fusion) and
by compare unless the flag is given, at once and with the flag named (in a process whose stdin is closed:
transformers' "[y/N]" prompt is never reached), and accepted with it."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hf_metaembed.cli.errors import EXIT_OK, EXIT_USAGE
from hf_metaembed.cli.main import main
from hf_metaembed.testing import make_tiny_remote_code_backbone

FLAG = "--backbone-trust-remote-code"
TEXTS = ["the movie was good", "great film", "a good movie", "film"]


@pytest.fixture(scope="module")
def own_code(tmp_path_factory) -> str:
    return make_tiny_remote_code_backbone(tmp_path_factory.mktemp("own_code") / "backbone")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    (folder / "texts.csv").write_text("sequence,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(TEXTS)))
    return folder / "texts.csv"


def hf_metaembed(*argv, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """`hf-metaembed ARGV` in a fresh interpreter whose stdin is closed."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "hf_metaembed.cli", *map(str, argv)]
    return subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=300, env=env)


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, err: str, command: str) -> None:
    assert code == EXIT_USAGE, err
    assert f"hf-metaembed {command}: error: backbone 0 (" in err and "ships its own modelling code" in err, err
    assert f"if you trust it, add {FLAG}" in err, err
    assert "backbone_trust_remote_code=True" not in err and "[y/N]" not in err  # the CLI's words, no prompt


def test_build_refuses_without_the_flag_with_stdin_closed_and_builds_with_it(own_code, tmp_path):
    refused = hf_metaembed("build", "--backbones", own_code, "-o", tmp_path / "refused")
    assert_refused(refused.returncode, refused.stderr, "build")
    assert not (tmp_path / "refused").exists()
    built = hf_metaembed("build", "--backbones", own_code, FLAG, "-o", tmp_path / "model")
    assert built.returncode == EXIT_OK, built.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["backbones"][0]["trust_remote_code"] is True
    assert (tmp_path / "model" / "backbone_0_code" / "modeling_tiny_remote.py").is_file()
    # the saved model rebuilds its backbone from the code saved with it: no flag needed (or taken) to use it
    code, _, err = run("embed", texts_file(tmp_path), "-o", tmp_path / "e.npy", "--model", tmp_path / "model", FLAG)
    assert code == EXIT_USAGE and f"drop {FLAG}" in err
    code, _, err = run("embed", texts_file(tmp_path), "-o", tmp_path / "e.npy", "--model", tmp_path / "model")
    assert code == EXIT_OK, err
    assert np.load(tmp_path / "e.npy").shape == (len(TEXTS), 16)


def texts_file(folder) -> str:
    path = folder / "plain.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return str(path)


def test_embed_refuses_without_the_flag_and_embeds_with_it(own_code, tmp_path):
    argv = ["embed", texts_file(tmp_path), "-o", tmp_path / "e.npy", "--backbones", own_code, "--fusion", "concat"]
    assert_refused(*run(*argv)[::2], "embed")
    code, _, err = run(*argv, FLAG, "--no-progress")
    assert code == EXIT_OK, err
    embeddings = np.load(tmp_path / "e.npy")
    assert embeddings.shape == (len(TEXTS), 16) and np.isfinite(embeddings).all()


def test_train_refuses_without_the_flag_and_trains_with_it(own_code, texts, tmp_path):
    argv = ["train", texts, "--backbones", own_code, "--output-dir", tmp_path / "trained", "--epochs", 1]
    argv += ["--batch-size", 2, "--no-progress"]
    assert_refused(*run(*argv)[::2], "train")
    code, out, err = run(*argv, FLAG)
    assert code == EXIT_OK, err
    assert json.loads(out.strip().splitlines()[-1])["train_records"] == len(TEXTS)
    assert json.loads((tmp_path / "trained" / "config.json").read_text())["backbones"][0]["trust_remote_code"]


def test_cache_build_refuses_without_the_flag_and_caches_with_it(own_code, tmp_path):
    argv = ["cache", "build", texts_file(tmp_path), tmp_path / "cache", "--backbones", own_code]
    assert_refused(*run(*argv)[::2], "cache")
    code, out, err = run(*argv, FLAG, "--no-progress")
    assert code == EXIT_OK, err
    assert f"cached {len(TEXTS)} new segments" in out


def labelled_file(folder) -> str:
    """TEXTS three times, with their labels: three items of each class, as a 3-fold comparison needs."""
    path = folder / "labelled.csv"
    path.write_text("sequence,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(TEXTS * 3)))
    return str(path)


def test_compare_refuses_without_the_flag_with_stdin_closed_and_compares_with_it(own_code, tiny_bert, tmp_path):
    argv = ["compare", labelled_file(tmp_path), "--backbones", own_code, tiny_bert, "--names", "own", "bert"]
    argv += ["--fusions", "concat", "--folds", 3, "--epochs", 2, "--resamples", 50, "--permutations", 50]
    refused = hf_metaembed(*argv, "--output-dir", tmp_path / "refused")
    assert_refused(refused.returncode, refused.stderr, "compare")
    assert not (tmp_path / "refused").exists()  # refused before any backbone read anything
    # with the flag, in worker processes that rebuild the backbone from the code copied to the output folder
    compared = hf_metaembed(*argv, "--output-dir", tmp_path / "out", "--jobs", 2, "--no-progress", FLAG)
    assert compared.returncode == EXIT_OK, compared.stderr
    rows = [line.split("|")[1:3] for line in compared.stdout.splitlines() if line.startswith("| ")][1:]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["own", "alone"],
        ["bert", "alone"],
        ["own + bert", "concat"],
    ]
    assert "backbone segments read: own 4, bert 4" in compared.stderr
    assert (tmp_path / "out" / "backbone_code" / "backbone_0_code" / "modeling_tiny_remote.py").is_file()


def test_fit_fusion_refuses_without_the_flag_and_fits_with_it(own_code, tiny_bert, tmp_path):
    argv = ["fit-fusion", texts_file(tmp_path), "--backbones", f"{own_code},{tiny_bert}", "--fusion", "svd"]
    argv += ["--dim", 8, "--output-dir", tmp_path / "fitted"]
    assert_refused(*run(*argv)[::2], "fit-fusion")
    assert not (tmp_path / "fitted").exists()
    code, out, err = run(*argv, FLAG)
    assert code == EXIT_OK, err
    assert json.loads(out.strip().splitlines()[-1])["fusion"] == "svd"
    config = json.loads((tmp_path / "fitted" / "config.json").read_text())
    assert config["backbones"][0]["trust_remote_code"] is True and not config["backbones"][1]["trust_remote_code"]
    assert (tmp_path / "fitted" / "backbone_0_code" / "modeling_tiny_remote.py").is_file()
    # refitting the saved model rebuilds its backbone from the code saved with it: the flag is refused there
    code, _, err = run(
        "fit-fusion", texts_file(tmp_path), "--model", tmp_path / "fitted", "--output-dir", tmp_path, FLAG
    )
    assert code == EXIT_USAGE and f"drop {FLAG}" in err
