"""A saved folder carries its pipelines: `pipeline("feature-extraction" | "text-classification", model=folder,
trust_remote_code=True)` works where `hf_metaembed` is not installed, and `AutoTokenizer` says to use
`AutoProcessor`."""

import json
import os

import pytest
import torch
from remote_code import run_without_the_library
from transformers import AutoTokenizer, pipeline

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor

TEXTS = ["the film was surprisingly good", "a dull film"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="module")
def folders(tiny_bert, tiny_roberta, tiny_esm, tmp_path_factory):
    """A text classifier, a headless protein model and an `hp` pair model, each saved with its processor."""
    root = tmp_path_factory.mktemp("pipeline_folders")
    torch.manual_seed(0)
    text = [tiny_bert, tiny_roberta]
    classifier = MetaEmbedForSequenceClassification.from_backbones(
        text, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
    )
    classifier.save_pretrained(root / "classifier")
    MetaEmbedProcessor.from_backbones(text).save_pretrained(root / "classifier")
    MetaEmbedModel.from_backbones([tiny_esm]).save_pretrained(root / "protein")
    MetaEmbedProcessor.from_backbones([tiny_esm]).save_pretrained(root / "protein")
    MetaEmbedModel.from_backbones([tiny_esm], architecture="hp").save_pretrained(root / "pairs")
    MetaEmbedProcessor.from_backbones([tiny_esm], architecture="hp").save_pretrained(root / "pairs")
    return {name: str(root / name) for name in ("classifier", "protein", "pairs")}


def _expected(folder: str, texts: list[str]) -> dict:
    model = MetaEmbedForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        processor = MetaEmbedProcessor.from_pretrained(folder)
        base = model.metaembed(**processor(texts))
        out = model(**processor(texts))
    return {
        "pooled": out.pooler_output,
        "units": base.last_hidden_state,
        "fusion_weights": base.fusion_weights,
        "scores": out.logits.softmax(-1),
    }


def test_saved_config_registers_the_pipelines_the_folder_serves(folders):
    tasks = json.loads(open(os.path.join(folders["classifier"], "config.json")).read())["custom_pipelines"]
    assert set(tasks) == {"feature-extraction", "text-classification"}
    assert tasks["text-classification"]["impl"] == "pipeline_metaembed.MetaEmbedTextClassificationPipeline"
    headless = json.loads(open(os.path.join(folders["protein"], "config.json")).read())["custom_pipelines"]
    assert set(headless) == {"feature-extraction"}
    assert os.path.isfile(os.path.join(folders["protein"], "pipeline_metaembed.py"))


REMOTE_SCRIPT = """
import json
import torch
from transformers import AutoTokenizer, pipeline

classifier, protein, out = sys.argv[1], sys.argv[2], sys.argv[3]
texts = json.loads(sys.argv[4])
results = {}
extractor = pipeline("feature-extraction", model=classifier, trust_remote_code=True)
assert "hf_metaembed" not in type(extractor).__module__, type(extractor).__module__
# the usual calls on a feature extractor: one string, a list, a list in batches
results["one"] = torch.tensor(extractor(texts[0]))
results["list"] = [torch.tensor(result) for result in extractor(texts)]
results["batched"] = [torch.tensor(result) for result in extractor(texts, batch_size=8)]
results["tensors"] = extractor(texts, batch_size=8, return_tensors=True)
results["pooled"] = torch.tensor(extractor(texts, batch_size=8, pooled=True))
weighted = extractor(texts[0], return_fusion_weights=True)
results["fusion_weights"], results["units"] = torch.tensor(weighted["fusion_weights"]), weighted["units"]
scorer = pipeline("text-classification", model=classifier, trust_remote_code=True)
results["top"] = scorer(texts[0])
results["all"] = scorer(texts, top_k=None, batch_size=2)
protein_extractor = pipeline("feature-extraction", model=protein, trust_remote_code=True)
results["protein_units"] = protein_extractor("MKTAY", return_fusion_weights=True)["units"]
attempts = {
    "tokenizer_error": lambda: AutoTokenizer.from_pretrained(classifier, trust_remote_code=True),
    "headless_error": lambda: pipeline("text-classification", model=protein, trust_remote_code=True),
}
for name, load in attempts.items():
    try:
        load()
    except (ValueError, OSError) as error:
        results[name] = str(error)
torch.save(results, out)
"""


def test_pipelines_without_the_library(folders, tmp_path):
    arguments = [folders["classifier"], folders["protein"], tmp_path / "out.pt", json.dumps(TEXTS)]
    result = run_without_the_library(REMOTE_SCRIPT, arguments, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    expected = _expected(folders["classifier"], TEXTS)
    words = [len(text.split()) for text in TEXTS]
    close = {"atol": 1e-6, "rtol": 0}
    torch.testing.assert_close(remote["one"], expected["units"][:1, : words[0]], **close)  # (1, units, dim)
    for name in ("list", "batched", "tensors"):
        assert [tuple(r.shape[:2]) for r in remote[name]] == [(1, n) for n in words], name
        for index, rows in enumerate(remote[name]):
            torch.testing.assert_close(rows[0], expected["units"][index, : words[index]], **close)
    torch.testing.assert_close(remote["pooled"][:, 0], expected["pooled"], **close)  # (inputs, 1, dim)
    torch.testing.assert_close(remote["fusion_weights"], expected["fusion_weights"][:1, : words[0]], **close)
    assert remote["units"] == TEXTS[0].split()
    best = int(expected["scores"][0].argmax())
    assert remote["top"][0]["label"] == LABELS[best]
    assert remote["top"][0]["score"] == pytest.approx(float(expected["scores"][0, best]), abs=1e-6)
    for scores, row in zip(remote["all"], expected["scores"]):
        assert {entry["label"]: entry["score"] for entry in scores} == pytest.approx(
            {LABELS[i]: float(row[i]) for i in range(3)}, abs=1e-6
        )
    assert remote["protein_units"] == list("MKTAY")
    assert "AutoProcessor.from_pretrained" in remote["tokenizer_error"]
    assert "sentencepiece" not in remote["tokenizer_error"]
    assert "pipeline('feature-extraction'" in remote["headless_error"]


def test_with_the_library_installed(folders):
    extractor = pipeline("feature-extraction", model=folders["protein"], trust_remote_code=True)
    result = extractor(["MKTAYIAK", "GSH"], batch_size=2)
    assert [torch.tensor(r).shape[:2] for r in result] == [(1, 8), (1, 3)]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("feature-extraction", model=folders["protein"])
    with pytest.raises(ValueError, match=r"AutoProcessor\.from_pretrained\(.*trust_remote_code=True\)"):
        AutoTokenizer.from_pretrained(folders["protein"])
    tokenizer = AutoTokenizer.from_pretrained(folders["protein"], subfolder="tokenizer_0")
    assert tokenizer("MKT")["input_ids"][0] == tokenizer.cls_token_id


def test_pair_architecture_pipeline(folders):
    extractor = pipeline("feature-extraction", model=folders["pairs"], trust_remote_code=True)
    result = extractor({"ligand": ["MKTAYIAK", "GSH"], "receptor": ["WWPPL"]}, return_fusion_weights=True)
    assert result["sides"] == ["ligand", "ligand", "receptor"]
    assert [len(rows) for rows in result["features"]] == [8, 3, 5]
    assert [len(rows) for rows in result["fusion_weights"]] == [8, 3, 5]
