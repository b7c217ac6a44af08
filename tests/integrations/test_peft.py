"""LoRA on MetaEmbed models: target modules per backbone family, training, adapter save/reload, merging."""

import re

import pytest
import torch
from peft import PeftModel, get_peft_model

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed._utils import metaembed_of
from hf_metaembed.integrations.peft import lora_config, lora_modules_to_save, lora_target_modules
from hf_metaembed.modeling.backbones import load_backbone
from hf_metaembed.modeling.static_vectors import StaticVectorsConfig, StaticVectorsModel

# leaf module paths each family's LoRA targets end with (written out independently of the helper)
EXPECTED_SUFFIXES = {
    "bert": (".attention.self.query", ".attention.self.value"),
    "esm": (".attention.self.query", ".attention.self.value"),
    "t5": (".SelfAttention.q", ".SelfAttention.v"),
}


@pytest.fixture(scope="module")
def folders(tiny_bert, tiny_esm, tiny_prott5, tiny_ankh):
    return {"bert": tiny_bert, "esm": tiny_esm, "prott5": tiny_prott5, "ankh": tiny_ankh}


@pytest.fixture(scope="module")
def protein_batch(folders):
    processor = MetaEmbedProcessor.from_backbones([folders["esm"], folders["prott5"]])
    batch = processor(["MKTAYIAK", "GSHMLV", "ACDEFGHIKL", "MVLSPADK"])
    labels = torch.tensor([0.5, -1.0, 2.0, 1.0])
    return batch, labels


def _matched(model: torch.nn.Module, pattern: str) -> set[str]:
    return {name for name, module in model.named_modules() if re.fullmatch(pattern, name)}


def _expected(model: torch.nn.Module, families: dict[int, str], prefix: str) -> set[str]:
    expected = set()
    for name, module in model.named_modules():
        for index, family in families.items():
            start = f"{prefix}backbone_{index}."
            if name.startswith(start) and name.endswith(EXPECTED_SUFFIXES[family]):
                assert isinstance(module, torch.nn.Linear)
                expected.add(name)
    return expected


def test_targets_cover_every_family(folders):
    model = MetaEmbedForSequenceClassification.from_backbones(
        [folders["bert"], folders["esm"], folders["prott5"], folders["ankh"]],
        unit_types=["word", "residue", "residue", "residue"],
        level="sequence",
        num_labels=2,
    )
    targets = lora_target_modules(model)
    families = {0: "bert", 1: "esm", 2: "t5", 3: "t5"}
    expected = _expected(model, families, "metaembed.")
    # 2 layers x 2 projections per backbone
    assert len(expected) == 16
    assert _matched(model, targets.target_modules) == expected
    # mean token poolers hold no weights, so only fusion and head train in full
    assert targets.modules_to_save == ["metaembed.fusion", "classifier"]


def test_targets_for_chosen_backbones_and_base_model(folders):
    backbones = [folders["esm"], folders["prott5"]]
    base = MetaEmbedModel.from_backbones(backbones)
    head = MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=1)
    only_t5 = lora_target_modules(base, backbones=[1])
    assert _matched(base, only_t5.target_modules) == _expected(base, {1: "t5"}, "")
    # the same regex finds the same layers under the head's `metaembed.` prefix
    assert {name.removeprefix("metaembed.") for name in _matched(head, only_t5.target_modules)} == _matched(
        base, only_t5.target_modules
    )
    assert only_t5.modules_to_save == ["fusion"]
    assert lora_target_modules(head).modules_to_save == ["metaembed.fusion", "classifier"]
    with pytest.raises(ValueError, match="out of range"):
        lora_target_modules(base, backbones=[2])


def test_targets_are_read_off_the_unwrapped_model_only(folders):
    head = MetaEmbedForSequenceClassification.from_backbones([folders["esm"]], num_labels=1)
    wrapped = get_peft_model(head, lora_config(head, r=2))
    with pytest.raises(TypeError, match="pass the model before wrapping it with peft"):
        lora_target_modules(wrapped)
    with pytest.raises(TypeError, match="expected a MetaEmbed model .* got Linear"):
        lora_modules_to_save(torch.nn.Linear(2, 2))
    # the cache and the command line look through the wrapper to the same inner model
    assert metaembed_of(wrapped) is metaembed_of(head) is head.metaembed


def test_modules_to_save_lists_every_trained_block(folders):
    model = MetaEmbedForSequenceClassification.from_backbones(
        [folders["esm"], folders["prott5"]], layers=["mix", "last"], pooling="attention", num_labels=3
    )
    names = lora_modules_to_save(model)
    assert "metaembed.reader.layer_mixes.0" in names and "metaembed.fusion" in names and "classifier" in names
    assert "metaembed.pairing" in names  # attention pooling has weights
    assert not any("backbone" in name for name in names)
    # every parameter outside the backbones is covered by one of the names
    outside = {n for n, _ in model.named_parameters() if not n.startswith("metaembed.backbone_")}
    assert all(any(n.startswith(name + ".") for name in names) for n in outside)


def test_static_vector_backbones_get_no_adapter(folders):
    table = StaticVectorsModel(StaticVectorsConfig(vocab_size=10, hidden_size=16))
    bert = load_backbone(folders["bert"])
    model = MetaEmbedModel.from_backbones([table, bert], unit_types=["word", "word"])
    targets = lora_target_modules(model)
    assert _matched(model, targets.target_modules) == _expected(model, {1: "bert"}, "")
    with pytest.raises(ValueError, match="no layers LoRA can adapt"):
        lora_target_modules(model, backbones=[0])


def test_lora_trains_saves_reloads_and_merges(folders, protein_batch, tmp_path):
    batch, labels = protein_batch
    backbones = [folders["esm"], folders["prott5"]]
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=1, problem_type="regression")
    model.save_pretrained(tmp_path / "base")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "backbone_" in n}

    peft_model = get_peft_model(model, lora_config(model, r=4, lora_alpha=8))
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("modules_to_save" in n for n in trainable)
    assert not any("backbone_" in n and "lora_" not in n for n in trainable)
    optimizer = torch.optim.AdamW(trainable.values(), lr=0.05)
    peft_model.train()
    assert not peft_model.base_model.model.metaembed.backbone_0.training  # frozen backbones stay in eval mode
    losses = []
    for _ in range(8):
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        # lora_B starts at zero, so lora_A only gets a gradient once B moved: check from the second step on
        if losses:
            # (the softmax gate's score bias is shared by all backbones, so softmax cancels its gradient)
            stuck = [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
            assert [n for n in stuck if not n.endswith("scorer.bias")] == []
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    lora_b = [p for n, p in trainable.items() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # adapters inside the frozen backbones learned
    for name, param in peft_model.base_model.model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name])  # base backbone weights never changed

    peft_model.eval()
    with torch.no_grad():
        trained = peft_model(**batch).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    fresh = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "base")
    with torch.no_grad():
        untrained = fresh(**batch).logits
    assert not torch.allclose(untrained, trained, atol=1e-4)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained)

    merged = reloaded.merge_and_unload()
    assert type(merged) is MetaEmbedForSequenceClassification
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, trained, rtol=1e-4, atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    again = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, trained, rtol=1e-4, atol=1e-5)
