"""A config holds what the user set and what saving needs: loading and `forward` write nothing onto it."""

import pytest
import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor


def _settings(config) -> dict:
    """The config's fields, less the source path transformers itself records on every loaded model's config."""
    return {key: value for key, value in config.to_dict().items() if key != "_name_or_path"}


@pytest.mark.parametrize("with_backbones", [True, False])
def test_loading_and_forward_leave_the_config_as_read(tiny_esm, tmp_path, with_backbones):
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_esm], num_labels=2, layers=["mix"])
    model.save_pretrained(tmp_path, save_backbone_weights=with_backbones)
    as_read = _settings(MetaEmbedConfig.from_pretrained(tmp_path))
    loaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path)
    assert _settings(loaded.config) == as_read
    assert as_read["backbone_weights_saved"] is with_backbones and as_read["save_backbone_weights"] is True
    batch = MetaEmbedProcessor.from_backbones([tiny_esm])(["MKTAYIAK", "GSH"])
    loaded.train()
    loaded(**batch, labels=torch.tensor([0, 1])).loss.backward()
    assert _settings(loaded.config) == as_read
    assert loaded.problem_type == "single_label_classification" and loaded.config.problem_type is None


def test_a_fresh_config_round_trips_the_users_save_preference():
    config = MetaEmbedConfig(save_backbone_weights=False)
    again = MetaEmbedConfig.from_dict(config.to_dict())
    assert again.save_backbone_weights is False and again.backbone_weights_saved is None
