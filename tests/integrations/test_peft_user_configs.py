"""PEFT configs written as the peft docs show: the fusion and head either train or a one-time warning says exactly
what to add; following it (or `lora_config`) trains and saves them."""

import ast
import re
import warnings

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.peft import lora_config, lora_modules_to_save
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset

TEXTS = ["a good film", "a bad film", "truly good acting", "bad and boring"] * 2
LABELS = [1, 0, 1, 0] * 2


@pytest.fixture(scope="module")
def backbones(tiny_bert, tiny_roberta):
    return [tiny_bert, tiny_roberta]


def _model(backbones):
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(backbones, num_labels=2)


def _train_steps(model, backbones, tmp_path, steps: int = 2):
    processor = MetaEmbedProcessor.from_backbones(backbones)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=0.05,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
    )
    dataset = MetaEmbedDataset(processor, TEXTS, labels=LABELS)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=MetaEmbedDataCollator(processor)).train()


def _fusion_weights(peft_model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in peft_model.named_parameters() if ".fusion." in name}


def _assert_fusion_trains_without_warning(peft_model, backbones, tmp_path) -> None:
    before = _fusion_weights(peft_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        peft_model.train()
    _train_steps(peft_model, backbones, tmp_path)
    after = _fusion_weights(peft_model)
    assert any(not torch.equal(before[name], after[name]) for name in before if name in after)


@pytest.mark.parametrize(
    ("task_type", "frozen"),
    [("SEQ_CLS", ["metaembed.fusion"]), (None, ["metaembed.fusion", "classifier"])],
)
def test_a_docs_style_config_warns_once_with_what_to_add(backbones, tmp_path, task_type, frozen):
    model = _model(backbones)
    peft_model = get_peft_model(model, LoraConfig(target_modules=["query", "value"], task_type=task_type))
    with pytest.warns(UserWarning, match="left these MetaEmbed blocks frozen") as caught:
        _train_steps(peft_model, backbones, tmp_path)
    messages = [str(w.message) for w in caught if "MetaEmbed blocks frozen" in str(w.message)]
    assert len(messages) == 1  # Trainer puts the model in training mode at every step: one warning
    assert f"frozen at their initial weights: {', '.join(frozen)}." in messages[0]
    advice = ast.literal_eval(re.search(r"modules_to_save=(\[.*?\])", messages[0]).group(1))
    assert advice == lora_modules_to_save(_model(backbones))

    # following the advice: the same LoRA targets, plus the named modules, and no warning
    model = _model(backbones)
    config = LoraConfig(target_modules=["query", "value"], task_type=task_type, modules_to_save=advice)
    peft_model = get_peft_model(model, config)
    _assert_fusion_trains_without_warning(peft_model, backbones, tmp_path)

    # the adapter holds the trained fusion and head: a fresh base with it computes what the trained model does
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(_model(backbones), tmp_path / "adapter").eval()
    processor = MetaEmbedProcessor.from_backbones(backbones)
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**processor(TEXTS)).logits, peft_model(**processor(TEXTS)).logits)


def test_lora_config_stays_the_one_line_way(backbones, tmp_path):
    model = _model(backbones)
    peft_model = get_peft_model(model, lora_config(model, r=2))
    _assert_fusion_trains_without_warning(peft_model, backbones, tmp_path)


def test_no_adapters_no_warning(backbones):
    model = _model(backbones)
    model.metaembed.fusion.requires_grad_(False)  # a user's own choice, without peft
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.train()
