"""`model.push_to_hub(repo)`, as a transformers user calls it, uploads the model, its code, the processor and a card
whose `pipeline_tag` is a task the uploaded folder serves."""

import logging
from unittest import mock

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from transformers import pipeline

from hf_metaembed import (
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedProcessor,
)
from hf_metaembed.integrations.cards import save_for_hub


def _push(model, repo_id: str, **kwargs) -> dict[str, bytes]:
    """Run `model.push_to_hub` against a mocked Hub; return the uploaded files."""
    uploads = {}

    def create_commit(self, repo_id, operations, **commit_kwargs):
        for operation in operations:
            with open(operation.path_or_fileobj, "rb") as handle:
                uploads[operation.path_in_repo] = handle.read()
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/1", commit_message="", commit_description="", oid="1"
        )

    with (
        mock.patch.object(HfApi, "create_repo", return_value=RepoUrl(f"https://huggingface.co/{repo_id}")),
        mock.patch.object(HfApi, "create_commit", autospec=True, side_effect=create_commit),
    ):
        model.push_to_hub(repo_id, **kwargs)
    return uploads


def test_push_to_hub_of_a_loaded_model_uploads_its_processor_and_card(tiny_bert, tiny_roberta, tmp_path):
    backbones = [tiny_bert, tiny_roberta]
    MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=2).save_pretrained(tmp_path)
    MetaEmbedProcessor.from_backbones(backbones).save_pretrained(tmp_path)
    model = MetaEmbedForSequenceClassification.from_pretrained(tmp_path)
    uploads = _push(model, "me/text-classifier")
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer_config.json",
        "modules.json",
        "pipeline_metaembed.py",
        "sentence_metaembed.py",
        "processing_metaembed.py",
    }
    assert expected <= set(uploads)
    assert any(name.startswith("tokenizer_1/") for name in uploads)
    card = ModelCard(uploads["README.md"].decode())
    assert card.data.pipeline_tag == "text-classification"
    assert 'pipeline("text-classification", model="me/text-classifier", trust_remote_code=True)' in card.text


def test_push_to_hub_without_any_processor_says_so(tiny_esm, caplog):
    model = MetaEmbedModel.from_backbones([tiny_esm])
    with caplog.at_level(logging.WARNING):
        uploads = _push(model, "me/protein")
    assert "processor_config.json" not in uploads and "README.md" in uploads
    assert "pass processor=processor to upload it too" in caplog.text


@pytest.mark.parametrize(
    ("model_class", "kwargs", "tag", "inputs"),
    [
        (MetaEmbedModel, {}, "feature-extraction", "MKTAYIAK"),
        (MetaEmbedForSequenceClassification, {"num_labels": 3}, "text-classification", "MKTAYIAK"),
        (MetaEmbedForTokenClassification, {"num_labels": 3}, "feature-extraction", "MKTAYIAK"),
        (MetaEmbedForSequenceClassification, {"num_labels": 1, "architecture": "pad"}, "text-classification",
         {"ligand": ["MKTAYIAK"], "receptor": ["GSHMV", "WWP"]}),
    ],
)  # fmt: skip
def test_the_cards_pipeline_tag_is_a_task_the_folder_serves(tiny_esm, tmp_path, model_class, kwargs, tag, inputs):
    torch.manual_seed(0)
    model = model_class.from_backbones([tiny_esm], **kwargs)
    processor = MetaEmbedProcessor.from_backbones([tiny_esm], architecture=kwargs.get("architecture", "single"))
    save_for_hub(model, processor, tmp_path, repo_id="me/model")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == tag
    served = pipeline(card.data.pipeline_tag, model=str(tmp_path), trust_remote_code=True)
    result = served(inputs)
    if tag == "text-classification":  # a list for a string input, the dict itself for a dict input (as for pairs)
        assert isinstance((result[0] if isinstance(result, list) else result)["score"], float)
    else:
        assert torch.tensor(result).shape == (1, len(inputs), model.base_model.fusion.output_dim)
        assert torch.tensor(served(inputs, pooled=True)).shape == (1, model.base_model.pairing.output_dim)
