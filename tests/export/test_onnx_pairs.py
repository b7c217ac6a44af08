"""`export onnx` of the pair architectures: every registered one (sc, ec, hp, pad, perceiver) over two tiny backbones
(ESM-style + T5-style), traced on the exporter's own pair batch and run in onnxruntime on batches of another number
of complexes and of chains per side, against torch."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.export import export_onnx
from hf_metaembed.export.onnx_export import PAIR_INPUTS, example_inputs
from hf_metaembed.modeling.pairing import PAIRINGS

PAIR_ARCHITECTURES = [name for name in PAIRINGS.names() if PAIRINGS.get_class(name).is_pair]
CHAINS = ["MKTAYIAKQRQISF", "GSHMVLSPADKT", "MVLSPADKTNVKAAWGKVGA", "KK", "AWGKV"]
# five complexes, up to four chains on a side (the export batch has two complexes of at most two chains per side)
LIGAND = [[CHAINS[0]], [CHAINS[1], CHAINS[3], CHAINS[4], CHAINS[2]], [CHAINS[2]], [CHAINS[4], CHAINS[0]], [CHAINS[3]]]
RECEPTOR = [[CHAINS[2], CHAINS[1]], [CHAINS[0]], [CHAINS[3], CHAINS[4], CHAINS[1]], [CHAINS[1]], [CHAINS[0]]]
# settings that route each architecture's segments through more of the graph: ConvBERT per segment or over the
# joined sides (ec), one unit encoder per side (hp, pad), separate attention or perceivers per side; then ec's
# pooled mode and the study's presets
WIDER = {
    "sc": {"unit_encoder": "convbert"},
    "ec": {"unit_encoder": "convbert"},
    "hp": {"unit_encoder": "convbert", "shared_unit_encoder": False, "side_combine": "add"},
    "pad": {"unit_encoder": "convbert", "shared_unit_encoder": False, "pad_shared_attention": False},
    "perceiver": {"perceiver_shared": False, "perceiver_gated": True},
}
OTHERS = {
    "ec-pooled": {"ec_mode": "pooled"},
    "hp-paper": {"preset": "paper"},
    "pad-paper-2025-03-09": {"preset": "paper-2025-03-09"},
}
CASES = (
    [pytest.param(name, {}, id=name) for name in PAIR_ARCHITECTURES]
    + [pytest.param(name, settings, id=f"{name}-wider") for name, settings in WIDER.items()]
    + [pytest.param(case.split("-")[0], settings, id=case) for case, settings in OTHERS.items()]
)


@pytest.fixture(scope="module")
def backbones(tiny_esm, tiny_prott5) -> list[str]:
    return [tiny_esm, tiny_prott5]


def _chain_counts(batch) -> tuple[int, int]:
    """(complexes, most segments of one complex's side) of a processor batch."""
    group = 2 * batch["segment_sample_index"].long() + batch["segment_side_index"].long()
    return int(batch["segment_sample_index"].max()) + 1, int(torch.bincount(group).max())


def _export(root, backbones, architecture, settings):
    torch.manual_seed(0)
    model = MetaEmbedModel.from_backbones(backbones, fusion="dme", architecture=architecture, **settings).eval()
    folder = root / "model"
    model.save_pretrained(folder)
    processor = MetaEmbedProcessor.from_backbones(backbones, architecture=architecture)
    processor.save_pretrained(folder)
    report = export_onnx(folder, root / "onnx")
    return model, processor, report, root / "onnx" / "model.onnx"


def _onnx_outputs(path, batch) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_the_exporter_registry_covers_the_brief():
    assert {"sc", "ec", "hp", "pad", "perceiver"} <= set(PAIR_ARCHITECTURES)


@pytest.mark.parametrize(("architecture", "settings"), CASES)
def test_pair_architecture_exports_and_follows_other_batches(tmp_path, backbones, architecture, settings):
    model, processor, report, path = _export(tmp_path, backbones, architecture, settings)
    assert report["max_abs_diff"] <= 1e-4 and report["inputs"][-2:] == list(PAIR_INPUTS)
    graph = onnx.load(str(path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["segment_sample_index"] == ["segments"] and dims["segment_side_index"] == ["segments"]
    assert [d.dim_param for d in graph.output[0].type.tensor_type.shape.dim][0] == "samples"

    traced = example_inputs(processor, architecture)
    new = processor(ligand=LIGAND, receptor=RECEPTOR, return_tensors="pt")
    one = processor(ligand=LIGAND[1:2], receptor=RECEPTOR[1:2], return_tensors="pt")  # one complex
    (traced_samples, traced_chains), (samples, chains) = _chain_counts(traced), _chain_counts(new)
    assert samples != traced_samples and new["input_ids"].shape[0] != traced["input_ids"].shape[0]
    if model.pairing.layout == "chains":  # one segment per chain: the chain count per side changes too
        assert chains > traced_chains
    for batch in (new, one):
        got = _onnx_outputs(path, batch)
        with torch.no_grad():
            want = model(**batch)
        assert got["embedding"].shape == (int(batch["segment_sample_index"].max()) + 1, model.pairing.output_dim)
        np.testing.assert_allclose(got["embedding"], want.pooler_output.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got["unit_states"], want.last_hidden_state.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got["fusion_weights"], want.fusion_weights.numpy(), atol=1e-4, rtol=0)


def test_pair_architecture_at_sequence_level_exports(tmp_path, backbones):
    model, processor, _, path = _export(tmp_path, backbones, "hp", {"level": "sequence"})
    batch = processor(ligand=LIGAND, receptor=RECEPTOR, return_tensors="pt")
    got = _onnx_outputs(path, batch)
    with torch.no_grad():
        want = model(**batch)
    np.testing.assert_allclose(got["embedding"], want.pooler_output.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["fusion_weights"], want.fusion_weights.numpy(), atol=1e-4, rtol=0)


def test_plain_example_sequences_are_refused_for_a_pair_architecture(tmp_path, backbones):
    model = MetaEmbedModel.from_backbones(backbones, architecture="sc")
    model.save_pretrained(tmp_path / "sc")
    MetaEmbedProcessor.from_backbones(backbones, architecture="sc").save_pretrained(tmp_path / "sc")
    with pytest.raises(ValueError, match="architecture 'sc' reads ligand/receptor complexes"):
        export_onnx(tmp_path / "sc", tmp_path / "sc-onnx", examples=["MKTAYIAK", "GSHM"])
