"""DoRA through the LoRA helper (`lora_config(model, use_dora=True)`): peft builds DoRA layers (a magnitude vector
beside LoRA's two matrices, initialised to the norms of the frozen weight's rows), which start as the unadapted model,
train (magnitudes included), save as an adapter and reload, and merge into a plain MetaEmbed model."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors import safe_open

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.peft import lora_config


@pytest.fixture(scope="module")
def backbones(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def batch(backbones):
    processor = MetaEmbedProcessor.from_backbones(backbones)
    return processor(["MKTAYIAK", "GSHMLV", "ACDEFGHIKL", "MVLSPADK"]), torch.tensor([0.5, -1.0, 2.0, 1.0])


def adapted_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules() if "default" in getattr(module, "lora_A", {})}


def test_dora_layers_train_save_reload_and_merge(backbones, batch, tmp_path):
    inputs, labels = batch
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=1, problem_type="regression")
    model.save_pretrained(tmp_path / "base")
    model.eval()
    with torch.no_grad():
        untrained = model(**inputs).logits

    peft_model = get_peft_model(model, lora_config(model, r=4, lora_alpha=8, use_dora=True))
    assert peft_model.peft_config["default"].use_dora is True
    layers = adapted_layers(peft_model)
    # every query/value projection of both backbones (2 layers each in the tiny models), and each is a DoRA layer
    assert len(layers) == 8 and {name.rsplit(".", 1)[-1] for name in layers} == {"query", "value", "q", "v"}
    for name, layer in layers.items():
        magnitude = layer.lora_magnitude_vector["default"].weight
        base = layer.get_base_layer().weight
        assert magnitude.shape == (base.shape[0],), name
        torch.testing.assert_close(magnitude, torch.linalg.norm(base, dim=1))  # DoRA's m = ||W|| per output row
    peft_model.eval()
    with torch.no_grad():  # B = 0 and m = ||W||: DoRA starts as the unadapted model
        torch.testing.assert_close(peft_model(**inputs).logits, untrained, atol=1e-6, rtol=0)

    magnitudes = {name: layer.lora_magnitude_vector["default"].weight for name, layer in layers.items()}
    start = {name: m.detach().clone() for name, m in magnitudes.items()}
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert all(m.requires_grad for m in magnitudes.values())
    optimizer = torch.optim.AdamW(trainable, lr=0.05)
    peft_model.train()
    losses = []
    for _ in range(8):
        loss = peft_model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(magnitudes[name], start[name]) for name in magnitudes)  # the magnitudes trained

    peft_model.eval()
    with torch.no_grad():
        trained = peft_model(**inputs).logits
    assert not torch.allclose(trained, untrained, atol=1e-4)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as saved:
        stored = [key for key in saved.keys() if "lora_magnitude_vector" in key]
    assert len(stored) == len(layers)

    fresh = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    assert len([1 for layer in adapted_layers(reloaded).values() if layer.lora_magnitude_vector]) == len(layers)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, trained)
    merged = reloaded.merge_and_unload()
    assert type(merged) is MetaEmbedForSequenceClassification
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, trained, rtol=1e-4, atol=1e-5)
