"""`hf-metaembed export onnx`: a two-backbone DME model (tiny ESM-style + T5-style encoders) as one ONNX graph, run
in onnxruntime on batches it was not traced with, against torch."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cli import main
from hf_metaembed.export import OnnxExportError, export_onnx

FRESH = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "G", "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSF", "GSHMVL", "KK"]


def _save(folder, model, backbones):
    model.save_pretrained(folder)
    MetaEmbedProcessor.from_backbones(backbones).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def backbones(tiny_esm, tiny_prott5) -> list[str]:
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, backbones):
    """(model folder, export folder, report) of a DME MetaEmbedModel exported with int8 quantisation too."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("onnx")
    folder = _save(root / "dme", MetaEmbedModel.from_backbones(backbones, fusion="dme"), backbones)
    report = export_onnx(folder, root / "dme-onnx", quantize="int8")
    return folder, root / "dme-onnx", report


def _run(path, processor, sequences):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = processor(sequences, return_tensors="np")
    names = [i.name for i in session.get_inputs()]
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {n: batch[n] for n in names})))


def test_onnxruntime_matches_torch_on_a_new_batch(exported):
    folder, out, report = exported
    assert report["max_abs_diff"] <= 1e-4
    processor = MetaEmbedProcessor.from_pretrained(str(out))  # the processor files were written beside the graph
    outputs = _run(out / "model.onnx", processor, FRESH)
    model = MetaEmbedModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = model(**processor(FRESH))
    np.testing.assert_allclose(outputs["embedding"], expected.pooler_output.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["unit_states"], expected.last_hidden_state.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["fusion_weights"], expected.fusion_weights.numpy(), atol=1e-4, rtol=0)
    single = _run(out / "model.onnx", processor, [FRESH[2]])["embedding"]  # batch of one, no padding at all
    np.testing.assert_allclose(single[0], expected.pooler_output[2].numpy(), atol=1e-4, rtol=0)


def test_graph_has_dynamic_axes_and_both_backbones(exported):
    _, out, report = exported
    graph = onnx.load(str(out / "model.onnx")).graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert inputs["input_ids"] == ["segments", 2, "tokens"]
    assert inputs["unit_mask"] == ["segments", "units"]
    assert json.loads((out / "onnx_export.json").read_text())["outputs"] == report["outputs"]
    names = {initializer.name for initializer in graph.initializer}
    assert any("backbone_0" in name for name in names) and any("backbone_1" in name for name in names)


def test_int8_graph_holds_int8_weights_and_stays_close(exported):
    folder, out, report = exported
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 8  # the backbones' and the fusion's matrix products read int8 weights
    assert any(node.op_type == "DynamicQuantizeLinear" for node in graph.node)
    processor = MetaEmbedProcessor.from_pretrained(str(out))
    quantized = _run(out / "model.int8.onnx", processor, FRESH)["embedding"]
    full = _run(out / "model.onnx", processor, FRESH)["embedding"]
    # int8 rounding: within 5% of the embedding's largest value at export, and nearly the same direction
    assert 0 < report["int8_max_abs_diff"] < 0.05 * float(np.abs(full).max())
    cosine = (quantized * full).sum(1) / np.linalg.norm(quantized, axis=1) / np.linalg.norm(full, axis=1)
    assert cosine.min() > 0.99


def test_classifier_head_is_exported(tmp_path, backbones):
    torch.manual_seed(1)
    model = MetaEmbedForSequenceClassification.from_backbones(backbones, fusion="dme", num_labels=3)
    folder = _save(tmp_path / "clf", model, backbones)
    report = export_onnx(folder, tmp_path / "clf-onnx")
    assert "logits" in report["outputs"]
    processor = MetaEmbedProcessor.from_pretrained(folder)
    logits = _run(tmp_path / "clf-onnx" / "model.onnx", processor, FRESH)["logits"]
    with torch.no_grad():
        expected = model.eval()(**processor(FRESH)).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_convbert_unit_encoder_is_exported(tmp_path, backbones):
    # ConvBERT groups segments by length in Python and unfolds its convolution windows: the export reads it over the
    # whole padded batch and gathers the windows with indices computed from the run-time length
    torch.manual_seed(2)
    model = MetaEmbedModel.from_backbones(backbones, fusion="dme", unit_encoder="convbert")
    folder = _save(tmp_path / "convbert", model, backbones)
    export_onnx(folder, tmp_path / "convbert-onnx")
    processor = MetaEmbedProcessor.from_pretrained(folder)
    outputs = _run(tmp_path / "convbert-onnx" / "model.onnx", processor, FRESH)
    with torch.no_grad():
        expected = model.eval()(**processor(FRESH))
    np.testing.assert_allclose(outputs["embedding"], expected.pooler_output.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["unit_states"], expected.last_hidden_state.numpy(), atol=1e-4, rtol=0)


def test_a_block_that_cannot_be_exported_is_named(tmp_path, backbones):
    windowed = MetaEmbedModel.from_backbones(backbones, fusion="dme", window_size=16)
    folder = _save(tmp_path / "windowed", windowed, backbones)
    with pytest.raises(OnnxExportError, match=r"backbone windowing \(window_size=16\) cannot be exported"):
        export_onnx(folder, tmp_path / "windowed-onnx")
    assert not (tmp_path / "windowed-onnx" / "model.onnx").exists()


def test_cli_prints_the_difference_and_names_a_block_it_cannot_export(exported, tmp_path, backbones, capsys):
    folder, _, _ = exported
    assert main(["export", "onnx", "--model", folder, "-o", str(tmp_path / "cli-onnx")]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.split("max abs difference ")[1].split()[0])
    assert difference <= 1e-4 and (tmp_path / "cli-onnx" / "model.onnx").is_file()
    windowed = _save(tmp_path / "windowed", MetaEmbedModel.from_backbones(backbones, window_size=16), backbones)
    assert main(["export", "onnx", "--model", windowed, "-o", str(tmp_path / "windowed-onnx")]) == 2
    assert "backbone windowing (window_size=16) cannot be exported" in capsys.readouterr().err
