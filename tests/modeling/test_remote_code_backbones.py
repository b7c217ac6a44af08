"""Backbones that ship their own modelling code: refused without `backbone_trust_remote_code` (at once, in a process
whose stdin is closed, never reaching transformers' "[y/N]" prompt), fused and run with it, saved with their code
files and reloaded through remote code without the library; their code pinned and checked; the card says so."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.integrations.cards import render_model_card
from hf_metaembed.modeling.remote_code_backbones import RemoteCodeBackboneError
from hf_metaembed.testing import make_tiny_remote_code_backbone, make_tiny_static_vectors

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from remote_code import run_without_the_library  # noqa: E402

TEXTS = ["the movie was good", "great film"]


@pytest.fixture(scope="module")
def own_code(tmp_path_factory) -> str:
    return make_tiny_remote_code_backbone(tmp_path_factory.mktemp("own_code") / "backbone")


@pytest.fixture(scope="module")
def fused(own_code, tiny_bert, tmp_path_factory):
    """A model over the own-code backbone and a BERT, its batch, its output and its saved folder."""
    backbones = [own_code, tiny_bert]
    model = MetaEmbedModel.from_backbones(
        backbones, fusion="dme", backbone_trust_remote_code=[True, False], backbone_code_revisions=["v1", None]
    ).eval()
    processor = MetaEmbedProcessor.from_backbones(backbones, backbone_trust_remote_code=[True, False])
    batch = processor(TEXTS)
    with torch.no_grad():
        pooled = model(**batch).pooler_output
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, batch, pooled, folder


def test_refused_at_once_without_the_flag_and_without_a_prompt(own_code):
    script = f"""
from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
for build in (MetaEmbedModel.from_backbones, MetaEmbedProcessor.from_backbones):
    try:
        build([{own_code!r}])
    except Exception as error:
        print(type(error).__name__, error)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, env=env
    )
    refusals = [line for line in done.stdout.splitlines() if line.startswith("RemoteCodeBackboneError")]
    assert len(refusals) == 2 and all("backbone_trust_remote_code=True" in line for line in refusals), done
    assert "[y/N]" not in done.stdout + done.stderr


def test_the_outer_flag_never_trusts_a_backbone(own_code):
    with pytest.raises((TypeError, RemoteCodeBackboneError)):
        MetaEmbedModel.from_backbones([own_code], trust_remote_code=True)
    with pytest.raises(RemoteCodeBackboneError, match="backbone 1 .* backbone_trust_remote_code"):
        MetaEmbedModel.from_backbones([own_code, own_code], backbone_trust_remote_code=[True, False])


def test_with_the_flag_it_fuses_runs_and_records_its_code(fused):
    model, _, pooled, folder = fused
    assert pooled.shape == (2, 16) and torch.isfinite(pooled).all()
    record = model.config.backbones[0]
    assert record["trust_remote_code"] and record["code_revision"] == "v1"
    assert record["code_files"] == ["modeling_tiny_remote.py"] and len(record["code_sha256"]) == 64
    assert not model.config.backbones[1]["trust_remote_code"]
    assert sorted(os.listdir(folder / "backbone_0_code")) == ["config.json", "modeling_tiny_remote.py"]
    reloaded = MetaEmbedModel.from_pretrained(folder).eval()
    assert reloaded.config.backbones[0]["code_revision"] == "v1"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**fused[1]).pooler_output, pooled, rtol=0, atol=1e-6)


def test_reloads_through_remote_code_without_the_library(fused, tmp_path):
    _, batch, pooled, folder = fused
    np.savez(tmp_path / "batch.npz", **{key: value.numpy() for key, value in batch.items()})
    np.save(tmp_path / "expected.npy", pooled.numpy())
    script = """
import sys
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

folder, inputs, expected = sys.argv[1:4]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
batch = {key: torch.from_numpy(value) for key, value in np.load(inputs).items()}
assert torch.equal(processor(["the movie was good", "great film"])["input_ids"], batch["input_ids"])
with torch.no_grad():
    pooled = model(**batch).pooler_output.numpy()
assert type(model.backbone_0).__name__ == "TinyRemoteModel", type(model.backbone_0)
np.testing.assert_allclose(pooled, np.load(expected), rtol=0, atol=1e-5)
print("OK")
"""
    done = run_without_the_library(script, [folder, tmp_path / "batch.npz", tmp_path / "expected.npy"], tmp_path)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


def test_changed_code_is_refused(fused, tmp_path):
    model, *_ = fused
    folder = tmp_path / "copy"
    model.save_pretrained(folder)
    code = folder / "backbone_0_code" / "modeling_tiny_remote.py"
    code.write_text(code.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    with pytest.raises(RemoteCodeBackboneError, match="backbone 0 .* not the code this model was built with"):
        MetaEmbedModel.from_pretrained(folder)


def test_the_card_says_it_runs_third_party_code(fused):
    card = str(render_model_card(fused[0]))
    assert "This model runs third-party code" in card and "code revision `v1`" in card


def test_the_feature_cache_fingerprints_the_backbones_code(fused, own_code, tmp_path):
    """The cache's fingerprint holds the own-code backbone's code digest (the one the saved model records), so a cache
    read with other code is told apart; a backbone without its own code keeps the fingerprint it always had."""
    import shutil

    from hf_metaembed.cache.fingerprint import fingerprint_differences, model_fingerprint

    model, _, _, folder = fused
    processor = MetaEmbedProcessor.from_backbones(
        [own_code, model.config.backbone_names[1]], backbone_trust_remote_code=[True, False]
    )
    fingerprint = model_fingerprint(model, processor)
    own, plain = fingerprint["backbones"]
    saved = MetaEmbedModel.from_pretrained(folder).config.backbones[0]["code_sha256"]
    assert own["code_sha256"] == saved and "code_sha256" not in plain
    edited = tmp_path / "edited"
    shutil.copytree(own_code, edited)
    code_file = next(name for name in os.listdir(edited) if name.startswith("modeling") and name.endswith(".py"))
    with open(edited / code_file, "a", encoding="utf-8") as handle:
        handle.write("\n# a changed line\n")
    other = MetaEmbedModel.from_backbones(
        [str(edited), model.config.backbone_names[1]], fusion="dme", backbone_trust_remote_code=[True, False]
    )
    changed = model_fingerprint(other, processor)
    assert changed["backbones"][0]["code_sha256"] != own["code_sha256"]
    assert any("code_sha256" in line for line in fingerprint_differences(fingerprint, changed))


def test_static_vector_tables_never_count_as_their_own_code(tmp_path):
    """A static vector table's folder has an auto_map (for loading without the library), but the library's own
    classes read it: trusting every backbone does not mark it as running third-party code."""
    table = make_tiny_static_vectors(tmp_path / "static")
    model = MetaEmbedModel.from_backbones([table], backbone_trust_remote_code=True)
    assert model.config.backbones[0]["trust_remote_code"] is False
