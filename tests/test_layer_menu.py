"""The layer menu (issue 19, section 4): a list of layers combined by mean or concat, "mix" with optional layer norm,
per-unit layer attention; reachable from `from_backbones(paths, backbone_layers=[...], layer_combine=...)`."""

import pytest
import torch

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor

PROTEINS = ["MKTAYIAKQR", "GSHW"]


@pytest.fixture(scope="module")
def pair(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def batch(pair):
    return MetaEmbedProcessor.from_backbones(pair)(PROTEINS)


def read(pair, batch, **settings):
    model = MetaEmbedModel.from_backbones(pair, fusion="concat", **settings).eval()
    with torch.no_grad():
        out = model(**batch, output_backbone_states=True)
    return model, out


def test_a_list_of_layers_is_their_mean_or_concatenation(pair, batch):
    _, last = read(pair, batch, backbone_layers=[-1, "last"])
    _, second = read(pair, batch, backbone_layers=[-2, "last"])
    _, mean = read(pair, batch, backbone_layers=[[-1, -2], "last"], layer_combine="mean")
    model, concat = read(pair, batch, backbone_layers=[[-1, -2], "last"], layer_combine="concat")
    first, other = last.last_hidden_state[..., :16], second.last_hidden_state[..., :16]
    torch.testing.assert_close(mean.last_hidden_state[..., :16], (first + other) / 2)
    assert model.config.backbone_read_sizes == [32, 16] and concat.last_hidden_state.shape[-1] == 48
    torch.testing.assert_close(concat.last_hidden_state[..., :32], torch.cat([first, other], dim=-1))
    assert mean.backbone_states[0].shape[2] == 2  # the chosen layers are what is read (and cached)


def test_mix_with_layer_norm_follows_its_definition(pair, batch):
    model, out = read(pair, batch, backbone_layers=["mix", "last"], layer_mix_norm=True)
    mix = model.reader.layer_mixes["0"]
    with torch.no_grad():
        mix.layer_scores.copy_(torch.arange(float(mix.num_layers)))
        mix.scale.fill_(2.0)
        out = model(**batch, output_backbone_states=True)
    layers = out.backbone_states[0]  # (segments, units, layers, 16)
    normalised = (layers - layers.mean(-1, keepdim=True)) / torch.sqrt(
        layers.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    expected = 2.0 * torch.einsum("l,suld->sud", torch.softmax(mix.layer_scores, 0), normalised)
    real = batch["unit_mask"].bool()
    torch.testing.assert_close(out.last_hidden_state[..., :16][real], expected[real], atol=1e-5, rtol=1e-5)


def test_layer_attention_weighs_the_layers_per_unit(pair, batch):
    model, out = read(pair, batch, backbone_layers=["attention", "last"])
    attention = model.reader.layer_mixes["0"]
    layers = out.backbone_states[0]
    with torch.no_grad():
        weights = torch.softmax(attention.score(layers).squeeze(-1), dim=-1)  # (segments, units, layers)
    expected = torch.einsum("sul,suld->sud", weights, layers)
    real = batch["unit_mask"].bool()
    torch.testing.assert_close(out.last_hidden_state[..., :16][real], expected[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
    assert not torch.allclose(weights[0, 0], weights[0, 1])  # each unit weighs the layers itself
    loss = model(**batch).last_hidden_state.pow(2).sum()
    loss.backward()
    assert attention.score.weight.grad is not None


def test_layer_menu_saves_and_reloads(pair, batch, tmp_path):
    model = MetaEmbedModel.from_backbones(pair, backbone_layers=[[-1, -2], "mix"], layer_combine="concat").eval()
    model.save_pretrained(tmp_path)
    reloaded = MetaEmbedModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.backbone_layers == [[-1, -2], "mix"] and reloaded.config.layer_combine == "concat"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).pooler_output, model(**batch).pooler_output)


def test_bad_layer_choices_name_the_fix(pair):
    with pytest.raises(ValueError, match=r"unknown layer \[-1, -1\] for backbone 0; choose 'last', an integer"):
        MetaEmbedModel.from_backbones(pair, backbone_layers=[[-1, -1], "last"])
    with pytest.raises(ValueError, match="unknown layer_combine 'sum'; choose one of: mean, concat"):
        MetaEmbedModel.from_backbones(pair, backbone_layers=[[-1, -2], "last"], layer_combine="sum")


def test_cached_layer_menus_equal_the_online_path(pair, batch, tmp_path):
    from hf_metaembed.cache import CachedFeatureCollator, CachedFeatureDataset, build_feature_cache

    model = MetaEmbedModel.from_backbones(pair, backbone_layers=[[-1, -2], "attention"]).eval()
    processor = MetaEmbedProcessor.from_backbones(pair)
    cache = build_feature_cache(model, processor, tmp_path, sequences=PROTEINS, progress=False)
    dataset = CachedFeatureDataset(cache, sequences=PROTEINS)
    cached = CachedFeatureCollator()([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        torch.testing.assert_close(model(**cached).pooler_output, model(**batch).pooler_output, atol=1e-5, rtol=0)


def test_the_command_line_reaches_the_layer_menu(pair, tmp_path, capsys):
    from hf_metaembed.cli.main import main

    out = tmp_path / "built"
    code = main(
        ["build", "--backbones", ",".join(pair), "-o", str(out), "--layers", "[-1,-2]", "attention"]
        + ["--layer-combine", "concat", "--fusion", "concat"]
    )
    assert code == 0, capsys.readouterr().err
    config = MetaEmbedModel.from_pretrained(out).config
    assert config.backbone_layers == [[-1, -2], "attention"] and config.layer_combine == "concat"
    assert config.backbone_read_sizes == [32, 16]
    with pytest.raises(SystemExit):  # an argument error, as argparse reports it
        main(["build", "--backbones", ",".join(pair), "-o", str(tmp_path / "bad"), "--layers", "top"])
    assert "invalid layer 'top'" in capsys.readouterr().err


def test_learned_layer_weights_are_reported_per_unit(pair, batch):
    model = MetaEmbedModel.from_backbones(pair, backbone_layers=["attention", "mix"]).eval()
    with torch.no_grad():
        out = model(**batch, output_layer_weights=True, output_backbone_states=True)
    attention, mix = out.layer_weights
    real = batch["unit_mask"].bool()
    assert attention.shape == out.backbone_states[0].shape[:3] and mix.shape == out.backbone_states[1].shape[:3]
    expected = model.reader.layer_mixes["0"].layer_weights(out.backbone_states[0])
    torch.testing.assert_close(attention[real], expected[real])
    torch.testing.assert_close(mix[real].sum(-1), torch.ones(int(real.sum())))
    assert (attention[~real] == 0).all() and model(**batch).layer_weights is None
