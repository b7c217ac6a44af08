"""Model cards (rendered, validated by huggingface_hub, reloaded) and Hub uploads (offline, upload calls patched)."""

import json
import os
from unittest import mock

import pytest
import torch
from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, RepoUrl
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoProcessor

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedProcessor,
)
from hf_metaembed.integrations.cards import (
    eval_results_from_metrics,
    hub_base_models,
    push_to_hub,
    render_model_card,
    save_for_hub,
)
from hf_metaembed.modeling.registry import REGISTRIES

ESM_ID = "facebook/esm2_t6_8M_UR50D"


@pytest.fixture(scope="module")
def protein(tiny_esm, tiny_prott5):
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        [tiny_esm, tiny_prott5], num_labels=1, problem_type="regression", fusion="dme", gating="sigmoid"
    )
    # pretend the first backbone came from the Hub, as a real model's would
    model.config.backbone_names = [ESM_ID, tiny_prott5]
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5])
    return model, processor


def test_hub_base_models_keeps_hub_ids_only(tmp_path):
    names = [ESM_ID, str(tmp_path), "./local/esm", None, "Rostlab/prot_t5_xl_half_uniref50-enc", ESM_ID]
    assert hub_base_models(names) == [ESM_ID, "Rostlab/prot_t5_xl_half_uniref50-enc"]


def test_eval_results_from_trainer_metrics():
    metrics = {
        "eval_loss": 0.5,
        "eval_spearman": 0.71,
        "eval_runtime": 3.2,
        "eval_samples_per_second": 9.0,
        "epoch": 3,
    }
    results = eval_results_from_metrics(metrics, "PPB-Affinity", dataset_split="test", task_type="text-classification")
    assert [(r.metric_type, r.metric_value) for r in results] == [("loss", 0.5), ("spearman", 0.71)]
    assert all(r.dataset_name == "PPB-Affinity" and r.dataset_split == "test" for r in results)
    with pytest.raises(ValueError, match="no metric values"):
        eval_results_from_metrics({"eval_runtime": 1.0}, "x")


def test_card_metadata_validates_and_reloads(protein, tmp_path):
    model, _ = protein
    card = render_model_card(
        model,
        repo_id="me/esm-prott5-dme",
        eval_results={"eval_spearman": 0.71, "eval_rmse": 1.25, "eval_runtime": 2.0},
        eval_dataset="PPB-Affinity",
        license="apache-2.0",
        tags=["binding-affinity"],
        description="Predicts binding affinity (pKd) of protein complexes.",
    )
    path = tmp_path / "README.md"
    card.save(path)
    # ModelCard parses and validates the metadata on load (model-index included); ignore nothing
    loaded = ModelCard.load(path)
    data = loaded.data
    assert data.base_model == [ESM_ID]  # the local ProtT5 folder is not a Hub id
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-classification"
    assert data.license == "apache-2.0"
    assert {"hf_metaembed", "meta-embeddings", "dme", "protein", "binding-affinity"} <= set(data.tags)
    assert data.metrics == ["rmse", "spearman"]
    assert data.model_name == "esm-prott5-dme"
    assert {(r.metric_type, r.metric_value, r.dataset_name) for r in data.eval_results} == {
        ("spearman", 0.71, "PPB-Affinity"),
        ("rmse", 1.25, "PPB-Affinity"),
    }
    assert data.to_dict()["model-index"][0]["results"][0]["task"]["type"] == "text-classification"
    text = loaded.text
    assert "Predicts binding affinity" in text
    assert f"[{ESM_ID}](https://huggingface.co/{ESM_ID})" in text
    assert "| `gating` | `sigmoid` |" in text and "| `problem_type` | `regression` |" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("me/esm-prott5-dme", trust_remote_code=True)' in text
    assert 'AutoProcessor.from_pretrained("me/esm-prott5-dme", trust_remote_code=True)' in text
    assert "| PPB-Affinity |  | spearman | 0.71 |" in text
    assert "### fusion: `dme`" in text and "Dynamic meta-embeddings" in text
    # rendering is deterministic: the same inputs give the same card
    again = render_model_card(
        model,
        repo_id="me/esm-prott5-dme",
        eval_results=data.eval_results,
        license="apache-2.0",
        tags=["binding-affinity"],
        description="Predicts binding affinity (pKd) of protein complexes.",
    )
    assert again.data.to_dict() == data.to_dict()


def test_card_follows_model_kind(tiny_bert, tiny_esm, tiny_prott5):
    text_model = MetaEmbedModel.from_backbones([tiny_bert], fusion="mean")
    card = render_model_card(text_model)
    assert card.data.pipeline_tag == "feature-extraction"
    assert "protein" not in card.data.tags and card.data.base_model is None and card.data.eval_results is None
    assert "outputs.pooler_output" in card.text and "AutoModel.from_pretrained" in card.text
    assert "No evaluation results" in card.text and "per word" in card.text

    pair = MetaEmbedForSequenceClassification.from_backbones(
        [tiny_esm, tiny_prott5], architecture="hp", side_combine="add", num_labels=1
    )
    result = EvalResult(
        task_type="text-classification",
        dataset_type="ppb",
        dataset_name="PPB",
        metric_type="pearsonr",
        metric_value=0.5,
    )
    card = render_model_card(pair, eval_results=[result])
    assert "pair-architecture-hp" in card.data.tags
    assert "| `side_combine` | `add` |" in card.text and "| `chain_pooling` | `attention` |" in card.text
    assert "processor(ligand=[" in card.text
    with pytest.raises(ValueError, match="eval_dataset"):
        render_model_card(pair, eval_results={"eval_spearman": 0.3})


# one card per registered block: that block selected, every other stage at its default
EVERY_BLOCK = [(registry.field, name) for registry in REGISTRIES for name in registry]


def _block_is_described(text: str, config: MetaEmbedConfig, stage: str) -> bool:
    """Whether the card names the block `config` selects for `stage`, says what it does and lists its settings."""
    block = config.blocks()[stage]
    description = block.card_text or block.__doc__.strip().splitlines()[0]
    heading = f"### {stage}: `{getattr(config, stage)}`"
    rows = [f"| `{field}` | `{value}` |" for field, value in block.settings(config).items()]
    return heading in text and description[1:].rstrip(".") in text and all(row in text for row in rows)


@pytest.mark.parametrize(("field", "name"), EVERY_BLOCK)
def test_card_describes_every_block_the_model_runs(field, name, tiny_esm):
    esm = AutoConfig.from_pretrained(tiny_esm).to_dict()
    config = MetaEmbedConfig(backbone_configs=[esm], num_labels=1, problem_type="regression", **{field: name})
    model = MetaEmbedForSequenceClassification(config)
    text = render_model_card(model).text
    assert list(config.blocks()) == ["fusion", "unit_encoder", "pooling", "architecture", "head", "loss"]
    for stage in config.blocks():
        assert _block_is_described(text, config, stage), f"{stage} ({getattr(config, stage)}) is not on the card"
    assert text.count("\n### ") == len(config.blocks())  # one section per block, nothing else


def test_card_lists_the_blocks_a_model_kind_runs_with_their_settings(tiny_esm):
    esm = AutoConfig.from_pretrained(tiny_esm).to_dict()
    settings = dict(architecture="pad", unit_encoder="convbert", convbert_num_heads=4, pad_ffn="residual")
    config = MetaEmbedConfig(backbone_configs=[esm], backbone_unit_types=["residue"], num_labels=3, **settings)
    text = render_model_card(MetaEmbedForSequenceClassification(config)).text
    assert "| `convbert_num_heads` | `4` |" in text and "| `pad_ffn` | `residual` |" in text
    assert "refined per residue by a **convbert** unit encoder" in text
    assert "### head: `linear`" in text and "### loss:" not in text  # classification: the loss follows problem_type
    headless = render_model_card(MetaEmbedModel(config)).text
    assert "### architecture: `pad`" in headless and "### head:" not in headless and "### loss:" not in headless
    none = MetaEmbedConfig(backbone_configs=[esm], num_labels=2)
    per_unit = render_model_card(MetaEmbedForTokenClassification(none)).text
    assert "### unit_encoder: `none`" in per_unit and "### loss:" not in per_unit
    assert _block_is_described(per_unit, none, "unit_encoder")  # no card text: its docstring's first line


def test_save_for_hub_writes_a_loadable_repo(protein, tmp_path):
    model, processor = protein
    files = save_for_hub(model, processor, tmp_path, eval_results={"spearman": 0.7}, eval_dataset="dev")
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_metaembed.py",
        "modeling_metaembed.py",
        "processing_metaembed.py",
        "processor_config.json",
        "backbones.py",
        "fusion.py",
    }
    assert expected <= set(files)
    assert any(name.startswith("tokenizer_0/") for name in files) and any(
        name.startswith("tokenizer_1/") for name in files
    )
    # every sibling module a code file imports was shipped too
    shipped = {name for name in files if name.endswith(".py")}
    for name in shipped:
        source = (tmp_path / name).read_text()
        for line in source.splitlines():
            if line.startswith("from .") and " import " in line:
                assert line.split()[1][1:] + ".py" in shipped, f"{name} imports {line!r} that was not shipped"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_metaembed.")
    assert ModelCard.load(tmp_path / "README.md").data.eval_results[0].metric_value == 0.7

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    batch = reloaded_processor(["MKTAYIAK", "GSH"])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**processor(["MKTAYIAK", "GSH"])).logits)


def test_push_to_hub_uploads_code_processor_and_card(protein, tmp_path):
    model, processor = protein
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    uploads = {}

    def fake_create_commit(self, repo_id, operations, **kwargs):
        for operation in operations:
            with open(operation.path_or_fileobj, "rb") as handle:
                uploads[operation.path_in_repo] = handle.read()
        uploads["__kwargs__"] = kwargs
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/1234",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid="1234",
        )

    with (
        mock.patch.object(HfApi, "create_repo", return_value=RepoUrl("https://huggingface.co/me/esm-prott5")) as repo,
        mock.patch.object(HfApi, "create_commit", autospec=True, side_effect=fake_create_commit),
    ):
        info = push_to_hub(model, processor, "esm-prott5", private=True, license="mit")
    assert repo.call_args.kwargs["exist_ok"] and repo.call_args.kwargs["private"]
    assert info.oid == "1234"
    kwargs = uploads.pop("__kwargs__")
    assert kwargs["create_pr"] is False and "MetaEmbed" in kwargs["commit_message"]
    shipped = {"README.md", "config.json", "model.safetensors", "modeling_metaembed.py", "processor_config.json"}
    assert shipped | {"processing_metaembed.py"} <= set(uploads)
    assert any(name.startswith("tokenizer_1/") for name in uploads)
    # the card names the repo create_repo resolved (with the user's namespace)
    card = ModelCard(uploads["README.md"].decode())
    assert card.data.license == "mit" and card.data.model_name == "esm-prott5"
    assert '.from_pretrained("me/esm-prott5", trust_remote_code=True)' in card.text
    # exactly the files save_for_hub writes, nothing left out
    assert sorted(uploads) == save_for_hub(model, processor, tmp_path / "local", repo_id="me/esm-prott5")


def test_model_push_to_hub_sends_processor_and_card(protein, tmp_path):
    """`model.push_to_hub(repo, processor=...)`, the call transformers users know, ships what save_for_hub writes."""
    model, processor = protein
    uploads = {}

    def fake_create_commit(self, repo_id, operations, **kwargs):
        uploads.update({operation.path_in_repo: kwargs for operation in operations})
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/5678",
            commit_message=kwargs["commit_message"],
            commit_description=kwargs.get("commit_description") or "",
            oid="5678",
        )

    with (
        mock.patch.object(HfApi, "create_repo", return_value=RepoUrl("https://huggingface.co/me/esm-prott5")),
        mock.patch.object(HfApi, "create_commit", autospec=True, side_effect=fake_create_commit) as commit,
    ):
        info = model.push_to_hub(
            "esm-prott5", processor=processor, commit_message="first upload", tags=["affinity"], max_shard_size="1GB"
        )
    assert info.oid == "5678" and commit.call_count == 1  # one commit holds everything
    assert sorted(uploads) == save_for_hub(model, processor, tmp_path / "local", repo_id="me/esm-prott5")
    assert uploads["README.md"]["commit_message"] == "first upload"
    card = ModelCard.load(tmp_path / "local" / "README.md")
    assert "hf_metaembed" in card.data.tags

    uploads.clear()
    with (
        mock.patch.object(HfApi, "create_repo", return_value=RepoUrl("https://huggingface.co/me/esm-prott5")),
        mock.patch.object(HfApi, "create_commit", autospec=True, side_effect=fake_create_commit),
    ):
        model.push_to_hub("esm-prott5", tags=["affinity"])
    assert "README.md" in uploads and "modeling_metaembed.py" in uploads
    assert "processor_config.json" not in uploads  # no processor given: only the model, its code and card


def test_the_repository_holds_one_model_card_template_the_shipped_one():
    from pathlib import Path

    from hf_metaembed.integrations.cards import TEMPLATE_PATH

    root = Path(__file__).resolve().parents[2]
    templates = [path for path in root.rglob("template.md") if ".venv" not in path.parts and "build" not in path.parts]
    assert templates == [TEMPLATE_PATH.resolve()]
    assert TEMPLATE_PATH.relative_to(root / "src") == Path("hf_metaembed/integrations/model_cards/template.md")
    assert "{{ card_data }}" in TEMPLATE_PATH.read_text(encoding="utf-8")


def test_model_push_to_hub_without_the_library_falls_back_to_transformers(protein, monkeypatch):
    """Loaded as remote code where hf_metaembed is not installed (no card publisher plugged in), `push_to_hub` is
    transformers' own upload."""
    from transformers import PreTrainedModel

    from hf_metaembed import MetaEmbedPreTrainedModel

    model, processor = protein
    calls = []
    monkeypatch.setattr(MetaEmbedPreTrainedModel, "hub_publisher", None)
    monkeypatch.setattr(PreTrainedModel, "push_to_hub", lambda self, repo_id, **kw: calls.append((repo_id, kw)))
    with pytest.raises(ValueError, match=r"processor\.push_to_hub"):
        model.push_to_hub("me/esm-prott5", processor=processor)
    model.push_to_hub("me/esm-prott5", private=True)
    assert calls == [("me/esm-prott5", {"private": True})]
