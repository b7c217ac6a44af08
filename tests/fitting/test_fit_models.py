"""Fitting a model's fitted fusion from sequences or a feature cache, and saving and reloading the fitted weights."""

import json

import pytest
import torch
from safetensors import safe_open

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor, fit_fusion
from hf_metaembed.cache import build_feature_cache
from hf_metaembed.fitting import fitted_fusion_names

PROTEINS = ["MKTAYIAKQRQISFVK", "GSHMVLSPADKTNVKAAW", "MVLSGEDKSNIKAAWGKIGGHGAEYGAEALERMF", "MKVLA", "GAVLIPFMW"]
SETTINGS = {"fusion_dim": 4, "lle_anchors": 200, "lle_neighbors": 3}
FIT_OPTIONS = {"daeme": {"epochs": 2}, "caeme": {"epochs": 2}, "aaeme": {"epochs": 2}}


@pytest.fixture(scope="module")
def pair(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def processor(pair):
    return MetaEmbedProcessor.from_backbones(pair)


@pytest.mark.parametrize("fusion", fitted_fusion_names())
def test_fit_save_and_reload_keep_the_fitted_weights(fusion, pair, processor, tmp_path):
    model = MetaEmbedModel.from_backbones(pair, fusion=fusion, **SETTINGS).eval()
    batch = processor(PROTEINS[:2])
    before = model(**batch).last_hidden_state
    report = fit_fusion(model, PROTEINS, processor=processor, **FIT_OPTIONS.get(fusion, {}))
    units = sum(len(p) for p in PROTEINS)
    assert report.vectors == units and model.config.fusion_fitted
    if fusion == "lle":  # fewer vectors than lle_anchors: the stored anchors follow the sample
        assert model.config.lle_anchors == units and model.fusion.anchors.shape[0] == units
    after = model(**batch)
    assert not torch.allclose(after.last_hidden_state, before)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        stored = {key.removeprefix("fusion.") for key in handle.keys() if key.startswith("fusion.")}
    assert stored == set(model.fusion.fitted_shapes())
    assert json.loads((tmp_path / "config.json").read_text())["fusion_fitted"] is True
    reloaded = MetaEmbedModel.from_pretrained(tmp_path).eval()
    assert reloaded.fusion.fitted
    again = reloaded(**batch)
    torch.testing.assert_close(again.last_hidden_state, after.last_hidden_state)
    torch.testing.assert_close(again.fusion_weights, after.fusion_weights)
    assert not [p for p in reloaded.fusion.parameters()]  # frozen by default: buffers, no parameters


def test_fitting_from_a_feature_cache_equals_fitting_from_sequences(pair, processor, tmp_path):
    streamed = MetaEmbedModel.from_backbones(pair, fusion="pca", fusion_dim=4)
    fit_fusion(streamed, PROTEINS, processor=processor)
    cached = MetaEmbedModel.from_backbones(pair, fusion="pca", fusion_dim=4)
    cache = build_feature_cache(cached, processor, tmp_path / "cache", sequences=PROTEINS, progress=False)
    report = fit_fusion(cached, cache)
    assert report.vectors == sum(len(p) for p in PROTEINS)
    torch.testing.assert_close(cached.fusion.encoder, streamed.fusion.encoder, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached.fusion.source_mean, streamed.fusion.source_mean, atol=1e-6, rtol=1e-5)
    capped = fit_fusion(cached, str(tmp_path / "cache"), max_vectors=20)
    assert capped.vectors == 20


def test_fitted_weights_train_on_request(pair, processor):
    model = MetaEmbedForSequenceClassification.from_backbones(
        pair, fusion="svd", fusion_dim=4, fitted_trainable=True, num_labels=1
    )
    fit_fusion(model, PROTEINS, processor=processor)
    fused = model.metaembed.fusion
    assert {name for name, _ in fused.named_parameters()} == {"encoder", "source_mean"}
    model(**processor(PROTEINS[:3]), labels=torch.tensor([1.0, 2.0, 3.0])).loss.backward()
    assert fused.encoder.grad is not None and fused.encoder.grad.abs().sum() > 0


def test_fit_refuses_what_it_cannot_fit(pair, processor):
    with pytest.raises(ValueError, match="fusion 'dme' is not fitted on data; build the model with one of: svd, pca"):
        fit_fusion(MetaEmbedModel.from_backbones(pair, fusion="dme"), PROTEINS, processor=processor)
    with pytest.raises(ValueError, match="has no weights"):
        fit_fusion(MetaEmbedModel.from_backbones(pair, fusion="average"), PROTEINS, processor=processor)
    mixed = MetaEmbedModel.from_backbones(pair, fusion="svd", fusion_dim=4, layers=["mix", "last"])
    with pytest.raises(ValueError, match="backbone 0 reads a learned 'mix'"):
        fit_fusion(mixed, PROTEINS, processor=processor)
    with pytest.raises(ValueError, match="pass the model and its processor"):
        fit_fusion(MetaEmbedModel.from_backbones(pair, fusion="svd", fusion_dim=4), PROTEINS)


def test_fitting_at_sequence_level_fits_one_vector_per_sequence(pair, processor):
    model = MetaEmbedModel.from_backbones(pair, fusion="svd", fusion_dim=4, level="sequence")
    report = fit_fusion(model, PROTEINS, processor=processor)
    assert report.vectors == len(PROTEINS)
    pooled = model(**processor(PROTEINS[:2])).pooler_output
    assert pooled.shape == (2, 4) and torch.isfinite(pooled).all()
