"""Saving and loading: full and backbone-free checkpoints, Auto classes, and remote code without the library."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import tiny_backbones
import torch
from remote_code import BLOCK_HF_METAEMBED
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
    EsmConfig,
    EsmModel,
)

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedModel,
    MetaEmbedProcessor,
)

PROTEINS = ["MKTAYIAKQR", "GSHW"]


@pytest.fixture(scope="module")
def trained_like(tiny_esm, tiny_ankh):
    """A model whose fusion and head are not at their initial values (so a load that re-initialises shows)."""
    model = MetaEmbedForSequenceClassification.from_backbones(
        [tiny_esm, tiny_ankh], fusion="cdme", layers=["mix", "last"], num_labels=2
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".backbone_" not in f".{name}":
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def processor(tiny_esm, tiny_ankh):
    return MetaEmbedProcessor.from_backbones([tiny_esm, tiny_ankh])


def test_full_save_and_reload_reproduce_outputs(trained_like, processor, tmp_path):
    trained_like.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    batch = MetaEmbedProcessor.from_pretrained(tmp_path)(PROTEINS)
    assert os.path.exists(tmp_path / "model.safetensors")
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(**batch).logits, trained_like(**batch).logits, atol=0, rtol=0)
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(auto) is MetaEmbedForSequenceClassification
    torch.testing.assert_close(auto(**batch).logits, trained_like(**batch).logits, atol=0, rtol=0)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is MetaEmbedModel
    torch.testing.assert_close(
        base(**batch).pooler_output, trained_like.metaembed(**batch).pooler_output, atol=0, rtol=0
    )
    assert type(AutoConfig.from_pretrained(tmp_path)) is MetaEmbedConfig
    assert type(AutoProcessor.from_pretrained(tmp_path)) is MetaEmbedProcessor


@pytest.mark.parametrize("save_backbone_weights", [True, False])
def test_reloaded_backbones_stay_frozen_and_outputs_match_with_gradients_on(
    trained_like, processor, tmp_path, save_backbone_weights
):
    trained_like.save_pretrained(tmp_path, save_backbone_weights=save_backbone_weights)
    trained_like.config.save_backbone_weights = True
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    trainable = {name for name, param in reloaded.named_parameters() if param.requires_grad}
    assert trainable == {name for name, param in trained_like.named_parameters() if param.requires_grad}
    assert trainable and not any(".backbone_" in f".{name}" for name in trainable)
    with torch.enable_grad():
        batch = processor(PROTEINS)
        torch.testing.assert_close(reloaded(**batch).logits, trained_like(**batch).logits, atol=0, rtol=0)


def test_backbone_free_save_keeps_only_fusion_and_head(trained_like, processor, tmp_path):
    trained_like.save_pretrained(tmp_path, save_backbone_weights=False)
    trained_like.config.save_backbone_weights = True
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any("backbone_" in key for key in keys)
    assert json.loads((tmp_path / "config.json").read_text())["save_backbone_weights"] is False
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = processor(PROTEINS)
    torch.testing.assert_close(reloaded(**batch).logits, trained_like(**batch).logits, atol=0, rtol=0)


def test_backbone_free_file_is_under_two_percent_for_esm2_8m_shapes(tmp_path):
    shape = dict(num_hidden_layers=6, hidden_size=320, num_attention_heads=20, intermediate_size=1280)
    folders = []
    for index in range(2):
        torch.manual_seed(index)
        config = EsmConfig(vocab_size=33, pad_token_id=1, mask_token_id=32, position_embedding_type="rotary", **shape)
        folder = tmp_path / f"esm8m_{index}"
        EsmModel(config, add_pooling_layer=False).save_pretrained(folder)
        tiny_backbones.build_tiny_esm()[1].save_pretrained(folder)
        folders.append(str(folder))
    model = MetaEmbedForSequenceClassification.from_backbones(folders, fusion="dme", num_labels=1)
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "small", save_backbone_weights=False)
    full = os.path.getsize(tmp_path / "full" / "model.safetensors")
    small = os.path.getsize(tmp_path / "small" / "model.safetensors")
    assert small < 0.02 * full, (small, full)


def test_token_classification_auto_class(tiny_esm, tmp_path):
    model = MetaEmbedForTokenClassification.from_backbones([tiny_esm], num_labels=3).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    batch = MetaEmbedProcessor.from_backbones([tiny_esm])(PROTEINS)
    torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_saved_folder_carries_remote_code_and_auto_map(trained_like, processor, tmp_path):
    trained_like.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    for module in ("configuration_metaembed", "modeling_metaembed", "processing_metaembed", "fusion", "pairing"):
        assert (tmp_path / f"{module}.py").exists(), module
    processor_config = json.loads((tmp_path / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_metaembed.MetaEmbedProcessor"}


REMOTE_SCRIPT = BLOCK_HF_METAEMBED + textwrap.dedent(
    """
    try:
        import hf_metaembed  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_metaembed should not be importable here")

    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoProcessor

    folder, out = sys.argv[1], sys.argv[2]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    batch = processor(["MKTAYIAKQR", "GSHW"])
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert "hf_metaembed" not in type(model).__module__, type(model).__module__
    with torch.no_grad():
        torch.save({"logits": model(**batch).logits, "pooled": base(**batch).pooler_output}, out)
    """
)


@pytest.mark.parametrize("save_backbone_weights", [True, False])
def test_remote_code_load_without_the_library(trained_like, processor, tmp_path, save_backbone_weights):
    folder = tmp_path / "saved"
    trained_like.save_pretrained(folder, save_backbone_weights=save_backbone_weights)
    trained_like.config.save_backbone_weights = True
    processor.save_pretrained(folder)
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    # one thread, as conftest sets for this process: the same summation order, so outputs agree bit for bit
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "out.pt")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        batch = processor(PROTEINS)
        torch.testing.assert_close(remote["logits"], trained_like(**batch).logits, atol=0, rtol=0)
        torch.testing.assert_close(remote["pooled"], trained_like.metaembed(**batch).pooler_output, atol=0, rtol=0)
