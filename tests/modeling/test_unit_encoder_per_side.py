"""A unit encoder per side (`shared_unit_encoder=False`, the study's reference's `shared_convbert: false`): ligand
segments go through the ligand's ConvBERT and receptor segments through the receptor's, with weights of their own,
saved, reloaded and reloaded through remote code without the library; the shared default is unchanged."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from remote_code import run_without_the_library  # noqa: E402

LIGANDS = [["MKTAYIAKQRQISF", "GSHMLE"], ["MVLSPADKTN"]]
RECEPTORS = [["MKVLAAGIVGLPNV"], ["GGSAAKWEEL", "MKTWAKLHEVKA"]]


def build(backbone: str, architecture: str, **settings) -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(
        [backbone], fusion="concat", architecture=architecture, unit_encoder="convbert", num_labels=1, **settings
    ).eval()


def batch_for(backbone: str, architecture: str) -> dict:
    processor = MetaEmbedProcessor.from_backbones([backbone], architecture=architecture)
    return processor(ligand=LIGANDS, receptor=RECEPTORS, return_tensors="pt")


@pytest.fixture(scope="module")
def separate(tiny_esm):
    """An hp model with a ConvBERT per side (built under the reference's name), its batch and outputs."""
    model = build(tiny_esm, "hp", shared_convbert=False)
    batch = batch_for(tiny_esm, "hp")
    with torch.no_grad():
        base = model.metaembed(**batch, output_backbone_states=True)
        logits = model(**batch).logits
    return model, batch, base, logits


@pytest.mark.parametrize("architecture", ["hp", "pad"])
def test_each_side_goes_through_its_own_encoder(tiny_esm, architecture):
    model = build(tiny_esm, architecture, shared_unit_encoder=False)
    batch = batch_for(tiny_esm, architecture)
    encoder = model.metaembed.unit_encoder
    receptor = batch["segment_side_index"] == 1
    with torch.no_grad():
        out = model.metaembed(**batch, output_backbone_states=True)
        fused, _ = model.metaembed.fusion(list(out.backbone_states), out.unit_mask)
        mask = out.unit_mask
        ligand_alone = encoder.refine(fused[~receptor], mask[~receptor])
        receptor_alone = encoder.receptor_encoder.refine(fused[receptor], mask[receptor])
        receptor_by_ligand_encoder = encoder.refine(fused[receptor], mask[receptor])
    torch.testing.assert_close(out.last_hidden_state[~receptor], ligand_alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.last_hidden_state[receptor], receptor_alone, atol=1e-6, rtol=0)
    assert not torch.allclose(receptor_alone, receptor_by_ligand_encoder, atol=1e-3)


def test_the_two_encoders_have_their_own_weights_and_the_default_shares_one(tiny_esm, separate):
    model = separate[0]
    encoder = model.metaembed.unit_encoder
    assert model.config.shared_unit_encoder is False
    ligand = {name: p for name, p in encoder.named_parameters() if not name.startswith("receptor_encoder.")}
    receptor = dict(encoder.receptor_encoder.named_parameters())
    assert ligand.keys() == receptor.keys() and len(ligand) > 10
    assert all(p.data_ptr() != receptor[name].data_ptr() for name, p in ligand.items())
    assert not torch.equal(ligand["query.weight"], receptor["query.weight"])
    shared = build(tiny_esm, "hp")
    assert shared.config.shared_unit_encoder is True and not hasattr(shared.metaembed.unit_encoder, "receptor_encoder")
    # the shared model's keys are the separate model's ligand keys: a shared checkpoint reads as before
    shared_keys = {k for k in shared.state_dict() if "unit_encoder." in k}
    separate_keys = {k for k in model.state_dict() if "unit_encoder." in k}
    assert shared_keys < separate_keys
    assert {k for k in separate_keys - shared_keys} == {
        k.replace("unit_encoder.", "unit_encoder.receptor_encoder.") for k in shared_keys
    }


def test_saves_and_reloads(separate, tmp_path):
    model, batch, _, logits = separate
    model.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["shared_unit_encoder"] is False and "shared_convbert" not in stored
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    assert hasattr(reloaded.metaembed.unit_encoder, "receptor_encoder")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits, atol=1e-6, rtol=0)


def test_reloads_through_remote_code_without_the_library(separate, tmp_path):
    model, batch, base, _ = separate
    folder = tmp_path / "model"
    model.metaembed.save_pretrained(folder)
    np.savez(tmp_path / "batch.npz", **{key: value.numpy() for key, value in batch.items()})
    np.save(tmp_path / "expected.npy", base.pooler_output.numpy())
    script = """
import sys
import numpy as np
import torch
from transformers import AutoModel

folder, inputs, expected = sys.argv[1:4]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert model.config.shared_unit_encoder is False
assert type(model.unit_encoder.receptor_encoder).__name__ == "ConvBertUnitEncoder"
batch = {key: torch.from_numpy(value) for key, value in np.load(inputs).items()}
with torch.no_grad():
    pooled = model(**batch).pooler_output.numpy()
np.testing.assert_allclose(pooled, np.load(expected), rtol=0, atol=1e-5)
print("OK")
"""
    done = run_without_the_library(script, [folder, tmp_path / "batch.npz", tmp_path / "expected.npy"], tmp_path)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize(
    ("architecture", "reads"),
    [
        ("single", "single sequences"),
        ("sc", "each complex joined into one input"),
        ("ec", "the two sides joined into one sequence"),
    ],
)
def test_architectures_without_separate_sides_refuse_it(architecture, reads):
    with pytest.raises(ValueError, match=f"shared_unit_encoder=False .* architecture '{architecture}' .* {reads}"):
        MetaEmbedConfig(architecture=architecture, unit_encoder="convbert", shared_unit_encoder=False)


def test_ec_reading_each_side_alone_takes_it_and_the_two_names_must_agree():
    config = MetaEmbedConfig(architecture="ec", ec_encode_joined=False, unit_encoder="convbert", shared_convbert=False)
    assert config.shared_unit_encoder is False
    with pytest.raises(ValueError, match="shared_convbert=False and shared_unit_encoder=True name the same setting"):
        MetaEmbedConfig(architecture="hp", shared_convbert=False, shared_unit_encoder=True)
