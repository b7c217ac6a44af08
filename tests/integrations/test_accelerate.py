"""Accelerate placement: every backbone lands whole on one device, different backbones may go to different devices,
and a model loaded with a `device_map` (explicit or `"auto"` with `max_memory`) runs and gives the same outputs."""

import os

import pytest
import torch
from accelerate import infer_auto_device_map, init_empty_weights, load_checkpoint_and_dispatch
from accelerate.utils import compute_module_sizes, find_tied_parameters
from transformers import EsmConfig, T5Config
from transformers.integrations.accelerate import compute_module_sizes as transformers_module_sizes

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor


def _esm2_config(layers: int, hidden: int, heads: int) -> dict:
    """An ESM-2-shaped config (the public checkpoints' layout) at the given size."""
    config = EsmConfig(
        vocab_size=33,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        token_dropout=True,
        emb_layer_norm_before=False,
        pad_token_id=1,
        mask_token_id=32,
    )
    return config.to_dict()


def _prott5_xl_config() -> dict:
    """A ProtT5-XL-shaped encoder config (24 layers, d_model 1024, d_ff 16384)."""
    config = T5Config(
        vocab_size=128, d_model=1024, d_kv=128, d_ff=16384, num_layers=24, num_heads=32, feed_forward_proj="relu"
    )
    return config.to_dict()


def _empty_model(backbone_configs: list[dict], model_class=MetaEmbedForSequenceClassification):
    config = MetaEmbedConfig(
        backbone_configs=backbone_configs,
        backbone_unit_types=["residue"] * len(backbone_configs),
        num_labels=1,
    )
    with init_empty_weights():
        return model_class(config)


def _backbone_devices(device_map: dict, prefix: str, count: int) -> list:
    """The one device of each backbone; fails if a backbone's modules were spread over several entries."""
    devices = []
    for index in range(count):
        name = f"{prefix}backbone_{index}"
        inside = [key for key in device_map if key.startswith(name + ".")]
        assert not inside, f"{name} was split across {sorted({device_map[key] for key in inside})}: {inside}"
        owners = [key for key in device_map if key == name or name.startswith(key + ".") or key == ""]
        assert len(owners) == 1, f"{name} placed by {owners}"
        devices.append(device_map[owners[0]])
    return devices


def test_no_split_blocks_include_whole_backbones():
    model = _empty_model([_esm2_config(2, 64, 4), _prott5_xl_config() | {"num_layers": 1}])
    assert next(model.parameters()).device.type == "meta"
    # each backbone whole, plus the blocks the backbones themselves never split
    assert {"EsmModel", "T5EncoderModel", "EsmLayer", "T5Block"} <= set(model._no_split_modules)
    assert model.metaembed._no_split_modules == model._no_split_modules


def test_auto_map_puts_real_sized_backbones_on_different_devices():
    # ESM-2 650M and ProtT5-XL encoder shapes, on the meta device (no memory is allocated)
    model = _empty_model([_esm2_config(33, 1280, 20), _prott5_xl_config()])
    sizes = compute_module_sizes(model)
    esm, t5 = sizes["metaembed.backbone_0"], sizes["metaembed.backbone_1"]
    assert 2e9 < esm < 3e9 and 4e9 < t5 < 6e9  # fp32 bytes: about 650M and 1.2B parameters
    rest = sizes[""] - esm - t5
    # accelerate keeps room on the first device for the largest no-split block (offloaded blocks execute there)
    max_memory = {0: esm + t5 + 2**20, 1: t5 + rest + 2**20, "cpu": 64 * 2**30}
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=model._no_split_modules)
    assert _backbone_devices(device_map, "metaembed.", 2) == [0, 1]
    # fusion and head sit together, after the backbones whose states they gather
    assert device_map["metaembed.fusion"] == device_map["classifier"] == 1

    # without whole-backbone blocks accelerate would cut the second backbone between two devices
    inner_only = [name for name in model._no_split_modules if name not in ("EsmModel", "T5EncoderModel")]
    split_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=inner_only)
    with pytest.raises(AssertionError, match="was split"):
        _backbone_devices(split_map, "metaembed.", 2)


def test_three_backbones_on_three_devices_base_model():
    configs = [_esm2_config(12, 480, 20), _esm2_config(30, 640, 20), _esm2_config(33, 1280, 20)]
    model = _empty_model(configs, model_class=MetaEmbedModel)
    sizes = compute_module_sizes(model)
    backbone_sizes = [sizes[f"backbone_{i}"] for i in range(3)]
    largest = max(backbone_sizes)
    rest = sizes[""] - sum(backbone_sizes)
    max_memory = {
        0: backbone_sizes[0] + largest + 2**20,
        1: backbone_sizes[1] + 2**20,
        2: backbone_sizes[2] + rest + 2**20,
        "cpu": 64 * 2**30,
    }
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=model._no_split_modules)
    assert _backbone_devices(device_map, "", 3) == [0, 1, 2]
    assert device_map["fusion"] == 2


@pytest.fixture(scope="module")
def saved(tiny_prott5, tiny_esm, tmp_path_factory):
    """A saved tiny model whose backbones differ in size (ProtT5 first, the larger ESM-2 second), its inputs and
    reference outputs."""
    folder = tmp_path_factory.mktemp("placed")
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_prott5, tiny_esm], num_labels=2)
    model.save_pretrained(folder)
    processor = MetaEmbedProcessor.from_backbones([tiny_prott5, tiny_esm])
    batch = processor(["MKTAYIAKQR", "GSHMLV", "ACDEFGHIKLMNPQ"])
    with torch.no_grad():
        reference = model.eval()(**batch)
    return folder, batch, reference


def test_forward_with_explicit_cpu_device_map(saved):
    folder, batch, reference = saved
    device_map = {
        "metaembed.backbone_0": "cpu",
        "metaembed.backbone_1": "cpu",
        "metaembed.reader": "cpu",
        "metaembed.fusion": "cpu",
        "metaembed.pairing": "cpu",
        "classifier": "cpu",
    }
    model = MetaEmbedForSequenceClassification.from_pretrained(folder, device_map=device_map)
    assert {param.device.type for param in model.parameters()} == {"cpu"}
    with torch.no_grad():
        output = model(**batch)
    torch.testing.assert_close(output.logits, reference.logits)
    torch.testing.assert_close(output.fusion_weights, reference.fusion_weights)


def test_forward_with_a_backbone_offloaded_to_disk(saved, tmp_path):
    folder, batch, reference = saved
    device_map = {
        "metaembed.backbone_0": "cpu",
        "metaembed.backbone_1": "disk",
        "metaembed.reader": "cpu",
        "metaembed.fusion": "cpu",
        "metaembed.pairing": "cpu",
        "classifier": "cpu",
    }
    model = MetaEmbedForSequenceClassification.from_pretrained(folder, device_map=device_map, offload_folder=tmp_path)
    assert model.hf_device_map == device_map
    # the offloaded backbone's weights stay on the meta device; accelerate's hooks bring them in for each forward
    assert {param.device.type for param in model.metaembed.backbone_1.parameters()} == {"meta"}
    with torch.no_grad():
        output = model(**batch)
    torch.testing.assert_close(output.logits, reference.logits)


def test_auto_device_map_with_max_memory(saved, tmp_path):
    folder, batch, reference = saved
    config = MetaEmbedConfig.from_pretrained(folder)
    with init_empty_weights():
        # the sizes `from_pretrained` itself uses (tied T5 embeddings counted once)
        sizes, _ = transformers_module_sizes(MetaEmbedForSequenceClassification(config))
    first, second = sizes["metaembed.backbone_0"], sizes["metaembed.backbone_1"]
    assert first < second
    # room for the first backbone plus one backbone-sized execution buffer, not for the second backbone too
    max_memory = {"cpu": first + second + 256}
    model = MetaEmbedForSequenceClassification.from_pretrained(
        folder, device_map="auto", max_memory=max_memory, offload_folder=tmp_path
    )
    device_map = model.hf_device_map
    assert _backbone_devices(device_map, "metaembed.", 2) == ["cpu", "disk"]
    with torch.no_grad():
        output = model(**batch)
    torch.testing.assert_close(output.logits, reference.logits)


# ------------------------------------------------------- accelerate's big-model recipe, as the README shows it


@pytest.fixture(scope="module")
def saved_base(tiny_esm, tiny_prott5, tmp_path_factory):
    """A saved headless T5 + ESM-2 model (T5's embed_tokens tied to its shared embedding, stored once), its inputs
    and its reference outputs."""
    folder = tmp_path_factory.mktemp("dispatched")
    torch.manual_seed(0)
    model = MetaEmbedModel.from_backbones([tiny_prott5, tiny_esm]).eval()
    model.save_pretrained(folder)
    batch = MetaEmbedProcessor.from_backbones([tiny_prott5, tiny_esm])(["MKTAYIAKQR", "GSHMLV"])
    with torch.no_grad():
        reference = model(**batch)
    return str(folder), batch, reference


def test_a_model_built_empty_has_its_backbones_weights_tied(saved_base):
    folder, _, _ = saved_base
    with init_empty_weights():
        model = MetaEmbedModel(MetaEmbedConfig.from_pretrained(folder))
    t5 = model.backbone_0
    assert t5.encoder.embed_tokens.weight is t5.shared.weight
    assert find_tied_parameters(model) == [["backbone_0.encoder.embed_tokens.weight", "backbone_0.shared.weight"]]


def test_load_checkpoint_and_dispatch_recipe(saved_base):
    folder, batch, reference = saved_base
    # the README's recipe, verbatim
    config = MetaEmbedConfig.from_pretrained(folder)
    with init_empty_weights():
        model = MetaEmbedModel(config)
    model = load_checkpoint_and_dispatch(
        model, folder, device_map="auto", no_split_module_classes=model._no_split_modules
    )
    assert not [name for name, param in model.named_parameters() if param.device.type == "meta"]
    with torch.no_grad():
        output = model(**batch)
    torch.testing.assert_close(output.pooler_output, reference.pooler_output)
    torch.testing.assert_close(output.fusion_weights, reference.fusion_weights)


def test_load_checkpoint_and_dispatch_recipe_offloading_to_disk(saved_base, tmp_path):
    folder, batch, reference = saved_base
    config = MetaEmbedConfig.from_pretrained(folder)
    with init_empty_weights():
        sizes, _ = transformers_module_sizes(MetaEmbedModel(config))
    t5, esm = sizes["backbone_0"], sizes["backbone_1"]
    assert t5 < esm
    # room for the first backbone plus an execution buffer as large as the largest one: the second goes to disk, whole
    budget = t5 + esm + 256
    # the README's recipe with offloading, verbatim but for the tiny memory budget
    with init_empty_weights():
        model = MetaEmbedModel(config)
    model = load_checkpoint_and_dispatch(
        model,
        folder,
        device_map="auto",
        no_split_module_classes=model._no_split_modules,
        max_memory={"cpu": budget},
        offload_folder=str(tmp_path / "offload"),
    )
    assert _backbone_devices(model.hf_device_map, "", 2) == ["cpu", "disk"]
    assert os.listdir(tmp_path / "offload")  # the offloaded backbone's weights were written there
    with torch.no_grad():
        output = model(**batch)
    torch.testing.assert_close(output.pooler_output, reference.pooler_output)


def test_a_t5_backbone_offloaded_to_disk_loads_with_from_pretrained(saved_base, tmp_path):
    """accelerate's own offload index holds only the checkpoint's keys, so a backbone with tied weights (T5) on disk
    needs transformers' loading, which offloads the tied copy too (the README says so)."""
    folder, batch, reference = saved_base
    device_map = {"backbone_0": "disk", "backbone_1": "cpu", "reader": "cpu", "fusion": "cpu"}
    device_map |= {"unit_encoder": "cpu", "pairing": "cpu"}
    model = MetaEmbedModel.from_pretrained(folder, device_map=device_map, offload_folder=tmp_path)
    assert {param.device.type for param in model.backbone_0.parameters()} == {"meta"}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).pooler_output, reference.pooler_output)
