"""The feature-extraction pipeline: fused embeddings and fusion weights equal the model's own outputs."""

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


def test_registered_task_returns_fused_embeddings(extractor, protein_folder):
    assert isinstance(extractor, MetaEmbedFeatureExtractionPipeline)
    result = extractor(SEQUENCES[0])
    assert set(result) == {"embedding", "unit_embeddings", "fusion_weights", "units"}
    assert result["units"] == list(SEQUENCES[0])
    reference = _reference(protein_folder, [SEQUENCES[0]])
    torch.testing.assert_close(torch.tensor(result["embedding"]), reference.pooler_output[0])
    units = len(SEQUENCES[0])
    torch.testing.assert_close(torch.tensor(result["unit_embeddings"]), reference.last_hidden_state[0, :units])
    weights = torch.tensor(result["fusion_weights"])
    assert weights.shape == (units, 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(units))  # softmax over the two backbones


def test_batches_match_single_inputs(extractor, protein_folder):
    batched = extractor(SEQUENCES, batch_size=2)
    assert [len(r["unit_embeddings"]) for r in batched] == [len(s) for s in SEQUENCES]
    reference = _reference(protein_folder, SEQUENCES)
    for index, (result, sequence) in enumerate(zip(batched, SEQUENCES)):
        alone = extractor(sequence, return_tensors=True)
        assert isinstance(alone["embedding"], torch.Tensor)
        torch.testing.assert_close(torch.tensor(result["embedding"]), alone["embedding"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(result["embedding"]), reference.pooler_output[index])
        torch.testing.assert_close(torch.tensor(result["fusion_weights"]), alone["fusion_weights"])
    # generators stream through too
    streamed = list(extractor((s for s in SEQUENCES), batch_size=2))
    assert [r["units"] for r in streamed] == [list(s) for s in SEQUENCES]


def test_text_model_with_head_uses_its_base_model(tiny_bert, tiny_roberta):
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_bert, tiny_roberta], num_labels=3).eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_bert, tiny_roberta])
    extractor = pipeline(
        "feature-extraction", model=model, processor=processor, pipeline_class=MetaEmbedFeatureExtractionPipeline
    )
    text = "the movie was surprisingly good"
    result = extractor(text)
    assert result["units"] == text.split()
    with torch.no_grad():
        reference = model.metaembed(**processor([text]))
    torch.testing.assert_close(torch.tensor(result["embedding"]), reference.pooler_output[0])
    torch.testing.assert_close(torch.tensor(result["fusion_weights"]), reference.fusion_weights[0, :5])


def test_pair_architecture_reports_each_segment(tiny_esm, tiny_prott5):
    torch.manual_seed(0)
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], architecture="hp").eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5], architecture="hp")
    extractor = pipeline(
        "feature-extraction", model=model, processor=processor, pipeline_class=MetaEmbedFeatureExtractionPipeline
    )
    complexes = [{"ligand": ["MKTA", "GSH"], "receptor": ["MVLSP"]}, {"ligand": ["ACD"], "receptor": ["EF", "GHIK"]}]
    results = extractor(complexes, batch_size=2)
    layout = [[(s["side"], len(s["unit_embeddings"])) for s in r["segments"]] for r in results]
    assert layout == [
        [("ligand", 4), ("ligand", 3), ("receptor", 5)],
        [("ligand", 3), ("receptor", 2), ("receptor", 4)],
    ]
    with torch.no_grad():
        reference = model(
            **processor(ligand=[c["ligand"] for c in complexes], receptor=[c["receptor"] for c in complexes])
        )
    for index, result in enumerate(results):
        torch.testing.assert_close(torch.tensor(result["embedding"]), reference.pooler_output[index])
    with pytest.raises(TypeError, match="reads complexes"):
        extractor("MKTA")


def test_sequence_level_gives_one_weight_per_backbone(tiny_esm, tiny_prott5):
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], level="sequence")
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5])
    extractor = MetaEmbedFeatureExtractionPipeline(model=model, processor=processor)
    result = extractor("MKTAYIAK")
    assert "unit_embeddings" not in result and len(result["fusion_weights"]) == 2
    assert sum(result["fusion_weights"]) == pytest.approx(1.0)


def test_clear_errors(tiny_esm, tiny_prott5, extractor):
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5])
    model.name_or_path = ""
    with pytest.raises(ValueError, match="pass processor="):
        MetaEmbedFeatureExtractionPipeline(model=model)
    with pytest.raises(TypeError, match="reads plain sequences"):
        extractor({"ligand": ["MKT"], "receptor": ["GSH"]})


def test_empty_input_gives_empty_results(extractor):
    """transformers' own pipelines fail with an IndexError on []; ours return no results, as for any shorter list."""
    assert extractor([]) == []
    assert extractor(()) == []
    assert extractor([], batch_size=4) == []
