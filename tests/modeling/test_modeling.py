"""The MetaEmbed model: fusion, pooling, layers, heads, freezing, invariances and errors (issue: foundation)."""

import copy
import time

import pytest
import torch
from transformers import PreTrainedModel

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedProcessor,
    list_fusions,
    list_poolings,
)
from hf_metaembed.modeling.pooling import POOLERS

PROTEINS = ["MKTAYIAKQR", "GSHW", "MVLSPADKTNVKAAW"]
TEXTS = ["the movie is good", "a very bad film !", "great"]


@pytest.fixture(scope="module")
def protein_pair(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def protein_models(protein_pair):
    """One model per fusion over ESM + ProtT5, built once; tests get deep copies."""
    return {
        fusion: MetaEmbedForSequenceClassification.from_backbones(protein_pair, fusion=fusion, num_labels=1)
        for fusion in list_fusions()
    }


@pytest.fixture(scope="module")
def protein_processor(protein_pair):
    return MetaEmbedProcessor.from_backbones(protein_pair)


def _non_backbone_parameters(model):
    return {n: p for n, p in model.named_parameters() if ".backbone_" not in f".{n}"}


@pytest.mark.parametrize("fusion", list_fusions())
def test_every_fusion_trains_only_fusion_and_head(fusion, protein_models, protein_processor):
    model = copy.deepcopy(protein_models[fusion]).train()
    batch = protein_processor(PROTEINS)
    out = model(**batch, labels=torch.tensor([1.0, 2.0, 3.0]))
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    for name, param in model.named_parameters():
        if ".backbone_" in f".{name}":
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), f"{name} got no gradient"
    assert out.fusion_weights.shape == (3, batch["unit_mask"].shape[1], 2)


@pytest.mark.parametrize("fusion", ["dme", "cdme", "attention"])
def test_softmax_fusion_weights_sum_to_one_per_unit(fusion, protein_models, protein_processor):
    model = copy.deepcopy(protein_models[fusion]).eval()
    batch = protein_processor(PROTEINS)
    weights = model(**batch).fusion_weights
    real = batch["unit_mask"].bool()
    torch.testing.assert_close(weights[real].sum(-1), torch.ones(int(real.sum())))
    assert (weights[~real] == 0).all()


def test_sigmoid_gating_weights_are_independent(protein_pair):
    model = MetaEmbedModel.from_backbones(protein_pair, fusion="dme", gating="sigmoid").eval()
    batch = MetaEmbedProcessor.from_backbones(protein_pair)(PROTEINS)
    weights = model(**batch).fusion_weights[batch["unit_mask"].bool()]
    assert ((weights > 0) & (weights < 1)).all()
    assert not torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]))


@pytest.mark.parametrize("fusion", list_fusions())
def test_padding_and_batch_invariance(fusion, protein_models, protein_processor):
    model = copy.deepcopy(protein_models[fusion]).eval()
    alone = model(**protein_processor([PROTEINS[1]]))
    batched = model(**protein_processor([PROTEINS[2], PROTEINS[1], "M" * 30]))
    torch.testing.assert_close(batched.logits[1], alone.logits[0], atol=1e-5, rtol=0)
    units = len(PROTEINS[1])
    torch.testing.assert_close(batched.fusion_weights[1, :units], alone.fusion_weights[0, :units], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", list_poolings())
@pytest.mark.parametrize("level", ["unit", "sequence"])
def test_every_pooling_at_both_levels(pooling, level, protein_pair, protein_processor):
    if level == "sequence" and POOLERS.get_class(pooling).output_size(16) != 16:  # a composite widens the vector
        with pytest.raises(ValueError, match="only architecture='single' at level='unit' reads"):
            MetaEmbedModel.from_backbones(protein_pair, pooling=pooling, level=level)
        return
    model = MetaEmbedModel.from_backbones(protein_pair, pooling=pooling, level=level).eval()
    alone = model(**protein_processor([PROTEINS[0]])).pooler_output
    batched = model(**protein_processor([PROTEINS[1], PROTEINS[0], "W" * 40])).pooler_output
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=0)
    expected = (1, 2) if level == "sequence" else (1, len(PROTEINS[0]), 2)
    assert tuple(model(**protein_processor([PROTEINS[0]])).fusion_weights.shape) == expected


def test_unit_states_are_the_mean_of_each_units_tokens(tiny_bert):
    model = MetaEmbedModel.from_backbones([tiny_bert], fusion="concat").eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_bert])
    text = "unbelievably good movie"
    batch = processor([text])
    out = model(**batch, output_backbone_states=True)
    tokens = processor.tokenizers[0](text.split(), is_split_into_words=True)
    raw = model.backbone_0(input_ids=torch.tensor([tokens["input_ids"]])).last_hidden_state[0]
    word_ids = tokens.word_ids()
    for word in range(3):
        rows = [i for i, w in enumerate(word_ids) if w == word]
        torch.testing.assert_close(out.backbone_states[0][0, word], raw[rows].mean(0), atol=1e-6, rtol=0)
    assert out.last_hidden_state.shape == (1, 3, 16)


def test_protein_processing_per_family(tiny_esm, tiny_prott5, tiny_ankh):
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5, tiny_ankh])
    assert processor.unit_types == ["residue"] * 3
    batch = processor(["mkU a"])  # lower case, whitespace and U are normalised as documented
    esm, prott5, ankh = processor.tokenizers
    ids = batch["input_ids"][0]
    units = batch["token_unit_index"][0]
    assert esm.convert_ids_to_tokens(ids[0, :5].tolist()) == ["<cls>", "M", "K", "U", "A"]
    assert esm.convert_ids_to_tokens(ids[0, 5].item()) == "<eos>"
    # ProtT5 has no U: it reads it as X, and ends with </s>
    assert prott5.convert_ids_to_tokens(ids[1, :5].tolist()) == ["\u2581M", "\u2581K", "\u2581X", "\u2581A", "</s>"]
    assert ankh.convert_ids_to_tokens(ids[2, :5].tolist())[:4] == ["M", "K", "U", "A"]
    assert units[0, :6].tolist() == [-1, 0, 1, 2, 3, -1]
    assert units[1, :5].tolist() == [0, 1, 2, 3, -1]
    assert batch["unit_mask"].tolist() == [[1, 1, 1, 1]]


def test_text_processing_aligns_words(tiny_bert, tiny_roberta):
    processor = MetaEmbedProcessor.from_backbones([tiny_bert, tiny_roberta])
    assert processor.unit_types == ["word", "word"]
    batch = processor(["unbelievably good"])
    for backbone in range(2):
        units = batch["token_unit_index"][0, backbone]
        real = units[batch["attention_mask"][0, backbone].bool()].tolist()
        assert real[0] == -1 and real[-1] == -1, "special tokens are never units"
        assert sorted(set(real) - {-1}) == [0, 1]
        assert real.count(0) > 1, "a word split into pieces maps every piece to the word"
    assert batch["unit_mask"].tolist() == [[1, 1]]


@pytest.mark.parametrize("layer", ["last", 0, -2, "mix"])
def test_layer_selection(layer, protein_pair, protein_processor):
    model = MetaEmbedForSequenceClassification.from_backbones(
        protein_pair, layers=[layer, "last"], num_labels=1, fusion="dme"
    )
    batch = protein_processor(PROTEINS[:2])
    out = model.metaembed(**batch, output_backbone_states=True)
    outputs = model.metaembed.backbone_0(
        input_ids=batch["input_ids"][:, 0], attention_mask=batch["attention_mask"][:, 0], output_hidden_states=True
    )
    if layer == "mix":
        assert out.backbone_states[0].shape[2] == len(outputs.hidden_states)
        model(**batch, labels=torch.tensor([0.5, 1.5])).loss.backward()
        assert model.metaembed.layer_mixes["0"].layer_scores.grad is not None
    else:
        chosen = outputs.last_hidden_state if layer == "last" else outputs.hidden_states[layer]
        # residue 0 of sample 0 is token 1 (after <cls>)
        torch.testing.assert_close(out.backbone_states[0][0, 0], chosen[0, 1], atol=1e-6, rtol=0)


def test_problem_types_follow_num_labels_and_label_dtype(protein_pair, protein_processor):
    batch = protein_processor(PROTEINS[:2])
    regression = MetaEmbedForSequenceClassification.from_backbones(protein_pair, num_labels=1)
    assert regression(**batch, labels=torch.tensor([1.0, 2.0])).loss > 0
    assert regression.problem_type == "regression"
    single = MetaEmbedForSequenceClassification.from_backbones(protein_pair, num_labels=3)
    out = single(**batch, labels=torch.tensor([0, 2]))
    assert single.problem_type == "single_label_classification" and out.logits.shape == (2, 3)
    multi = MetaEmbedForSequenceClassification.from_backbones(protein_pair, num_labels=3)
    multi(**batch, labels=torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    assert multi.problem_type == "multi_label_classification"
    with pytest.raises(ValueError, match=r"samples \[1\]"):
        regression(**batch, labels=torch.tensor([1.0, float("nan")]))


def test_token_classification_labels_every_unit(protein_pair):
    model = MetaEmbedForTokenClassification.from_backbones(protein_pair, num_labels=3, fusion="cdme")
    processor = MetaEmbedProcessor.from_backbones(protein_pair, per_unit_labels=True)
    labels = [[0, 1, 2, 0, 1, 2, 0, 1, 2, 0], [2, 2, 1, 1]]
    batch = processor.pad(processor(PROTEINS[:2], labels=labels, return_tensors=None))
    assert batch["labels"][1].tolist()[4:] == [-100] * 6
    out = model(**batch)
    assert out.logits.shape == (2, 10, 3) and out.loss > 0
    out.loss.backward()
    assert model.classifier.out_proj.weight.grad is not None
    with pytest.raises(ValueError, match="architecture='single'"):
        MetaEmbedForTokenClassification(
            MetaEmbedConfig(backbone_configs=model.config.backbone_configs, level="sequence")
        )


def test_backbones_frozen_and_in_eval_mode_while_training(protein_pair):
    model = MetaEmbedForSequenceClassification.from_backbones(protein_pair, num_labels=1, fusion_dropout=0.5)
    model.train()
    for backbone in model.metaembed.backbones:
        assert not backbone.training
        assert not any(p.requires_grad for p in backbone.parameters())
    assert model.metaembed.fusion.training
    thawed = MetaEmbedForSequenceClassification.from_backbones(protein_pair, num_labels=1, freeze_backbones=False)
    thawed.train()
    assert all(b.training for b in thawed.metaembed.backbones)
    assert all(p.requires_grad for p in thawed.metaembed.backbone_0.parameters())


def test_each_backbone_loaded_exactly_once(protein_pair, monkeypatch):
    calls = []
    original = PreTrainedModel.from_pretrained.__func__

    def counting(cls, name, *args, **kwargs):
        calls.append((cls.__name__, str(name)))
        return original(cls, name, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counting))
    MetaEmbedModel.from_backbones(protein_pair)
    assert sorted(calls) == sorted([("EsmModel", protein_pair[0]), ("T5EncoderModel", protein_pair[1])])


def test_config_round_trips_every_field(protein_models, tmp_path):
    config = protein_models["dme"].config
    changes = {
        "fusion_dim": 12,
        "backbone_layers": ["mix", 1],
        "head": "mlp",
        "unit_encoder": "convbert",
        "convbert_num_heads": 4,  # a setting a block declares round-trips like a built-in one
    }
    before = {name: getattr(config, name) for name in changes}
    for name, value in changes.items():
        setattr(config, name, value)
    try:
        config.save_pretrained(tmp_path)
        reloaded = MetaEmbedConfig.from_pretrained(tmp_path)
        original = config.to_dict()
        for key, value in original.items():
            if key != "transformers_version":
                assert reloaded.to_dict()[key] == value, key
        assert MetaEmbedConfig.from_dict(original).to_json_string() == config.to_json_string()
        assert {name: getattr(reloaded, name) for name in changes} == changes
    finally:
        for name, value in before.items():
            setattr(config, name, value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fusion": "dmee"}, "unknown fusion 'dmee'.*choose one of: concat, mean, dme, cdme, attention"),
        ({"pooling": "sum"}, "unknown pooling 'sum'.*mean, max, attention"),
        ({"backbone_layers": ["top", "last"]}, "unknown layer 'top' for backbone 0"),
        ({"level": "token"}, "unknown level 'token'"),
        ({"architecture": "siamese"}, "unknown architecture 'siamese'"),
        (
            {"unit_encoder": "lstm"},
            r"unknown unit encoder 'lstm' \(config field `unit_encoder`\); choose one of: none, convbert",
        ),
        ({"head": "convbrt"}, r"unknown head 'convbrt' \(config field `head`\); choose one of: linear, mlp"),
    ],
)
def test_bad_settings_name_the_choices(settings, message, protein_models):
    stored = protein_models["dme"].config.to_dict()
    stored.update(settings)
    with pytest.raises(ValueError, match=message):
        MetaEmbedConfig.from_dict(stored)


def test_protein_and_text_backbones_cannot_fuse_per_unit(tiny_esm, tiny_bert, tiny_backbones_root):
    with pytest.raises(ValueError, match="use level='sequence'"):
        MetaEmbedModel.from_backbones([tiny_esm, tiny_bert])
    mixed = MetaEmbedModel.from_backbones([tiny_esm, tiny_bert], level="sequence").eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_bert])
    assert mixed(**processor(["MKTAYIAK"])).fusion_weights.shape == (1, 2)


def test_bad_input_errors_name_the_sample(protein_pair, protein_processor):
    with pytest.raises(ValueError, match="sample 1: the sequence is empty"):
        protein_processor(["MKT", "   "])
    with pytest.raises(ValueError, match=r"sample 0: \['1', 'J'\] are not amino-acid letters"):
        protein_processor(["MK1J"])
    with pytest.raises(ValueError, match="the batch is empty"):
        protein_processor([])
    with pytest.raises(TypeError, match="sample 2: expected a string"):
        protein_processor(["MKT", "GSH", None])


def test_too_long_input_errors_unless_truncation_is_chosen(protein_pair, protein_processor):
    long = "M" * 80  # tiny backbones accept 64 residues
    with pytest.raises(ValueError, match=r"sample 1: backbone 0 \(.*esm.*\) accepts at most 66 tokens"):
        protein_processor(["MKT", long])
    with pytest.warns(UserWarning, match="truncation cut 16 units from 1 inputs"):
        batch = protein_processor(["MKT", long], truncation=True)
    assert batch["unit_mask"][1].sum() == 64
    model = MetaEmbedModel.from_backbones(protein_pair).eval()
    assert model(**batch).last_hidden_state.shape[:2] == (2, 64)


def test_missing_backbone_fails_fast_and_names_it(tiny_esm, tmp_path):
    start = time.monotonic()
    with pytest.raises(OSError, match=r"backbone 1 .*no such folder"):
        MetaEmbedModel.from_backbones([tiny_esm, str(tmp_path / "nope" / "esm")])
    with pytest.raises(OSError, match=r"backbone 0 .*holds no loadable model config"):
        MetaEmbedModel.from_backbones([str(tmp_path)])
    with pytest.raises(OSError, match=r"backbone 0 'nobody/no-such-model' could not be loaded.*offline"):
        MetaEmbedProcessor.from_backbones(["nobody/no-such-model"])
    assert time.monotonic() - start < 10


def test_misspelled_setting_is_an_error_before_any_backbone_loads(tmp_path):
    missing = str(tmp_path / "never-read")  # a typo must be reported before the backbones are even looked for
    with pytest.raises(TypeError, match=r"unknown setting\(s\) 'fusoin' \(did you mean 'fusion'\?\)"):
        MetaEmbedModel.from_backbones([missing], fusoin="cdme")
    with pytest.raises(TypeError, match=r"'windw_size' \(did you mean 'window_size'\?\)"):
        MetaEmbedForSequenceClassification.from_backbones([missing], num_labels=2, windw_size=8)


def test_forward_needs_exactly_one_input_kind(protein_models, protein_processor):
    model = protein_models["dme"]
    batch = protein_processor(PROTEINS[:1])
    with pytest.raises(ValueError, match="got neither"):
        model(unit_mask=batch["unit_mask"])
    states = model.metaembed(**batch, output_backbone_states=True).backbone_states
    with pytest.raises(ValueError, match="got both"):
        model(**batch, backbone_states=states)
    torch.testing.assert_close(
        model.eval()(backbone_states=states, unit_mask=batch["unit_mask"]).logits, model(**batch).logits
    )
