"""The feature-extraction pipeline in transformers' convention (nested lists shaped as the model's output for one
input), pooled vectors and fusion weights on request, all equal to the model's own outputs."""

import pytest
import torch
from transformers import pipeline

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.integrations.pipelines import TASK, MetaEmbedFeatureExtractionPipeline

SEQUENCES = ["MKTAYIAKQR", "GSHMLV", "ACDEFGHIKLMN"]


@pytest.fixture(scope="module")
def protein_folder(tiny_esm, tiny_prott5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("protein_model")
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def extractor(protein_folder):
    return pipeline(TASK, model=str(protein_folder))


def _reference(folder, sequences):
    model = MetaEmbedModel.from_pretrained(folder).eval()
    processor = MetaEmbedProcessor.from_pretrained(folder)
    with torch.no_grad():
        return model(**processor(sequences))


def test_registered_task_returns_fused_unit_states_as_transformers_does(extractor, protein_folder):
    assert isinstance(extractor, MetaEmbedFeatureExtractionPipeline)
    units = len(SEQUENCES[0])
    reference = _reference(protein_folder, [SEQUENCES[0]])
    result = extractor(SEQUENCES[0])
    # transformers' convention: nested lists shaped as the model's output for a batch of this one input
    assert isinstance(result, list) and isinstance(result[0][0][0], float)
    torch.testing.assert_close(torch.tensor(result), reference.last_hidden_state[:, :units])
    as_tensor = extractor(SEQUENCES[0], return_tensors=True)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (1, units, reference.last_hidden_state.shape[-1])
    torch.testing.assert_close(as_tensor, torch.tensor(result))
    pooled = extractor(SEQUENCES[0], pooled=True)
    torch.testing.assert_close(torch.tensor(pooled), reference.pooler_output)


def test_fusion_weights_and_units_on_request(extractor, protein_folder):
    reference = _reference(protein_folder, [SEQUENCES[0]])
    units = len(SEQUENCES[0])
    result = extractor(SEQUENCES[0], return_fusion_weights=True)
    assert set(result) == {"features", "fusion_weights", "units"}
    assert result["units"] == list(SEQUENCES[0])
    torch.testing.assert_close(torch.tensor(result["features"]), reference.last_hidden_state[:, :units])
    weights = torch.tensor(result["fusion_weights"])
    assert weights.shape == (1, units, 2)
    torch.testing.assert_close(weights, reference.fusion_weights[:, :units])
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, units))  # softmax over the two backbones
    both = extractor(SEQUENCES[0], pooled=True, return_fusion_weights=True, return_tensors=True)
    torch.testing.assert_close(both["features"], reference.pooler_output)
    torch.testing.assert_close(both["fusion_weights"], weights)


def test_batches_match_single_inputs(extractor, protein_folder):
    batched = extractor(SEQUENCES, batch_size=2)
    # padding never reaches a result: each keeps its own units, whatever the batch
    assert [torch.tensor(r).shape[:2] for r in batched] == [(1, len(s)) for s in SEQUENCES]
    reference = _reference(protein_folder, SEQUENCES)
    pooled = extractor(SEQUENCES, batch_size=2, pooled=True)
    for index, (result, sequence) in enumerate(zip(batched, SEQUENCES)):
        alone = extractor(sequence, return_tensors=True)
        torch.testing.assert_close(torch.tensor(result), alone, rtol=1e-5, atol=1e-6)
        units = len(sequence)
        torch.testing.assert_close(torch.tensor(result)[0], reference.last_hidden_state[index, :units])
        torch.testing.assert_close(torch.tensor(pooled[index])[0], reference.pooler_output[index])
    # generators stream through too
    streamed = list(extractor((s for s in SEQUENCES), batch_size=2, return_fusion_weights=True))
    assert [r["units"] for r in streamed] == [list(s) for s in SEQUENCES]


def test_text_model_with_head_uses_its_base_model(tiny_bert, tiny_roberta):
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_bert, tiny_roberta], num_labels=3).eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_bert, tiny_roberta])
    extractor = pipeline(
        "feature-extraction", model=model, processor=processor, pipeline_class=MetaEmbedFeatureExtractionPipeline
    )
    text = "the movie was surprisingly good"
    result = extractor(text, pooled=True, return_fusion_weights=True)
    assert result["units"] == text.split()
    with torch.no_grad():
        reference = model.metaembed(**processor([text]))
    torch.testing.assert_close(torch.tensor(result["features"]), reference.pooler_output)
    torch.testing.assert_close(torch.tensor(result["fusion_weights"]), reference.fusion_weights[:, :5])


def test_pair_architecture_reports_each_segment(tiny_esm, tiny_prott5):
    torch.manual_seed(0)
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], architecture="hp").eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5], architecture="hp")
    extractor = pipeline(
        "feature-extraction", model=model, processor=processor, pipeline_class=MetaEmbedFeatureExtractionPipeline
    )
    complexes = [{"ligand": ["MKTA", "GSH"], "receptor": ["MVLSP"]}, {"ligand": ["ACD"], "receptor": ["EF", "GHIK"]}]
    results = extractor(complexes, batch_size=2, return_fusion_weights=True)
    assert [r["sides"] for r in results] == [["ligand", "ligand", "receptor"], ["ligand", "receptor", "receptor"]]
    assert [[len(rows) for rows in r["features"]] for r in results] == [[4, 3, 5], [3, 2, 4]]
    assert [[len(rows) for rows in r["fusion_weights"]] for r in results] == [[4, 3, 5], [3, 2, 4]]
    batch = processor(ligand=[c["ligand"] for c in complexes], receptor=[c["receptor"] for c in complexes])
    with torch.no_grad():
        reference = model(**batch)
    for segment, rows in enumerate(results[0]["features"]):
        torch.testing.assert_close(torch.tensor(rows), reference.last_hidden_state[segment, : len(rows)])
    for index, pooled in enumerate(extractor(complexes, pooled=True)):
        torch.testing.assert_close(torch.tensor(pooled), reference.pooler_output[index : index + 1])
    segments = extractor(complexes[0], return_tensors=True)
    dim = reference.last_hidden_state.shape[-1]
    assert [tuple(rows.shape) for rows in segments] == [(4, dim), (3, dim), (5, dim)]
    with pytest.raises(TypeError, match="reads complexes"):
        extractor("MKTA")


def test_sequence_level_gives_one_vector_and_one_weight_per_backbone(tiny_esm, tiny_prott5):
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], level="sequence").eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5])
    extractor = MetaEmbedFeatureExtractionPipeline(model=model, processor=processor)
    result = extractor("MKTAYIAK", return_fusion_weights=True, return_tensors=True)
    with torch.no_grad():
        reference = model(**processor(["MKTAYIAK"]))
    assert result["features"].shape == (1, 1, reference.last_hidden_state.shape[-1])  # the fused sequence vector
    torch.testing.assert_close(result["features"], reference.last_hidden_state)
    assert result["fusion_weights"].shape == (1, 1, 2)
    assert float(result["fusion_weights"].sum()) == pytest.approx(1.0)


def test_clear_errors(tiny_esm, tiny_prott5, extractor):
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5])
    model.name_or_path = ""
    with pytest.raises(ValueError, match="pass processor="):
        MetaEmbedFeatureExtractionPipeline(model=model)
    with pytest.raises(TypeError, match="reads plain sequences"):
        extractor({"ligand": ["MKT"], "receptor": ["GSH"]})
    with pytest.raises(TypeError, match=r"unknown feature-extraction argument\(s\) \['pool'\].*pooled"):
        extractor("MKT", pool=True)


def test_empty_input_gives_empty_results(extractor):
    """transformers' own pipelines fail with an IndexError on []; ours return no results, as for any shorter list."""
    assert extractor([]) == []
    assert extractor(()) == []
    assert extractor([], batch_size=4) == []
